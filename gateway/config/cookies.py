"""cookies: the two session cookies the gateway sets, reads and clears."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from ..yamlsource import Section
from .declare import HTTP_NAME, build, key

SameSite = Literal["lax", "strict", "none"]
TOKEN_CHARS = re.compile(HTTP_NAME)  # an HTTP token: what a cookie or header name may be


@dataclass(frozen=True, slots=True, kw_only=True)
class CookiesConfig:
    access: str = field(
        default="access_token", metadata=key("Name of the access-token cookie.", pattern=HTTP_NAME)
    )
    refresh: str = field(
        default="refresh_token",
        metadata=key("Name of the refresh-token cookie; differs from access.", pattern=HTTP_NAME),
    )
    secure: bool = field(
        default=True,
        metadata=key(
            "Send the cookies over HTTPS only; false for plain-http local development only."
        ),
    )
    same_site: SameSite = field(
        default="lax", metadata=key("SameSite attribute; none needs secure: true.")
    )
    path: str = field(default="/", metadata=key("Path attribute; starts with /.", pattern="^/"))
    domain: str | None = field(
        default=None, metadata=key("Domain attribute; leave out for host-only cookies.")
    )


def read_cookies(sec: Section) -> CookiesConfig:
    result = build(sec, CookiesConfig)
    for name in ("access", "refresh"):
        if not TOKEN_CHARS.match(getattr(result, name)):
            sec.error(name, f"{getattr(result, name)!r} is not a valid cookie name")
    if result.access == result.refresh:
        sec.error("refresh", "must differ from cookies.access")
    if result.same_site == "none" and not result.secure:
        sec.error("same_site", "same_site: none needs secure: true (browsers drop it otherwise)")
    if not result.path.startswith("/"):
        sec.error("path", "expected a path starting with '/'")
    for name in ("access", "refresh"):
        # browsers silently drop a prefixed cookie whose attributes break the prefix's rules
        value = getattr(result, name)
        if value.startswith(("__Host-", "__Secure-")) and not result.secure:
            sec.error(name, f"a {value.split('-')[0]}- cookie needs secure: true")
        if value.startswith("__Host-") and (result.path != "/" or result.domain):
            sec.error(name, "a __Host- cookie needs path: / and no domain")
    sec.finish()
    return result
