"""One pipelined Redis connection for the command on the request path.

Every request with a session costs one MGET. Through redis-py that call costs
75-110 µs of client CPU (pool lock, event hooks, nested timeouts, retry
wrappers), several times Redis's own work and enough to halve the gateway's
throughput (docs/performance.md). Here a command is one write and one future:
many are in flight on one connection, replies come back in order and are
parsed by hiredis, the parser redis-py itself uses. Everything else (the Lua
scripts, the admin commands) still goes through redis-py.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import hiredis
from yarl import URL


class WireError(ConnectionError):
    """The connection failed, or Redis answered with an error."""


class ReplyError(WireError):
    """Redis answered with an error (MOVED, LOADING, ...): the connection itself is fine."""


Locate = Callable[[], Awaitable[tuple[str, int]]]


def encode(args: tuple[str | bytes, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self._reader = hiredis.Reader(encoding="utf-8", errors="replace")
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                future = self._waiting.popleft()
                if future.done():  # its caller timed out or was cancelled
                    continue
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(ReplyError(str(reply)))
                else:
                    future.set_result(reply)
        except (hiredis.ProtocolError, IndexError):
            self.abort()  # out of step with the server: start over on a new connection

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(WireError("connection lost"))

    def send(self, args: tuple[str | bytes, ...]) -> asyncio.Future[Any]:
        return self.send_many([args])[0]

    def send_many(self, commands: Sequence[tuple[str | bytes, ...]]) -> list[asyncio.Future[Any]]:
        """Several commands in one write: one system call however many there are."""
        if self.closed or self._transport is None:
            raise WireError("not connected")
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Any]] = [loop.create_future() for _ in commands]
        self._waiting.extend(futures)
        self._transport.write(b"".join(encode(args) for args in commands))
        return futures

    def abort(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.abort()


class PipelinedConnection:
    """Connects on first use and again after any failure; AUTH and SELECT as the URL says.

    Behind Sentinel, `locate` asks the sentinels for the primary at every connect (so a
    failover is followed at the first error after it) and `primary_only` checks ROLE
    before the first command: a demoted primary still answers reads, with stale data.
    """

    def __init__(
        self,
        url: URL,
        password: str | None,
        *,
        locate: Locate | None = None,
        primary_only: bool = False,
    ) -> None:
        self._host = url.host or "127.0.0.1"
        self._port = url.port or 6379
        self._locate = locate
        self._primary_only = primary_only
        self._db = (url.path or "/").strip("/") or "0"
        self._username = url.user
        self._password = password
        self._ssl = ssl.create_default_context() if url.scheme == "rediss" else None
        self._protocol: _Protocol | None = None
        self._lock = asyncio.Lock()

    async def execute(self, *args: str | bytes) -> Any:
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        return await protocol.send(args)

    async def mget(self, keys: list[str]) -> list[str | None]:
        values: list[str | None] = await self.execute("MGET", *keys)
        return values

    async def execute_many(self, commands: Sequence[tuple[str | bytes, ...]]) -> list[Any]:
        """The replies of several commands, sent in one write (a cluster node's MGETs)."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        return list(await asyncio.gather(*protocol.send_many(commands)))

    async def _connect(self) -> _Protocol:
        async with self._lock:
            if self._protocol is not None and not self._protocol.closed:
                return self._protocol
            loop = asyncio.get_running_loop()
            host, port = await self._locate() if self._locate else (self._host, self._port)
            _, protocol = await loop.create_connection(_Protocol, host, port, ssl=self._ssl)
            try:
                if self._password is not None:
                    credentials = [self._username] if self._username else []
                    await protocol.send(("AUTH", *credentials, self._password))
                if self._db != "0":
                    await protocol.send(("SELECT", self._db))
                if self._primary_only and (await protocol.send(("ROLE",)))[0] != "master":
                    raise WireError("not the primary (a failover under way)")
            except BaseException:
                protocol.abort()
                raise
            self._protocol = protocol
            return protocol

    def reset(self) -> None:
        """Drop the connection: after a timeout, a fresh one tells whether Redis is back."""
        if self._protocol is not None:
            self._protocol.abort()
            self._protocol = None
