"""Run the public and admin listeners until SIGTERM/SIGINT, then drain."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable
from typing import Any

from aiohttp import web

from . import logs
from .app import create_server
from .config import Config
from .observability import create_admin_app
from .runtime import Runtime

log = logging.getLogger("gateway.server")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed: the proxy spends most of its time in the event loop."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(config: Config) -> None:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve(config))


async def serve(config: Config, ready: Callable[[], Any] | None = None) -> None:
    runtime = Runtime(config)
    if config.workers > 1:
        log.warning("workers: %d requested; this version runs one process", config.workers)
    public = web.ServerRunner(create_server(runtime), shutdown_timeout=config.drain_timeout)
    admin = web.AppRunner(create_admin_app(runtime), access_log=None, shutdown_timeout=1.0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runtime.open_client()
    await public.setup()
    await admin.setup()
    try:
        await web.TCPSite(public, config.listen.host, config.listen.port).start()
        await web.TCPSite(admin, config.admin_listen.host, config.admin_listen.port).start()
        log.info(
            "listening",
            extra={
                "listen": str(config.listen),
                "admin_listen": str(config.admin_listen),
                "upstream": str(config.upstream),
                "config": str(config.source),
            },
        )
        # Everything allocated so far (config, routes, keys, imported modules) lives as long
        # as the process: keep it out of every future garbage collection pass.
        gc.freeze()
        if ready is not None:
            ready()
        flusher = asyncio.create_task(_flush_logs_every(0.5))
        await stop.wait()
        flusher.cancel()
        log.info(
            "stopping: draining in-flight requests", extra={"drain_timeout": config.drain_timeout}
        )
    finally:
        await public.cleanup()
        await admin.cleanup()
        await runtime.close()
        logs.flush()
    log.info("stopped")


async def _flush_logs_every(seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        logs.flush()
