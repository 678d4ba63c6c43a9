"""The request path, top to bottom.

request id -> normalize path -> the gateway's own pages (login, logout) ->
match route -> cross-site check -> identify -> revocation check and refresh
(one store round trip) -> decide (pass / redirect / 401 / 403) -> strip and
set headers -> stream upstream and back -> one access log line. Everything a
request does is readable here.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import hdrs, web
from yarl import URL

from . import admission, forward_auth, login, logs, metrics, pages, proxy, responses
from .auth import Identity, bearer_token, is_ours
from .clientaddr import client_address, forwarded_proto
from .decision import authorize, route_of
from .errors import BadPath
from .login import HOST_REWRITTEN
from .oidc import routes as oidc_routes
from .oidc.http import ProviderUnavailable
from .origin import log_refusal
from .paths import normalize
from .runtime import Runtime, Snapshot
from .store import StoreUnavailable, StoreUnconfirmed
from .tokens import Principal
from .view import RequestView

_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
# Generated ids: a random per-process prefix and a counter. Unique across processes
# and restarts, without a getrandom() syscall per request as uuid4() would make.
_ID_PREFIX = secrets.token_hex(8)
_id_counter = itertools.count(1)


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def make_handler(
    runtime: Runtime, done: Callable[[web.BaseRequest], None] | None = None
) -> Handler:
    """`done` hears of each request's end (the connection layer's header deadline)."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        snapshot = runtime.snapshot  # read once: a reload mid-request cannot change this request
        started = time.perf_counter()
        incoming_id = request.headers.get("X-Request-Id")
        request_id = (
            incoming_id
            if incoming_id and _SANE_REQUEST_ID.match(incoming_id)
            else f"{_ID_PREFIX}{next(_id_counter):016x}"
        )
        outcome = _Outcome()
        logs.REQUEST_ID.set(request_id)  # on every log line this request causes
        pages.CURRENT.set(snapshot.pages)  # every page it answers, in this config's style
        try:
            response = await _handle(request, runtime, snapshot, request_id, outcome)
            if hdrs.UPGRADE in request.headers and not response.prepared:
                # aiohttp's parser reads no further request after one asking to upgrade
                response.force_close()
            return response
        except ProviderUnavailable as exc:
            # a provider session's rotation could not ask its provider: 503, nobody signed out
            _provider_down(str(exc))
            outcome.decision = "provider_unavailable"
            return _own(responses.service_unavailable(request), request_id, outcome)
        except StoreUnconfirmed:
            # a logout no replica has yet: not acknowledged, since a failover could undo it
            _store_log.warning("logout not confirmed by a replica: answering 503")
            outcome.decision = "store_unconfirmed"
            return _own(responses.not_confirmed(request), request_id, outcome)
        except StoreUnavailable as exc:
            # fail closed: without the store no revocation can be checked, so nothing passes
            _store_down(str(exc))
            outcome.decision = "store_unavailable"
            return _own(responses.service_unavailable(request), request_id, outcome)
        except ConnectionError:
            # the client went away mid-request (a body cut short): nobody to answer
            outcome.decision = "client_closed"
            return _own(
                responses.bad_request(request, "the connection was lost"), request_id, outcome
            )
        except Exception:
            # a fault of ours: logged with this request's id, never a 500 or a traceback
            _log.exception("internal error: answering 502")
            outcome.decision = "internal_error"
            return _own(responses.bad_gateway(request), request_id, outcome)
        finally:
            duration = time.perf_counter() - started
            logs.access(
                request_id=request_id,
                method=request.method,
                path=outcome.path or request.path,
                status=outcome.status,
                duration=duration,
                user=outcome.user,
                route=outcome.route,
                decision=outcome.decision,
                upstream_status=outcome.upstream_status,
                client=outcome.client or client_address(request, snapshot.config.trusted_proxies),
            )
            metrics.request_done(
                outcome.route or "(gateway)", outcome.decision, outcome.status, duration
            )
            logs.REQUEST_ID.set(None)
            if done is not None:
                done(request)

    return handle


class _Outcome:
    """What the access log line needs, filled in as the request goes."""

    __slots__ = ("client", "decision", "path", "route", "status", "upstream_status", "user")

    def __init__(self) -> None:
        self.client = ""
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
    malformed = admission.malformed(request)
    if malformed is not None:
        outcome.decision = "bad_request"
        return _own(responses.bad_request(request, malformed), request_id, outcome)
    raw_path, _, query = request.raw_path.partition("?")
    try:
        path = normalize(raw_path)
    except BadPath as exc:
        outcome.decision = "bad_path"
        return _own(responses.bad_request(request, str(exc)), request_id, outcome)
    outcome.path = path
    if config.forward_auth is not None and path == config.forward_auth.path:
        # the outer proxy's subrequest: the same decision, answered for the proxy to apply
        answer, verdict, described = await forward_auth.answer(request, snapshot)
        outcome.decision = verdict.decision if verdict else "forward_auth_refused"
        if verdict is not None and described is not None:
            outcome.route = verdict.route.label
            outcome.client = described.client
            if verdict.identity.principal is not None:
                outcome.user = verdict.identity.principal.subject
        return _own(answer, request_id, outcome)
    websocket = hdrs.UPGRADE in request.headers and admission.is_websocket(request)
    if websocket:
        refusal = admission.bad_handshake(request)
        if refusal is not None:  # answered before any auth or upstream work
            outcome.decision = "bad_websocket"
            return _own(refusal, request_id, outcome)

    if path in snapshot.reserved_paths:
        if snapshot.oidc is not None and path in snapshot.oidc.paths:
            page = await oidc_routes.handle(request, snapshot, path)
        else:
            page = await login.handle(request, snapshot, runtime.client, path)
        outcome.decision, outcome.user = page.decision, page.user
        return _own(page.response, request_id, outcome)

    if snapshot.upstream_base is None:  # forward_auth alone: nothing here to proxy to
        outcome.decision = "no_upstream"
        return _own(responses.not_found(request), request_id, outcome)
    proxies = config.trusted_proxies
    view = RequestView(
        method=request.method,
        raw_path=raw_path,
        path=path,
        query=query,
        host=request.headers.get(hdrs.HOST, ""),
        # without trusted proxies (the default) both are the connection's own
        scheme=forwarded_proto(request, proxies) if proxies else request.scheme,
        client=client_address(request, proxies) if proxies else request.remote or "",
        headers=request.headers,
        websocket=websocket,
    )
    outcome.client = view.client
    route = route_of(view, snapshot)
    outcome.route = route.label  # also when the store fails below
    verdict = await authorize(view, snapshot, route)
    decision, identity, set_cookies = verdict.decision, verdict.identity, verdict.set_cookies
    outcome.route, outcome.decision = verdict.route.label, decision
    if identity.principal is not None:
        outcome.user = identity.principal.subject

    if decision == "cross_site":
        rewritten = log_refusal(request, f"{request.method} {path}", every=10)
        why = HOST_REWRITTEN.format(browser=rewritten, gateway=view.host) if rewritten else None
        return _own(responses.cross_site(request, why), request_id, outcome, set_cookies)
    if decision == "deny":
        return _own(responses.forbidden(request), request_id, outcome, set_cookies)
    if decision == "forbidden":
        who = _who(identity, snapshot, view)
        return _own(responses.forbidden(request, who), request_id, outcome, set_cookies)
    if decision == "redirect":
        denial = responses.redirect_to_login(config.login.path, view.target)
        return _own(denial, request_id, outcome, set_cookies)
    if decision == "unauthorized":
        denial = responses.unauthorized(config.login.path, token_failed=identity.presented)
        return _own(denial, request_id, outcome, set_cookies)

    if hdrs.EXPECT in request.headers and not await proxy.continue_if_expected(request):
        outcome.decision = "bad_expect"
        return _own(responses.expectation_failed(request), request_id, outcome, set_cookies)
    headers = proxy.upstream_headers(
        request,
        request_id=request_id,
        principal=identity.principal,
        identity_headers=config.identity_headers,
        identity_names=snapshot.identity_names,
        cookie_names=snapshot.cookie_names,
        drop_authorization=hdrs.AUTHORIZATION in request.headers and _our_bearer(request, snapshot),
        client=view.client,
        preserve_host=config.preserve_host,
        proto=view.scheme,
    )
    if snapshot.asserter is not None and identity.principal is not None:
        assertion = snapshot.asserter.sign(identity.principal, request.method, path, time.time())
        headers.append((snapshot.asserter.header, assertion))
    target = snapshot.upstream_base + view.target
    # parsed once per URL while it stays in use, but for long ones (the cache stays small)
    url = _parsed_url(target) if len(target) <= 512 else URL(target, encoded=True)
    extra: proxy.Headers = [("X-Request-Id", request_id)]
    if set_cookies:
        # a response carrying session cookies must never sit in a shared cache
        extra += [*set_cookies, (hdrs.CACHE_CONTROL, "no-store")]
    response: web.StreamResponse
    if websocket:
        ended = None
        if identity.principal is not None:
            ended = _session_ended(snapshot, identity.principal)
        response, upstream_status = await proxy.forward_websocket(
            request, runtime.ws_client, url, headers, snapshot.upstream_timeout, extra, ended
        )
    else:
        response, upstream_status = await proxy.forward(
            request,
            runtime.client,
            url,
            headers,
            snapshot.upstream_timeout,
            extra_headers=extra,
            close=hdrs.UPGRADE in request.headers,  # h2c and the like: never switched to
        )
    outcome.upstream_status = upstream_status or None
    outcome.status = response.status
    if not response.prepared and "X-Request-Id" not in response.headers:
        # a 502/504 made by the proxy itself; a rotation that just happened must still
        # reach the browser, or its next refresh would present the spent token
        return _own(response, request_id, outcome, set_cookies)
    return response


def _own(
    response: web.StreamResponse,
    request_id: str,
    outcome: _Outcome,
    set_cookies: Sequence[tuple[str, str]] = (),
) -> web.StreamResponse:
    """A response the gateway makes itself (no upstream involved)."""
    response.headers["X-Request-Id"] = request_id
    for name, value in set_cookies:
        response.headers.add(name, value)
    outcome.status = response.status
    return response


def _who(identity: Identity, snapshot: Snapshot, view: RequestView) -> pages.Who | None:
    """A signed-in user refused for a role: offered to sign out or in as someone else."""
    if identity.principal is None:
        return None
    signs_in = snapshot.login_page is not None  # a password form or a provider
    login = snapshot.config.login
    return pages.Who(
        user=identity.principal.subject,
        # a bearer token cannot be signed out of by a form
        logout_path=login.logout_path if signs_in and not identity.bearer else None,
        login_path=login.path if signs_in else None,
        next_path=view.target,
    )


@functools.lru_cache(maxsize=1024)
def _parsed_url(target: str) -> URL:
    """Parsing costs more than the cache's lookup, and the same paths come again and
    again; a URL object is immutable, so sharing one is safe."""
    return URL(target, encoded=True)


def _our_bearer(request: web.BaseRequest, snapshot: Snapshot) -> bool:
    """A bearer token of ours is never forwarded, valid, expired or revoked, whether or not
    it was the credential decided on (a cookie wins over it): an app that checks the token
    itself must never see one of a revoked session."""
    if hdrs.AUTHORIZATION not in request.headers:
        return False
    token = bearer_token(request)
    return token is not None and is_ours(snapshot.verifier, token)


async def _session_ended(snapshot: Snapshot, principal: Principal) -> None:
    """Returns once the WebSocket's session is logged out or revoked, or the store is down."""
    while True:
        await asyncio.sleep(snapshot.ws_recheck)
        try:
            if await snapshot.sessions.revoked(principal):
                return
        except StoreUnavailable:
            return  # fail closed: a revocation during the outage cannot be seen


_log = logging.getLogger("gateway.pipeline")
_store_log = logging.getLogger("gateway.store")
_last_store_error = 0.0


def _provider_down(why: str) -> None:
    """At most one line per 5 s, like the store's."""
    global _last_provider_error
    now = time.monotonic()
    if now - _last_provider_error >= 5:
        _last_provider_error = now
        _log.error(
            "OpenID provider unavailable during a refresh: answering 503",
            extra={"event": "oidc_unavailable", "error": why},
        )


_last_provider_error = 0.0


def _store_down(why: str) -> None:
    """One event line per 5 s at most: an outage must not flood the log."""
    global _last_store_error
    now = time.monotonic()
    if now - _last_store_error >= 5:
        _last_store_error = now
        _store_log.error("store unavailable: answering 503", extra={"error": why})
