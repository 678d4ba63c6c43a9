"""Wiring only: the public server around a Runtime; no decisions here.

The public listener is aiohttp's low-level `web.Server`, not an `Application`:
every request goes to the one pipeline handler anyway, and the router's
resolve step (a catch-all dynamic route) cost about a tenth of the gateway's
own CPU per request in the benchmark. The admin listener, which has real
routes, stays an Application.

Two things the connection layer does for the faithful data path (SPEC 7.1):
request bodies are never decoded (`auto_decompress=False`: a decoded body
under the client's own Content-Length desynchronizes the pooled upstream
connection, and inflating a bomb stalls the loop), and a connection that has
not sent a whole request head within `client_header_timeout` is closed
(slowloris).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from .pipeline import make_handler
from .runtime import Runtime

# A Cookie header carrying several apps' cookies outgrows aiohttp's 8 KiB default; larger
# header lines are refused by aiohttp's parser with 400 before any handler runs.
MAX_HEADER_LINE = 16 * 1024
_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 24\r\n\r\nRequest header too slow\n"
)


class _Connection(RequestHandler):
    """aiohttp's per-connection protocol, plus a deadline for each request head.

    The deadline starts when the connection opens, and again when the first byte of
    a later request arrives on a kept-alive connection; a parsed head clears it. Idle
    keep-alive connections between requests stay under aiohttp's keepalive_timeout.
    """

    def __init__(self, manager: web.Server, runtime: Runtime, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._runtime = runtime
        self._head_deadline: asyncio.TimerHandle | None = None
        self._got_bytes = False
        # requests handled to the end; `_request_count` counts the heads parsed, so while
        # it is ahead a request is queued or running and incoming bytes are its body
        self._handled = 0
        handler = self._request_handler
        assert handler is not None  # noqa: S101 - set by RequestHandler from the manager

        async def counted(request: web.BaseRequest) -> web.StreamResponse:
            try:
                return await handler(request)
            finally:
                self._handled += 1

        self._request_handler = counted

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self._disarm()  # a whole head arrived
        elif data and self._idle and self._head_deadline is None:
            self._arm()  # the start of a head on a kept-alive connection
        if data:
            self._got_bytes = True

    @property
    def _idle(self) -> bool:
        return self._request_count == self._handled

    def _arm(self) -> None:
        timeout = self._runtime.snapshot.config.client_header_timeout
        self._got_bytes = False
        self._head_deadline = self._loop.call_later(timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if not self._idle:
            return  # a head did arrive: the request is queued or being handled
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._got_bytes:
            transport.write(_TIMED_OUT)  # a client mid-head learns why; an idle one does not
        self.force_close()
        transport.close()


class _Server(web.Server):
    def __init__(self, runtime: Runtime, **kwargs: Any) -> None:
        super().__init__(make_handler(runtime), **kwargs)
        self._runtime = runtime
        self._connection_kwargs = kwargs

    def __call__(self) -> RequestHandler:
        return _Connection(self, self._runtime, loop=self._loop, **self._connection_kwargs)


def create_server(runtime: Runtime) -> web.Server:
    """Bodies are streamed by the proxy, so no whole-body size limit applies."""
    return _Server(runtime, max_field_size=MAX_HEADER_LINE, access_log=None, auto_decompress=False)
