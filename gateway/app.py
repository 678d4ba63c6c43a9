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
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler

from .pipeline import make_handler
from .runtime import Runtime

# A Cookie header carrying several apps' cookies outgrows aiohttp's 8 KiB default; larger
# header lines are refused by aiohttp's parser with 400 before any handler runs.
MAX_HEADER_LINE = 16 * 1024
# An idle kept-alive connection between two requests is closed after this, as nginx does
# (aiohttp's own default is an hour). Longer than the usual load balancer's 60 s, so the
# balancer, not the gateway, closes a pooled connection first.
KEEPALIVE_TIMEOUT = 75.0
_log = logging.getLogger("gateway.http")
_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 24\r\n\r\nRequest header too slow\n"
)


class _Connection(RequestHandler):
    """aiohttp's per-connection protocol, plus a deadline for each request head.

    The deadline starts when the connection opens, and again when the first byte of
    a later request arrives on a kept-alive connection; a parsed head clears it. Bytes of
    a next head that arrive while a request is still running (pipelined: after its body
    ended, or behind a bodiless head in the same packet) start it when that request
    ends. Idle keep-alive connections between requests are under KEEPALIVE_TIMEOUT.
    """

    def __init__(self, manager: web.Server, runtime: Runtime, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._runtime = runtime
        self._head_deadline: asyncio.TimerHandle | None = None
        self._got_bytes = False
        self._body: StreamReader = EMPTY_PAYLOAD  # of the request parsed last
        self._next_head_started = False  # bytes of another head arrived during a request
        # requests handled to the end; `_request_count` counts the heads parsed, so while
        # it is ahead a request is queued or running and incoming bytes are its body
        self._handled = 0

    def request_done(self) -> None:
        """Called by the pipeline as each request of this connection ends."""
        self._handled += 1
        if self._next_head_started and self._idle and self._head_deadline is None:
            self._arm()
            self._got_bytes = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        idle = before == self._handled
        body_done = not idle and self._body.is_eof()
        super().data_received(data)
        if self._request_count != before:
            if self._head_deadline is not None:
                self._disarm()  # a whole head arrived
            self._body = self._messages[-1][1] if self._messages else EMPTY_PAYLOAD
            # a bodiless head, then more bytes in the same packet: the next head began
            self._next_head_started = self._body is EMPTY_PAYLOAD and not data.endswith(b"\r\n\r\n")
        elif not data:
            return
        elif idle:
            if self._head_deadline is None:
                self._arm()  # the start of a head on a kept-alive connection
            self._got_bytes = True
        elif body_done and not self._upgraded:
            self._next_head_started = True  # the running request's body had ended

    @property
    def _idle(self) -> bool:
        return self._request_count == self._handled

    def _arm(self) -> None:
        timeout = self._runtime.snapshot.config.client_header_timeout
        self._got_bytes = False
        self._next_head_started = False
        self._head_deadline = self._loop.call_later(timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        """A request aiohttp's parser refused is the client's mistake, answered 400: one line,
        no traceback, and not the parser's message, which quotes the offending header line
        (a cookie, a token) byte for byte."""
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            _log.warning(
                "malformed request refused",
                extra={"error": type(exc).__name__, "status": exc.code, "client": self.peer},
            )
            return
        super().log_exception(*args, **kwargs)

    @property
    def peer(self) -> str | None:
        transport = self.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        return str(peer[0]) if isinstance(peer, tuple) and peer else None

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


def _request_done(request: web.BaseRequest) -> None:
    """`_Connection.request_done`, its common case written out: a call saved per request."""
    connection = request.protocol
    if isinstance(connection, _Connection):
        if connection._next_head_started:
            connection.request_done()
        else:
            connection._handled += 1


class _Server(web.Server):
    def __init__(self, runtime: Runtime, **kwargs: Any) -> None:
        super().__init__(make_handler(runtime, _request_done), **kwargs)
        self._runtime = runtime
        self._connection_kwargs = kwargs

    def __call__(self) -> RequestHandler:
        return _Connection(self, self._runtime, loop=self._loop, **self._connection_kwargs)


def create_server(runtime: Runtime) -> web.Server:
    """Bodies are streamed by the proxy, so no whole-body size limit applies."""
    return _Server(runtime, max_field_size=MAX_HEADER_LINE, access_log=None, auto_decompress=False)
