"""`workers: N`: one supervisor process and N workers sharing the public port.

Python runs one request at a time per process, so using both cores of a
machine takes two processes. Each worker binds the public port with
SO_REUSEPORT and the kernel spreads connections among them. The supervisor
serves nothing public: it holds the admin listener (health, readiness, the
metrics of every worker added up, JWKS, session administration), watches the
config files, decides reloads and signals them to the workers, restarts a
worker that dies, and on SIGTERM drains them all.

Every worker starts from the exact config text the supervisor validated and
runs, written to a private directory, so a worker restarted after an edit
that was refused does not quietly run something its siblings do not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import multiprocess

from . import metrics
from .config import Config, Listen
from .observability import admin_runner
from .reload import Reloader
from .runtime import Lifetime, Runtime

log = logging.getLogger("gateway.supervisor")

WORKER_ENV = "GATEWAY_WORKER"
_QUICK_EXIT = 10.0  # a worker that dies sooner than this after starting backs off longer


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """What a worker process learns from its supervisor, through WORKER_ENV."""

    number: int
    port: int  # the supervisor resolved `listen` (port 0 included) once for all
    parent: int
    directory: Path

    @property
    def ready_file(self) -> Path:
        return self.directory / f"ready-{os.getpid()}"

    @property
    def config_file(self) -> Path:
        return self.directory / "config.yaml"


def worker_role() -> WorkerRole | None:
    raw = os.environ.get(WORKER_ENV)
    if not raw:
        return None
    data = json.loads(raw)
    return WorkerRole(data["number"], data["port"], data["parent"], Path(data["directory"]))


async def supervise(config: Config) -> None:
    with (
        _reserve(config.listen) as reservation,  # first: a taken port leaves nothing behind
        tempfile.TemporaryDirectory(prefix="gateway-", ignore_cleanup_errors=True) as name,
    ):
        directory = Path(name)
        metrics_directory = directory / "metrics"
        metrics_directory.mkdir()
        runtime = Runtime(config)
        runtime.workers_directory = str(metrics_directory)
        pool = WorkerPool(config, reservation.getsockname()[1], directory, metrics_directory)
        runtime.workers_ready = pool.all_ready
        _write_config(directory, config.text)

        def applied(new: Config) -> None:
            _write_config(directory, new.text)
            pool.signal(signal.SIGHUP)

        reloader = Reloader(runtime, applied=applied)
        async with Lifetime(runtime, reloader.reload, log) as life:
            admin = config.admin_listen
            await life.listen(admin_runner(runtime), admin.host, admin.port)
            pool.start(life)
            # on every way out, with the drain timeout of that moment
            life.on_exit(lambda: pool.stop(runtime.snapshot.config.drain_timeout + 5))
            life.spawn(reloader.watch())
            log.info(
                "supervising workers",
                extra={
                    "workers": config.workers,
                    "listen": str(config.listen),
                    "admin_listen": str(config.admin_listen),
                    "config": str(config.source),
                },
            )
            drain = await life.until_stopped()
            log.info("stopping: workers drain", extra={"drain_timeout": drain})


class WorkerPool:
    def __init__(self, config: Config, port: int, directory: Path, metrics_directory: Path) -> None:
        self._count = config.workers
        self._source = config.source
        self._port = port
        self._directory = directory
        self._metrics_directory = metrics_directory
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = False

    def start(self, life: Lifetime) -> None:
        for number in range(1, self._count + 1):
            life.spawn(self._keep(number))

    def all_ready(self) -> bool:
        return len(self._procs) == self._count and all(
            (self._directory / f"ready-{proc.pid}").exists() for proc in self._procs.values()
        )

    def signal(self, sig: int) -> None:
        for proc in self._procs.values():
            if proc.returncode is None:
                proc.send_signal(sig)

    async def stop(self, timeout: float) -> None:
        self._stopping = True
        self.signal(signal.SIGTERM)
        waiting = [proc.wait() for proc in self._procs.values()]
        try:
            await asyncio.wait_for(asyncio.gather(*waiting), timeout)
        except TimeoutError:
            log.error("workers did not stop in time: killing them")
            self.signal(signal.SIGKILL)

    async def _keep(self, number: int) -> None:
        """Run worker `number`, and again whenever it dies, until the pool stops."""
        loop = asyncio.get_running_loop()
        quick_exits = 0
        role = {
            "number": number,
            "port": self._port,
            "parent": os.getpid(),
            "directory": str(self._directory),
        }
        env = {
            **os.environ,
            WORKER_ENV: json.dumps(role),
            metrics.MULTIPROCESS_ENV: str(self._metrics_directory),
        }
        while not self._stopping:
            started = loop.time()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway", "serve", "--config", str(self._source), env=env
            )
            self._procs[number] = proc
            metrics.WORKERS.set(len(self._procs))
            code = await proc.wait()
            del self._procs[number]
            metrics.WORKERS.set(len(self._procs))
            (self._directory / f"ready-{proc.pid}").unlink(missing_ok=True)
            multiprocess.mark_process_dead(proc.pid, str(self._metrics_directory))  # type: ignore[no-untyped-call]
            if self._stopping:
                return
            quick_exits = quick_exits + 1 if loop.time() - started < _QUICK_EXIT else 0
            delay = min(30.0, 0.5 * 2**quick_exits)
            log.error(
                "worker exited: restarting it",
                extra={"event": "worker_exit", "worker": number, "code": code, "restart_in": delay},
            )
            await asyncio.sleep(delay)


def _reserve(listen: Listen) -> socket.socket:
    """Bind the public address once, without listening: a taken port fails here, at start,
    not in a worker restart loop; port 0 gets one number for all; and a bound socket that
    never listens receives no connections of the SO_REUSEPORT group."""
    info = socket.getaddrinfo(listen.host, listen.port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(info[0], socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(info[4])
    except OSError:
        sock.close()
        raise
    return sock


def _write_config(directory: Path, text: str) -> None:
    """Atomically: a worker starting right now reads the old text or the new, never half."""
    partial = directory / "config.yaml.partial"
    partial.write_text(text, encoding="utf-8")
    partial.replace(directory / "config.yaml")
