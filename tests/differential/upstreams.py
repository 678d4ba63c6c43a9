"""The real upstream servers: nginx, Node's http module, Python's http.server.

Each runs as a child process on a free loopback port and reports, one JSON
line per request, what it executed. `Executed` is that report in one shape
for all three; `paths` holds every reading of the path the server (or an app
on it) may act on.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

HERE = Path(__file__).resolve().parent
NAMES = ("nginx", "node", "python")


def nginx_binary() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
    )


def missing(name: str) -> str | None:
    """Why this upstream cannot run here, or None."""
    if name == "nginx" and nginx_binary() is None:
        return "nginx is not installed (Debian: apt-get install nginx-light)"
    if name == "node" and shutil.which("node") is None:
        return "node is not on PATH (Node.js 18 or later)"
    return None


@dataclass(frozen=True, slots=True)
class Executed:
    """One request as an upstream parsed and executed it."""

    upstream: str
    method: str
    target: str  # the request-target as the server received it (nginx: $request_uri)
    paths: tuple[str, ...]  # decoded once and dot-resolved, as apps on this server see it
    headers: tuple[tuple[str, str], ...]  # all (node, python) or the logged ones (nginx)
    body_bytes: int | None  # None: nginx does not say
    complete: bool
    raw: dict[str, Any]


@dataclass
class Upstream:
    name: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes]
    output: Path
    _offset: int = 0
    _pending: bytes = field(default=b"")

    def new_entries(self) -> list[Executed]:
        """What the server logged since the last call (whole lines only)."""
        with self.log.open("rb") as source:
            source.seek(self._offset)
            data = source.read()
        self._offset += len(data)
        data = self._pending + data
        *lines, self._pending = data.split(b"\n")
        out = []
        for line in lines:
            if line.strip():
                entry = json.loads(line.decode("utf-8", "surrogateescape"))
                executed = _executed(self.name, entry)
                if executed is not None:
                    out.append(executed)
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM if self.name != "nginx" else signal.SIGQUIT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _executed(name: str, entry: dict[str, Any]) -> Executed | None:
    if name == "nginx":
        status = int(entry["status"])
        if 400 <= status < 500 and status != 499:
            return None  # refused by nginx itself (`location /` only says 200): nothing executed
        headers = tuple(
            (key.replace("_", "-"), value)
            for key, value in entry.items()
            if (key.startswith(("x_", "true_", "cf_", "fastly_")) and value)
        )
        length = entry["content_length"]
        return Executed(
            upstream=name,
            method=entry["method"],
            target=entry["request_uri"],
            paths=(entry["uri"],),
            headers=(("Host", entry["host"]), *headers),
            body_bytes=None,
            complete=True,
            raw={**entry, "content_length": int(length) if length else None},
        )
    targets = [entry["url"]] + ([entry["target"]] if entry.get("target") else [])
    return Executed(
        upstream=name,
        method=entry["method"],
        target=entry.get("target") or entry["url"],
        paths=tuple(sorted({p for t in targets for p in app_readings(t)})),
        headers=tuple((k, v) for k, v in entry["headers"]),
        body_bytes=entry["body_bytes"],
        complete=entry["complete"],
        raw=entry,
    )


def app_readings(target: str) -> set[str]:
    """The paths an app behind Node or Python acts on: the target's path decoded once,
    dot segments resolved; with and without merging slashes, and with '\\' as '/'."""
    path = target.partition("?")[0]
    decoded = unquote(path, errors="surrogateescape")
    out = set()
    for variant in (decoded, decoded.replace("\\", "/")):
        out.add(resolve_dots(variant, merge_slashes=False))
        out.add(resolve_dots(variant, merge_slashes=True))
    return out


def resolve_dots(path: str, *, merge_slashes: bool) -> str:
    """RFC 3986 remove_dot_segments; '..' at the root stays at the root (as browsers do)."""
    segments = path.split("/")[1:] if path.startswith("/") else path.split("/")
    out: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        elif segment == ".":
            if last:
                out.append("")
        elif segment or last or not merge_slashes:
            out.append(segment)
    return "/" + "/".join(out)


# -- starting them -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(name: str, directory: Path) -> Upstream:
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = directory / "executed.jsonl"
    log.write_bytes(b"")
    output = directory / "output.txt"
    if name == "nginx":
        binary = nginx_binary()
        assert binary is not None
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (directory / sub).mkdir(exist_ok=True)
        conf = directory / "nginx.conf"
        text = (HERE / "nginx.conf").read_text()
        for key, value in {
            "prefix": str(directory),
            "port": str(port),
            # as root nginx would hand its workers to 'nobody'; keep them ours
            "user": "user root;" if os.geteuid() == 0 else "",
        }.items():
            text = text.replace(f"@{key}@", value)
        conf.write_text(text)
        log = directory / "access.log"
        log.write_bytes(b"")
        command = [
            binary, "-p", str(directory), "-e", str(directory / "error.log"),
            "-c", str(conf), "-g", "daemon off;",
        ]  # fmt: skip
    elif name == "node":
        command = ["node", str(HERE / "upstream_node.js"), str(port), str(log)]
    elif name == "python":
        command = [sys.executable, str(HERE / "upstream_py.py"), str(port), str(log)]
    else:
        raise ValueError(name)
    with output.open("wb") as sink:
        proc = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    upstream = Upstream(name, port, log, proc, output)
    try:
        _wait_listening(upstream)
    except Exception:
        upstream.stop()
        raise
    return upstream


def _wait_listening(upstream: Upstream, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if upstream.proc.poll() is not None:
            raise RuntimeError(
                f"{upstream.name} exited with {upstream.proc.returncode}: "
                + upstream.output.read_text(errors="replace")[-2000:]
            )
        try:
            with socket.create_connection(("127.0.0.1", upstream.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{upstream.name} did not listen on {upstream.port} within {seconds}s")
