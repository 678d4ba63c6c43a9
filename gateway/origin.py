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

import logging
import time

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


def host_rewritten(request: Asking) -> str | None:
    """The browser's own host when a proxy on the way rewrote `Host`, else None.

    The browser says the request is same-origin (`Sec-Fetch-Site`, which no page can set)
    while its `Origin` names another host than the one the gateway received: the site is
    the same, so `Host` changed between the browser and the gateway.
    """
    if request.headers.get("Sec-Fetch-Site", "").lower() != "same-origin":
        return None
    origin = request.headers.get(hdrs.ORIGIN, "")
    try:
        host = (URL(origin.strip()).host or "").lower().rstrip(".")
    except ValueError:
        return None
    if host and host != _host_only(request.headers.get(hdrs.HOST, "")):
        return host
    return None


_log = logging.getLogger("gateway.security")
_last_logged = [0.0]


def log_refusal(request: Asking, what: str, *, every: float = 0.0) -> str | None:
    """One warning naming what did not match; returns the browser's host when the cause is
    a proxy that rewrote `Host` (then an error: every such sign-in fails). `every`: at most
    one line per that many seconds (refusals on protected routes can come in floods)."""
    now = time.monotonic()
    if every and now - _last_logged[0] < every:
        return host_rewritten(request)
    _last_logged[0] = now
    origin = request.headers.get(hdrs.ORIGIN) or request.headers.get(hdrs.REFERER) or ""
    rewritten = host_rewritten(request)
    fields = {
        "event": "cross_site",
        "origin": origin[:200],
        "host": request.headers.get(hdrs.HOST, "")[:200],
    }
    if rewritten:
        _log.error(
            f"{what} refused: a proxy in front of the gateway rewrote Host (the browser used"
            f" {rewritten}); forward the browser's Host (nginx: proxy_set_header Host $host)",
            extra={**fields, "why": "host_rewritten"},
        )
    else:
        _log.warning(
            f"{what} refused as cross-site: its Origin is not the Host it was sent to",
            extra={**fields, "why": "foreign_origin"},
        )
    return rewritten


def _host_only(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.partition(":")[0].rstrip(".")
