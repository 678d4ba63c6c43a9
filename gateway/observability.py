"""The admin listener: health, readiness and session administration.

Kept on a separate aiohttp app bound to `admin_listen`, so no route table,
typo or upstream path can ever expose it on the public port. The session
endpoints (what `gateway revoke` and `gateway sessions` call when the store is
memory://, which lives inside this process) answer loopback peers only: in a
pod the admin port is often open to the cluster for probes, and listing who
is signed in from where is not for the cluster to see.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

from . import metrics
from .oidc.links import listed
from .runtime import RUNTIME, Runtime
from .sessions import security
from .store import StoreUnavailable, StoreUnconfirmed

log = logging.getLogger("gateway.admin")


async def healthz(request: web.Request) -> web.Response:
    """The process runs and its loop answers; what a liveness probe needs, nothing more."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """A valid config is loaded, the upstream client is open and the store answers."""
    runtime = request.app[RUNTIME]
    if runtime.draining:
        return web.json_response({"status": "draining"}, status=503)
    starting = not runtime.has_client
    if runtime.workers_ready is not None:  # a supervisor: ready when every worker is
        starting = not runtime.workers_ready()
    if starting:
        return web.json_response({"status": "starting"}, status=503)
    try:
        warning = await runtime.store.ping()
    except StoreUnavailable:
        return web.json_response({"status": "store unavailable"}, status=503)
    body: dict[str, object] = {"status": "ready"}
    if warning:  # still ready: requests are served, but a failover now would lose writes
        body["warning"] = warning
    oidc = runtime.snapshot.oidc
    if oidc is not None and (down := oidc.unreachable()):
        # still ready: password sign-in and existing sessions work; only that sign-in waits
        body["providers_unreachable"] = down
    return web.json_response(body)


async def metrics_text(request: web.Request) -> web.Response:
    body, content_type = metrics.exposition(request.app[RUNTIME].workers_directory)
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type  # carries its own version parameter
    return response


async def jwks(request: web.Request) -> web.Response:
    """The identity assertion's public keys, for upstreams that verify instead of trusting."""
    asserter = request.app[RUNTIME].snapshot.asserter
    if asserter is None:
        raise web.HTTPNotFound(text="identity_assertion is not configured\n")
    return web.json_response(asserter.jwks, headers={"Cache-Control": "max-age=300"})


def _loopback_only(request: web.Request) -> None:
    try:
        loopback = ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise web.HTTPForbidden(text="session administration answers loopback clients only\n")


def _user(request: web.Request) -> str:
    user = request.query.get("user", "")
    if not user:
        raise web.HTTPBadRequest(text="?user=NAME is required\n")
    return user


def _not_from_a_page(request: web.Request) -> None:
    """State changes come from the CLI, never from a browser page.

    A page can send a "simple" cross-site POST (text/plain, no preflight) to a loopback
    port; it cannot send application/json without a preflight we never answer, and the
    browser marks its requests with Origin or Sec-Fetch-Site.
    """
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text="Content-Type: application/json is required\n")
    if hdrs.ORIGIN in request.headers or request.headers.get("Sec-Fetch-Site", "none") != "none":
        raise web.HTTPForbidden(text="session administration is not for browser pages\n")


def host_allowed(host: str) -> bool:
    """An IP literal or localhost, with or without a port: a DNS-rebinding page's requests
    carry its own domain name in Host, and are refused."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else ""
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if name == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@web.middleware
async def _known_host(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if not host_allowed(request.headers.get(hdrs.HOST, "")):
        return web.Response(status=403, text="the admin listener answers IP or localhost only\n")
    return await handler(request)


async def list_sessions(request: web.Request) -> web.Response:
    _loopback_only(request)
    store = request.app[RUNTIME].store
    sessions = await store.sessions(_user(request))
    return web.json_response({"sessions": await listed(store, sessions)})


async def revoke(request: web.Request) -> web.Response:
    _loopback_only(request)
    _not_from_a_page(request)
    user = _user(request)
    ended = await request.app[RUNTIME].snapshot.sessions.revoke_user(user)
    # here, not in Sessions: `gateway revoke` on Redis calls that too, and reports on its own
    metrics.REVOCATIONS.inc()
    security.warning(
        "user revoked: every session ended",
        extra={"event": "revoke", "user": user, "sessions": ended},
    )
    return web.json_response({"revoked_sessions": ended})


@web.middleware
async def _store_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except StoreUnconfirmed:
        error = "written on the primary but not yet confirmed by a replica: retry to confirm"
        return web.json_response({"error": error}, status=503, headers={"Retry-After": "1"})
    except StoreUnavailable:
        return web.json_response({"error": "store unavailable"}, status=503)
    except web.HTTPException:
        raise
    except Exception:
        # never a 500 or a traceback in an answer; the log has it
        log.exception("admin endpoint failed: answering 503")
        return web.json_response({"error": "internal error"}, status=503)


def create_admin_app(runtime: Runtime) -> web.Application:
    app = web.Application(middlewares=[_known_host, _store_errors])
    app[RUNTIME] = runtime
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_text)
    app.router.add_get("/.well-known/jwks.json", jwks)
    app.router.add_get("/sessions", list_sessions)
    app.router.add_post("/sessions/revoke", revoke)
    return app


def admin_runner(runtime: Runtime) -> web.AppRunner:
    """The admin app's runner, for the process that holds the admin listener."""
    return web.AppRunner(create_admin_app(runtime), access_log=None, shutdown_timeout=1.0)
