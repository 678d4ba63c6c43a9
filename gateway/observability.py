"""The admin listener: /healthz and /readyz, never reachable through the public one.

Kept on a separate aiohttp app bound to `admin_listen`, so no route table,
typo or upstream path can ever expose it on the public port.
"""

from __future__ import annotations

from aiohttp import web

from .runtime import RUNTIME, Runtime


async def healthz(request: web.Request) -> web.Response:
    """The process runs and its loop answers; what a liveness probe needs, nothing more."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """A valid config is loaded and the upstream client is open; a store check joins later."""
    runtime = request.app[RUNTIME]
    ready = runtime.has_client
    return web.json_response(
        {"status": "ready" if ready else "starting"}, status=200 if ready else 503
    )


def create_admin_app(runtime: Runtime) -> web.Application:
    app = web.Application()
    app[RUNTIME] = runtime
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
