"""The request path, top to bottom.

request id -> normalize path -> match route -> identify -> decide
(pass / redirect / 401 / 403) -> strip and set headers -> stream upstream and
back -> one access log line. Everything a request does is readable here.
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from yarl import URL

from . import logs, proxy, responses
from .auth import NOBODY, Decision, decide, identify
from .errors import BadPath
from .paths import normalize
from .runtime import Runtime, Snapshot

_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
# Generated ids: a random per-process prefix and a counter. Unique across processes
# and restarts, without a getrandom() syscall per request as uuid4() would make.
_ID_PREFIX = secrets.token_hex(8)
_id_counter = itertools.count(1)


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def make_handler(runtime: Runtime) -> Handler:
    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        snapshot = runtime.snapshot  # read once: a reload mid-request cannot change this request
        started = time.perf_counter()
        incoming_id = request.headers.get("X-Request-Id", "")
        request_id = (
            incoming_id
            if _SANE_REQUEST_ID.match(incoming_id)
            else f"{_ID_PREFIX}{next(_id_counter):016x}"
        )
        outcome = _Outcome()
        try:
            return await _handle(request, runtime, snapshot, request_id, outcome)
        finally:
            logs.access(
                request_id=request_id,
                method=request.method,
                path=outcome.path or request.path,
                status=outcome.status,
                duration=time.perf_counter() - started,
                user=outcome.user,
                route=outcome.route,
                decision=outcome.decision,
                upstream_status=outcome.upstream_status,
            )

    return handle


class _Outcome:
    """What the access log line needs, filled in as the request goes."""

    __slots__ = ("decision", "path", "route", "status", "upstream_status", "user")

    def __init__(self) -> None:
        self.path = ""
        self.route = ""
        self.decision = "error"
        self.user: str | None = None
        self.status = 0
        self.upstream_status: int | None = None


async def _handle(
    request: web.BaseRequest,
    runtime: Runtime,
    snapshot: Snapshot,
    request_id: str,
    outcome: _Outcome,
) -> web.StreamResponse:
    config = snapshot.config
    raw_path, _, query = request.raw_path.partition("?")
    try:
        path = normalize(raw_path)
    except BadPath as exc:
        outcome.decision = "bad_path"
        return _own(responses.bad_request(request, str(exc)), request_id, outcome)
    outcome.path = path

    if path in snapshot.reserved_paths:
        # /login and /logout belong to the gateway; the session endpoints slot in here.
        outcome.decision = "reserved"
        return _own(responses.not_found(request), request_id, outcome)

    route = config.routes.match(request.method, path)
    outcome.route = route.label
    identity = NOBODY
    if route.auth in ("required", "optional"):
        identity = identify(request, snapshot.verifier, config.cookies.access)
    decision: Decision = decide(route, identity)
    if decision == "unauthorized" and (
        route.on_unauthenticated == "redirect"
        or (route.on_unauthenticated == "auto" and responses.wants_html(request))
    ):
        decision = "redirect"
    outcome.decision = decision
    if identity.principal is not None:
        outcome.user = identity.principal.subject

    if decision in ("deny", "forbidden"):
        return _own(responses.forbidden(request), request_id, outcome)
    if decision == "redirect":
        target = path + ("?" + query if query else "")
        return _own(responses.redirect_to_login(config.login.path, target), request_id, outcome)
    if decision == "unauthorized":
        denial = responses.unauthorized(config.login.path, token_failed=identity.presented)
        return _own(denial, request_id, outcome)

    if not await proxy.continue_if_expected(request):
        outcome.decision = "bad_expect"
        return _own(responses.expectation_failed(request), request_id, outcome)
    headers = proxy.upstream_headers(
        request,
        request_id=request_id,
        principal=identity.principal,
        identity_headers=config.identity_headers,
        identity_names=snapshot.identity_names,
        cookie_names=snapshot.cookie_names,
        drop_authorization=identity.bearer and identity.principal is not None,
    )
    url = URL(snapshot.upstream_base + path + ("?" + query if query else ""), encoded=True)
    response: web.StreamResponse
    if _is_websocket(request):
        response, upstream_status = await proxy.forward_websocket(
            request, runtime.client, url, headers, snapshot.upstream_timeout
        )
    else:
        response, upstream_status = await proxy.forward(
            request,
            runtime.client,
            url,
            headers,
            snapshot.upstream_timeout,
            extra_headers=[("X-Request-Id", request_id)],
        )
    outcome.upstream_status = upstream_status or None
    outcome.status = response.status
    if not response.prepared and "X-Request-Id" not in response.headers:
        response.headers["X-Request-Id"] = request_id  # 502/504 made by the proxy itself
    return response


def _own(response: web.Response, request_id: str, outcome: _Outcome) -> web.Response:
    """A response the gateway makes itself (no upstream involved)."""
    response.headers["X-Request-Id"] = request_id
    outcome.status = response.status
    return response


def _is_websocket(request: web.BaseRequest) -> bool:
    return (
        request.method == "GET"
        and request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
        and "upgrade" in proxy.connection_tokens(request.headers)
    )
