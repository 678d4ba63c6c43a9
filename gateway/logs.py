"""JSON lines on stdout: one access record per request, and events.

Fields are chosen by the caller from a fixed list; nothing here ever formats
a header, cookie or body, so a token cannot reach a log line by accident.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from contextvars import ContextVar
from typing import Any

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
"""The request being handled: set by the pipeline, read by every log line it causes."""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": REQUEST_ID.get(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            # the type only: a traceback can carry local values, and those can be secrets
            entry["error"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str, separators=(",", ":"))


class LineSink:
    """Whole lines to a file descriptor, in writes of at most PIPE_BUF bytes.

    With `workers: N` several processes share one stdout pipe. A write of up to
    PIPE_BUF bytes to a pipe is atomic, so lines never interleave mid-line, which
    a plain buffered stream (flushing 8 KiB wherever it ends) cannot promise.
    Lines are ASCII (every string is JSON-escaped), so characters are bytes.
    """

    LIMIT = 4096  # PIPE_BUF on Linux

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._parts: list[str] = []
        self._size = 0

    def write(self, line: str) -> None:
        if self._size + len(line) > self.LIMIT:
            self.flush()
        self._parts.append(line)
        self._size += len(line)

    def flush(self) -> None:
        if not self._parts:
            return
        data = memoryview("".join(self._parts).encode("ascii", "backslashreplace"))
        self._parts.clear()
        self._size = 0
        while data:
            data = data[os.write(self._fd, data) :]


class _SinkHandler(logging.Handler):
    """Event records through the same sink as access lines, so the order of lines holds."""

    def __init__(self, sink: LineSink) -> None:
        super().__init__()
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._sink.write(self.format(record) + "\n")
            self._sink.flush()  # events are rare and matter: never left in a buffer
        except Exception:  # logging must never take the request down
            self.handleError(record)


_access_sink: LineSink | None = None
_q = json.encoder.encode_basestring_ascii  # a JSON string literal, escaped, quotes included
_second: tuple[int, str] = (0, "")
_millisecond: tuple[int, str] = (-1, "")


def set_level(name: str) -> None:
    """`log_level` from the config; a reload may change it."""
    logging.getLogger().setLevel(name.upper())


def setup(level: int = logging.INFO) -> None:
    global _access_sink
    sys.stdout.flush()
    _access_sink = LineSink(sys.stdout.fileno())
    handler = _SinkHandler(_access_sink)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's own access log would duplicate ours, in another format
    logging.getLogger("aiohttp.access").disabled = True


def flush() -> None:
    """Access lines are written without a flush each (a syscall per request); this flushes them."""
    if _access_sink is not None:
        _access_sink.flush()


def _iso(moment: float) -> str:
    """ISO time with milliseconds; the formatted second, and the whole text within one
    millisecond (several requests under load), are reused while they last."""
    global _second, _millisecond
    ms = int(moment * 1000)
    if _millisecond[0] == ms:
        return _millisecond[1]
    whole = ms // 1000
    if _second[0] != whole:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    text = f"{_second[1]}.{ms % 1000:03d}Z"
    _millisecond = (ms, text)
    return text


def access(
    *,
    request_id: str,
    method: str,
    path: str,
    status: int,
    duration: float,
    user: str | None,
    route: str,
    decision: str,
    upstream_status: int | None,
    client: str = "",
) -> None:
    """One JSON line per request, straight to the buffered stdout, bypassing `logging`.

    The request path pays for every microsecond here; `logging` would build a record,
    look up the caller and flush per line. Same stream as the event records, so the
    order of lines is kept; `flush()` runs on a timer and at shutdown.
    """
    if _access_sink is None:
        return
    # Assembled by hand: the same JSON as json.dumps gives, at a fraction of its cost.
    # Every string goes through the encoder's escaping; numbers are formatted directly.
    upstream = "null" if upstream_status is None else str(upstream_status)
    known = _QUOTED.get  # a C call per value: even a Python function call costs more
    _access_sink.write(
        f'{{"time":"{_iso(time.time())}","level":"info","logger":"gateway.access",'
        f'"msg":"request","request_id":{_q(request_id)},'
        f'"client":{known(client) or _quoted(client)},'
        f'"method":{known(method) or _quoted(method)},'
        f'"path":{known(path) or _quoted(path)},"status":{status},'
        f'"duration_ms":{duration * 1000:.3f},'
        f'"user":{"null" if user is None else known(user) or _quoted(user)},'
        f'"route":{known(route) or _quoted(route)},'
        f'"decision":{known(decision) or _quoted(decision)},"upstream_status":{upstream}}}\n'
    )


_QUOTED: dict[str, str] = {}


def _quoted(value: str) -> str:
    """`_q`, remembered for the values that repeat from line to line (method, path,
    client, user, route, decision), which `access` looks up first. Bounded, since a client
    chooses some of them: at most 4096 values of up to 64 characters (a few MiB at worst,
    escapes included); past the bound, and for longer values, they are escaped each time,
    as before the memo."""
    quoted = _q(value)
    if len(value) <= 64 and len(_QUOTED) < 4096:
        _QUOTED[value] = quoted
    return quoted
