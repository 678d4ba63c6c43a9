"""Set-Cookie values for the two session cookies, set and cleared with the same attributes.

Built by hand rather than through http.cookies: the values are JWTs (URL-safe
base64 and dots, nothing to quote), and a clearing cookie must repeat the
exact Path, Domain and flags of the one it clears or the browser keeps both.
"""

from __future__ import annotations

from .config import CookiesConfig


def _cookie(config: CookiesConfig, name: str, value: str, max_age: int) -> str:
    parts = [f"{name}={value}", f"Max-Age={max_age}", f"Path={config.path}"]
    if config.domain:
        parts.append(f"Domain={config.domain}")
    parts.append("HttpOnly")
    if config.secure:
        parts.append("Secure")
    parts.append(f"SameSite={config.same_site.capitalize()}")
    return "; ".join(parts)


def session_cookies(
    config: CookiesConfig,
    access: str,
    access_ttl: float,
    refresh: str | None,
    refresh_ttl: float,
) -> list[tuple[str, str]]:
    """Set-Cookie headers, Max-Age equal to each token's lifetime."""
    headers = [("Set-Cookie", _cookie(config, config.access, access, int(access_ttl)))]
    if refresh is not None:
        headers.append(("Set-Cookie", _cookie(config, config.refresh, refresh, int(refresh_ttl))))
    return headers


def clearing_cookies(config: CookiesConfig) -> list[tuple[str, str]]:
    return [
        ("Set-Cookie", _cookie(config, config.access, "", 0)),
        ("Set-Cookie", _cookie(config, config.refresh, "", 0)),
    ]
