"""A recording TCP relay between the gateway and an upstream, and a strict request parser.

The relay forwards bytes both ways unchanged and keeps, per upstream
connection, exactly what went to the upstream. `parse_requests` reads such a
recording as a strict HTTP/1.1 server would: it accepts only unambiguous
framing (one Content-Length, or `Transfer-Encoding: chunked` alone) and
raises on anything left over, so a request that leaves bytes on a pooled
connection, or takes bytes from the next one, cannot go unnoticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field
from typing import Literal

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/1\.1")
_HEADER_LINE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})\r\n")

Framing = Literal["none", "length", "chunked"]


class WireError(ValueError):
    """The bytes on an upstream connection are not a clean sequence of requests."""


@dataclass(frozen=True, slots=True)
class WireRequest:
    """One request as it crossed the wire to the upstream."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes  # the message body, chunked framing removed (never decompressed)
    framing: Framing
    declared_length: int | None  # Content-Length, when that framed the body

    def values(self, name: str) -> list[str]:
        lname = name.lower()
        return [value for key, value in self.headers if key.lower() == lname]

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]


def parse_requests(data: bytes) -> list[WireRequest]:
    """Every request in `data`, which must end exactly at the end of the last one."""
    requests: list[WireRequest] = []
    offset = 0
    while offset < len(data):
        request, offset = _parse_one(data, offset, len(requests))
        requests.append(request)
    return requests


def _parse_one(data: bytes, offset: int, index: int) -> tuple[WireRequest, int]:
    where = f"request #{index + 1} at byte {offset}"
    end = data.find(b"\r\n\r\n", offset)
    if end < 0:
        raise WireError(f"{where}: incomplete head, {len(data) - offset} bytes left over: "
                        f"{data[offset : offset + 120]!r}")  # fmt: skip
    head = data[offset:end]
    if b"\n" in head.replace(b"\r\n", b"") or b"\r" in head.replace(b"\r\n", b""):
        raise WireError(f"{where}: a bare CR or LF in the head: {head[:200]!r}")
    line, *raw_headers = head.split(b"\r\n")
    matched = _REQUEST_LINE.fullmatch(line)
    if matched is None:
        raise WireError(f"{where}: not a strict HTTP/1.1 request line: {line[:200]!r}")
    headers: list[tuple[str, str]] = []
    for raw in raw_headers:
        header = _HEADER_LINE.fullmatch(raw)
        if header is None:
            raise WireError(f"{where}: malformed header line {raw[:200]!r}")
        headers.append((header.group(1).decode("ascii"), header.group(2).decode("latin-1")))
    lengths = [v for k, v in headers if k.lower() == "content-length"]
    encodings = [v for k, v in headers if k.lower() == "transfer-encoding"]
    position = end + 4
    framing: Framing = "none"
    declared: int | None = None
    if encodings:
        if lengths:
            raise WireError(f"{where}: both Transfer-Encoding and Content-Length")
        if len(encodings) != 1 or encodings[0].strip().lower() != "chunked":
            raise WireError(f"{where}: Transfer-Encoding other than one 'chunked': {encodings}")
        body, position = _dechunk(data, position, where)
        framing = "chunked"
    elif lengths:
        if len(lengths) != 1 or not lengths[0].isdigit():
            raise WireError(f"{where}: ambiguous Content-Length {lengths}")
        declared = int(lengths[0])
        body = data[position : position + declared]
        if len(body) != declared:
            raise WireError(
                f"{where}: Content-Length {declared} but only {len(body)} body bytes followed"
            )
        position += declared
        framing = "length"
    else:
        body = b""
    method, target = matched.group(1).decode("ascii"), matched.group(2).decode("ascii")
    return WireRequest(method, target, tuple(headers), body, framing, declared), position


def _dechunk(data: bytes, position: int, where: str) -> tuple[bytes, int]:
    body = bytearray()
    while True:
        size_line = _CHUNK_SIZE.match(data, position)
        if size_line is None:
            raise WireError(f"{where}: bad or missing chunk size at byte {position}: "
                            f"{data[position : position + 40]!r}")  # fmt: skip
        size = int(size_line.group(1), 16)
        position = size_line.end()
        if size == 0:
            break
        chunk = data[position : position + size]
        if len(chunk) != size or data[position + size : position + size + 2] != b"\r\n":
            raise WireError(f"{where}: chunk of {size} bytes is cut short")
        body += chunk
        position += size + 2
    # trailer section: header lines, then an empty line
    while True:
        eol = data.find(b"\r\n", position)
        if eol < 0:
            raise WireError(f"{where}: chunked body without its final CRLF")
        line = data[position:eol]
        position = eol + 2
        if not line:
            return bytes(body), position
        if _HEADER_LINE.fullmatch(line) is None:
            raise WireError(f"{where}: malformed trailer {line[:200]!r}")


# -- the relay ---------------------------------------------------------------------------


@dataclass(slots=True)
class Recording:
    """One connection from the gateway: what went to the upstream, what came back."""

    sent: bytearray = field(default_factory=bytearray)
    received: bytearray = field(default_factory=bytearray)


class Relay:
    """Loopback TCP relay in front of one upstream port.

    `inject`, for the harness's self-test only: bytes the relay adds once per
    connection right after the gateway's first write, as a desynchronised
    pooled connection would deliver them. They are recorded as sent, because
    the upstream receives them.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.connections: list[Recording] = []
        self.inject: bytes | None = None
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._relay(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        recording = Recording()
        self.connections.append(recording)
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            await _close(writer)
            self._writers.discard(writer)
            return
        self._writers.add(up_writer)
        inject = self.inject

        async def to_upstream() -> None:
            nonlocal inject
            while data := await reader.read(65536):
                recording.sent += data
                up_writer.write(data)
                if inject is not None:
                    recording.sent += inject
                    up_writer.write(inject)
                    inject = None
                await up_writer.drain()

        async def to_gateway() -> None:
            while data := await up_reader.read(65536):
                recording.received += data
                writer.write(data)
                await writer.drain()

        pumps = [asyncio.create_task(to_upstream()), asyncio.create_task(to_gateway())]
        try:
            # either side ending ends the connection: a relay adds no framing of its own
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for side in (writer, up_writer):
                await _close(side)
                self._writers.discard(side)

    async def reset(self) -> list[Recording]:
        """Close every connection (both sides), wait for that, and hand back the recordings."""
        for _ in range(10):  # a connection accepted meanwhile is closed on the next round
            if not self._tasks:
                break
            for writer in list(self._writers):
                writer.close()
            await asyncio.wait(list(self._tasks), timeout=5)
        recordings, self.connections = self.connections, []
        return recordings

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self.reset()
        if self._server is not None:
            await self._server.wait_closed()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
