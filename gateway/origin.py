"""Cross-site request refusal for cookie-authenticated state changes (SPEC 4).

SameSite=Lax already keeps the cookies off most cross-site POSTs; this is the
second lock, for older browsers and same-site-but-hostile subdomains. The
site is judged from `Origin`, else `Referer`, else `Sec-Fetch-Site`. A
request carrying none of them is not a browser's cross-site request (browsers
send Origin on every cross-site POST) and passes. "Our site" is the request's
own Host, or any host inside `cookies.domain` when one is set, since those
hosts share the cookies anyway. Scheme and port are not compared: behind a
TLS-terminating proxy the gateway cannot see the scheme the browser used.
"""

from __future__ import annotations

from aiohttp import hdrs
from yarl import URL

from .view import Asking

SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))


def cross_site(request: Asking, cookie_domain: str | None) -> bool:
    source = request.headers.get(hdrs.ORIGIN) or request.headers.get(hdrs.REFERER)
    if source is None:
        return request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site"
    if source.strip().lower() == "null":  # sandboxed frames, cross-origin redirects
        return True
    try:
        host = (URL(source.strip()).host or "").lower().rstrip(".")
    except ValueError:
        return True
    own = _host_only(request.headers.get(hdrs.HOST, ""))
    if not host or not own:
        return True
    if host == own:
        return False
    if cookie_domain:
        domain = cookie_domain.lower().lstrip(".").rstrip(".")
        return not (host == domain or host.endswith("." + domain))
    return True


def navigation_allowed(request: Asking, cookie_domain: str | None) -> bool:
    """A GET that changes state (logout): only a same-site or user-typed navigation."""
    fetch_site = request.headers.get("Sec-Fetch-Site", "").lower()
    if fetch_site == "none":  # typed in the address bar or a bookmark
        return True
    return fetch_site != "cross-site" and not cross_site(request, cookie_domain)


def _host_only(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.partition(":")[0].rstrip(".")
