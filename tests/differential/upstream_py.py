"""Upstream for the differential tests: Python's http.server, as a small app server would use it.

usage: python upstream_py.py PORT LOG_FILE

HTTP/1.1 with keep-alive. Reads the whole body (Content-Length, or chunked) before
answering 200, then appends one JSON line per request to LOG_FILE: method, the raw
request-target, the path as http.server parsed it, every header and the number of
body bytes read.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    log_file = ""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):  # every method, known or not, is served the same way
            return self._serve
        raise AttributeError(name)

    def _read_body(self) -> tuple[int, bool]:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            total = 0
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    return total, False
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return total, True
                data = self.rfile.read(size)
                total += len(data)
                if len(data) < size or self.rfile.read(2) != b"\r\n":
                    return total, False
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        return len(data), len(data) == length

    def _serve(self) -> None:
        try:
            read, complete = self._read_body()
        except ValueError:
            self.send_error(400)
            return
        entry = {
            "method": self.command,
            "target": self.requestline.split(" ")[1] if " " in self.requestline else "",
            "url": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body_bytes": read,
            "complete": complete,
        }
        with _lock, open(self.log_file, "a", encoding="utf-8") as sink:
            sink.write(json.dumps(entry) + "\n")
        if not complete:
            self.close_connection = True
            return
        body = b"python ok\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Upstream", "python")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    port, Handler.log_file = int(sys.argv[1]), sys.argv[2]
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
