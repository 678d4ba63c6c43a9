"""The forward-auth door: decisions for an outer proxy that carries the traffic (SPEC 7.5).

nginx `auth_request` (and ingress-nginx), Caddy `forward_auth`, Traefik
`ForwardAuth` and Envoy `ext_authz` ask before they forward: a subrequest that
carries the original request's cookies and `Authorization`, and describes it
with exactly one convention, `X-Forwarded-Method/Proto/Host/Uri` or
`X-Original-Method/URL`. The view built from that description goes through the
same `decision.authorize` as the proxy door; only the answer differs: 200 with
the identity headers to copy, 401 (with `Location` for a browser), 403.

Only `trusted_proxies` may ask, since the description is believed as given.
Anything malformed is 403, never another 4xx: nginx turns those into a 500.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence

from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .clientaddr import Network, client_address, is_trusted
from .decision import Verdict, authorize
from .errors import BadPath
from .paths import normalize
from .proxy import encoded_identity
from .responses import redirect_to_login
from .runtime import Snapshot
from .tokens import Principal
from .view import RequestView

SET_ACCESS = "X-Gateway-Set-Cookie-Access"
SET_REFRESH = "X-Gateway-Set-Cookie-Refresh"
# The description of the original request; not among the original request's own headers.
_DESCRIPTION = frozenset(
    h.lower()
    for h in (
        "X-Forwarded-Method", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Uri",
        "X-Original-Method", "X-Original-URL", "X-Original-URI",
    )
)  # fmt: skip
log = logging.getLogger("gateway.forward_auth")


class Refused(Exception):
    """The subrequest cannot be decided on: 403, with a reason for the log."""


async def answer(
    request: web.BaseRequest, snapshot: Snapshot
) -> tuple[web.Response, Verdict | None, RequestView | None]:
    """The outer proxy's answer, and the verdict and view it came from (None when refused
    outright)."""
    config = snapshot.config
    if not is_trusted(request.remote or "", config.trusted_proxies):
        return _refused("the subrequest does not come from trusted_proxies"), None, None
    try:
        view = describe(request, config.trusted_proxies)
    except Refused as exc:
        return _refused(str(exc)), None, None
    verdict = await authorize(view, snapshot)
    decision = verdict.decision
    if verdict.passes:
        response = web.Response(status=200)
        principal = verdict.identity.principal
        # every one always present, empty without identity: the proxy's copy overwrites a
        # client's
        response.headers.extend(_identity_block(principal, config.identity_headers))
        if snapshot.asserter is not None:
            assertion = ""
            if principal is not None:
                assertion = snapshot.asserter.sign(principal, view.method, view.path, _now())
            response.headers[snapshot.asserter.header] = assertion
    elif decision in ("deny", "forbidden", "cross_site"):
        response = _json(403, {"error": "forbidden", "decision": decision})
    elif decision == "redirect" and request.query.get("redirect") == "1":
        response = redirect_to_login(config.login.path, view.target)
    else:
        challenge = 'Bearer error="invalid_token"' if verdict.identity.presented else "Bearer"
        response = _json(401, {"error": "unauthorized", "login": config.login.path})
        response.headers[hdrs.WWW_AUTHENTICATE] = challenge
        if decision == "redirect":
            response.headers[hdrs.LOCATION] = redirect_to_login(
                config.login.path, view.target
            ).headers[hdrs.LOCATION]
    _add_cookies(response, verdict, config.cookies.access, config.cookies.refresh)
    response.headers[hdrs.CACHE_CONTROL] = "no-store"
    return response, verdict, view


def describe(request: web.BaseRequest, proxies: Sequence[Network]) -> RequestView:
    """The original request, as the outer proxy describes it. Raises Refused."""
    headers = request.headers
    forwarded = "X-Forwarded-Uri" in headers
    original = "X-Original-URL" in headers
    if forwarded and original:
        raise Refused("both X-Forwarded-Uri and X-Original-URL: one may be a client's")
    if original:
        method = headers.get("X-Original-Method", "GET")
        try:
            url = URL(headers["X-Original-URL"], encoded=True)
        except ValueError:
            raise Refused("X-Original-URL is not a URL") from None
        if not url.is_absolute():
            raise Refused("X-Original-URL must be absolute (scheme://host/path)")
        host = url.raw_authority
        scheme = url.scheme
        target = url.raw_path_qs
    elif forwarded:
        method = headers.get("X-Forwarded-Method", "GET")
        host = headers.get(hdrs.X_FORWARDED_HOST, "")
        scheme = headers.get(hdrs.X_FORWARDED_PROTO, "http").split(",")[0].strip().lower()
        target = headers.get("X-Forwarded-Uri", "/")
    else:
        raise Refused("no description of the original request (X-Forwarded-* or X-Original-*)")
    for value in (method, host, scheme, target):
        if not value.isascii() or not value.isprintable():
            raise Refused("a control or non-ASCII character in the description")
    raw_path, _, query = target.partition("?")
    try:
        path = normalize(raw_path)
    except BadPath as exc:
        raise Refused(f"the original path: {exc}") from None
    # the original request's own headers, as the outer proxy passed them, with its Host
    seen: CIMultiDict[str] = CIMultiDict(headers)  # a copy in C: cheaper than filtering
    for name in _DESCRIPTION:
        seen.popall(name, None)
    if host:
        seen[hdrs.HOST] = host
    else:
        seen.popall(hdrs.HOST, None)
    return RequestView(
        method=method.upper(),
        raw_path=raw_path,
        path=path,
        query=query,
        host=host,
        scheme=scheme if scheme in ("http", "https") else "http",
        client=client_address(request, proxies),
        headers=CIMultiDictProxy(seen),
        websocket=headers.get(hdrs.UPGRADE, "").lower() == "websocket",
    )


def _identity_block(
    principal: Principal | None, identity_headers: tuple[tuple[str, str], ...]
) -> tuple[tuple[str, str], ...]:
    """Every identity header, empty where there is no value; encoded once per verified
    token (the Principal's memo), since the same session asks again and again."""
    if principal is None:
        return tuple((header, "") for header, _ in identity_headers)
    key = ("forward_auth", identity_headers)
    block: tuple[tuple[str, str], ...] | None = principal.memo.get(key)
    if block is None:
        given = dict(encoded_identity(principal, identity_headers))
        block = principal.memo[key] = tuple(
            (header, given.get(header, "")) for header, _ in identity_headers
        )
    return block


def _refused(why: str) -> web.Response:
    log.warning("forward-auth subrequest refused", extra={"why": why})
    response = _json(403, {"error": "forbidden", "message": why})
    response.headers[hdrs.CACHE_CONTROL] = "no-store"
    return response


def _json(status: int, body: dict[str, str]) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


def _add_cookies(response: web.Response, verdict: Verdict, access: str, refresh: str) -> None:
    """A refresh's new cookies (or clearing ones): as Set-Cookie for proxies that pass them
    all on, and each alone in its own header for nginx's auth_request_set (one per name)."""
    for name, value in verdict.set_cookies:
        response.headers.add(name, value)
        if value.startswith(access + "="):
            response.headers[SET_ACCESS] = value
        elif value.startswith(refresh + "="):
            response.headers[SET_REFRESH] = value


def _now() -> float:
    return time.time()
