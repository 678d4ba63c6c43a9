"""One gateway process: the public listener, the admin listener, signals, reload, drain.

SIGTERM/SIGINT: stop accepting, let in-flight requests finish within
`drain_timeout` (read at that moment, so a reload can change it), exit 0.
SIGHUP, or a change to any file the config was built from: reload.

As a worker under a supervisor (`workers: N`), the process binds the public
port with SO_REUSEPORT next to its siblings and has no admin listener and no
file watcher: the supervisor owns those and signals reloads.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import logs
from .app import create_server
from .config import Config, load
from .observability import create_admin_app
from .reload import Reloader
from .runtime import Runtime

if TYPE_CHECKING:
    from .supervisor import WorkerRole

log = logging.getLogger("gateway.server")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed: the proxy spends most of its time in the event loop."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(config: Config, worker: WorkerRole | None = None) -> None:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        if config.workers > 1 and worker is None:
            from .supervisor import supervise

            runner.run(supervise(config))
        else:
            runner.run(serve(config, worker=worker))


class Background:
    """Tasks that live until shutdown; kept referenced so the loop cannot drop them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def handle_signals(reloader: Reloader) -> tuple[asyncio.Event, Background]:
    """SIGTERM/SIGINT set the returned event; SIGHUP reloads in the returned background."""
    stop = asyncio.Event()
    background = Background()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: background.spawn(reloader.reload("SIGHUP")))
    return stop, background


async def serve(
    config: Config,
    ready: Callable[[], Any] | None = None,
    *,
    worker: WorkerRole | None = None,
) -> None:
    runtime = Runtime(config)
    reloader = (
        Reloader(runtime)
        if worker is None
        # a worker: the text its supervisor validated, not what the file holds now
        else Reloader(
            runtime, counted=False, loader=lambda path: load(path, worker.config_file.read_text())
        )
    )
    public = web.ServerRunner(create_server(runtime))
    admin = None
    if worker is None:
        admin = web.AppRunner(create_admin_app(runtime), access_log=None, shutdown_timeout=1.0)
    stop, background = handle_signals(reloader)
    runtime.open_client()
    await public.setup()
    if admin is not None:
        await admin.setup()
    try:
        port = worker.port if worker else config.listen.port
        await web.TCPSite(public, config.listen.host, port, reuse_port=worker is not None).start()
        if admin is not None:
            await web.TCPSite(admin, config.admin_listen.host, config.admin_listen.port).start()
        log.info(
            "listening",
            extra={
                "listen": str(config.listen),
                "admin_listen": None if worker else str(config.admin_listen),
                "upstream": str(config.upstream),
                "config": str(config.source),
                "worker": worker.number if worker else None,
            },
        )
        # Everything allocated so far (config, routes, keys, imported modules) lives as long
        # as the process: keep it out of every future garbage collection pass.
        gc.freeze()
        if worker is None:
            background.spawn(reloader.watch())
        else:
            worker.ready_file.touch()
            background.spawn(_stop_when_orphaned(worker.parent, stop))
        if ready is not None:
            ready()
        background.spawn(flush_logs_every(0.5))
        await stop.wait()
        runtime.draining = True
        drain = runtime.snapshot.config.drain_timeout
        log.info("stopping: draining in-flight requests", extra={"drain_timeout": drain})
        await background.cancel()
        await _drain(public, drain)
    finally:
        await public.cleanup()
        if admin is not None:
            await admin.cleanup()
        await runtime.close()
        log.info("stopped")
        logs.flush()


async def _drain(runner: web.ServerRunner, timeout: float) -> None:
    """Stop accepting, then wait up to `timeout` for running requests; idle keep-alive
    connections close at once. What is still running after that is cut."""
    for site in list(runner.sites):
        await site.stop()
    server = runner.server
    if server is None:
        return
    await asyncio.sleep(0)  # requests accepted just before the stop get to start
    server.pre_shutdown()
    await server.shutdown(timeout)


async def _stop_when_orphaned(parent: int, stop: asyncio.Event) -> None:
    """A worker whose supervisor died (even by SIGKILL) must not serve on alone."""
    while os.getppid() == parent:
        await asyncio.sleep(1)
    log.error("supervisor is gone: stopping")
    stop.set()


async def flush_logs_every(seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        logs.flush()
