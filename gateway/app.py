"""Wiring only: build the public app around a Runtime; no decisions here."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from .config import Config
from .pipeline import handle
from .runtime import RUNTIME, Runtime

# A Cookie header carrying several apps' cookies outgrows aiohttp's 8 KiB default; larger
# header lines are refused by aiohttp's parser with 400 before any handler runs.
MAX_HEADER_LINE = 16 * 1024


def create_app(config: Config, runtime: Runtime | None = None) -> web.Application:
    """Bodies are streamed by the proxy, so aiohttp's whole-body size limit never applies."""
    app = web.Application(handler_args={"max_field_size": MAX_HEADER_LINE})
    app[RUNTIME] = runtime or Runtime(config)
    app.cleanup_ctx.append(_upstream_client)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def _upstream_client(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    runtime.open_client()
    yield
    await runtime.close_client()
