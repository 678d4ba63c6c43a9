"""JSON lines on stdout: one access record per request, and events.

Fields are chosen by the caller from a fixed list; nothing here ever formats
a header, cookie or body, so a token cannot reach a log line by accident.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

access_log = logging.getLogger("gateway.access")
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            # the type only: a traceback can carry local values, and those can be secrets
            entry["error"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str)


def _iso(created: float) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        + f".{int(created % 1 * 1000):03d}Z"
    )


def setup(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's own access log would duplicate ours, in another format
    logging.getLogger("aiohttp.access").disabled = True


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
) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    access_log.info(
        "request",
        extra={
            "request_id": request_id,
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round(duration * 1000, 3),
            "user": user,
            "route": route,
            "decision": decision,
            "upstream_status": upstream_status,
        },
    )
