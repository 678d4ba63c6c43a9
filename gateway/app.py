"""Wiring only: the public server around a Runtime; no decisions here.

The public listener is aiohttp's low-level `web.Server`, not an `Application`:
every request goes to the one pipeline handler anyway, and the router's
resolve step (a catch-all dynamic route) cost about a tenth of the gateway's
own CPU per request in the benchmark. The admin listener, which has real
routes, stays an Application.
"""

from __future__ import annotations

from aiohttp import web

from .pipeline import make_handler
from .runtime import Runtime

# A Cookie header carrying several apps' cookies outgrows aiohttp's 8 KiB default; larger
# header lines are refused by aiohttp's parser with 400 before any handler runs.
MAX_HEADER_LINE = 16 * 1024


def create_server(runtime: Runtime) -> web.Server:
    """Bodies are streamed by the proxy, so no whole-body size limit applies."""
    return web.Server(make_handler(runtime), max_field_size=MAX_HEADER_LINE, access_log=None)
