"""One gateway process: the public listener, the admin listener, reload, drain.

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
from collections.abc import Callable

from aiohttp import web

from .app import create_server
from .config import Config, load
from .observability import admin_runner
from .reload import Reloader
from .runtime import Lifetime, Runtime
from .supervisor import WorkerRole, supervise

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
            runner.run(supervise(config))
        else:
            runner.run(serve(config, worker=worker))


async def serve(config: Config, *, worker: WorkerRole | None = None) -> None:
    runtime = Runtime(config)
    reloader = (
        Reloader(runtime)
        if worker is None
        # a worker: the text its supervisor validated, not what the file holds now
        else Reloader(
            runtime, counted=False, loader=lambda path: load(path, worker.config_file.read_text())
        )
    )
    async with Lifetime(runtime, reloader.reload, log) as life:
        runtime.open_client()
        port = worker.port if worker else config.listen.port
        public = await life.listen(
            web.ServerRunner(create_server(runtime)),
            config.listen.host,
            port,
            reuse_port=worker is not None,
        )
        if worker is None:
            admin = config.admin_listen
            await life.listen(admin_runner(runtime), admin.host, admin.port)
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
        if config.login.providers or worker is None:
            # a provider down at start is retried in the background; a reload may add one
            life.spawn(
                runtime.oidc_home.keep_discovered(lambda: runtime.snapshot.config.login.providers)
            )
        if worker is None:
            life.spawn(reloader.watch())
        else:
            worker.ready_file.touch()
            life.spawn(_stop_when_orphaned(worker.parent, life.stop))
        drain = await life.until_stopped()
        log.info("stopping: draining in-flight requests", extra={"drain_timeout": drain})
        await life.cancel_tasks()
        await _drain(public, drain)


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
