"""SIGTERM on a real process: stop accepting, let in-flight requests finish within
drain_timeout, answer /readyz 503 meanwhile, exit 0."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from gateway.config import load
from gateway.runtime import Runtime
from gateway.server import serve
from tests.conftest import GatewayProcess, config_text, free_port, log_lines, write_config

Spawn = Callable[..., GatewayProcess]
SLOW_PUBLIC = "routes:\n  - path: /slow\n    auth: public\ndefault: required\n"


def _config(upstream_url: str, drain: str) -> str:
    return config_text(upstream_url, routes=SLOW_PUBLIC).replace(
        "upstream_timeout: 1s", f"upstream_timeout: 30s\ndrain_timeout: {drain}"
    )


def _accepts(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    return True


async def _wait_exit(gw: GatewayProcess, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while gw.proc.poll() is None:
        assert time.monotonic() < deadline, "the gateway did not exit"
        await asyncio.sleep(0.05)
    return gw.proc.returncode


async def test_sigterm_drains_in_flight_requests_and_exits_0(
    spawn_gateway: Spawn, upstream_url: str
) -> None:
    gw = spawn_gateway(_config(upstream_url, "10s"))
    async with aiohttp.ClientSession() as http:
        slow = asyncio.ensure_future(http.get(gw.url + "/slow?s=1.5"))
        await asyncio.sleep(0.4)  # the request is at the upstream now
        gw.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        assert not _accepts(gw.url)  # no new connections
        async with http.get(gw.admin_url + "/readyz") as ready:
            assert ready.status == 503  # a load balancer moves traffic away
            assert (await ready.json())["status"] == "draining"
        response = await slow
        assert response.status == 200
        assert await response.text() == "late"
    assert await _wait_exit(gw, 10) == 0
    messages = [line["msg"] for line in log_lines(gw.log)]
    assert "stopping: draining in-flight requests" in messages
    assert messages[-1] == "stopped"


async def test_drain_timeout_bounds_the_wait(spawn_gateway: Spawn, upstream_url: str) -> None:
    gw = spawn_gateway(_config(upstream_url, "1s"))
    async with aiohttp.ClientSession() as http:
        slow = asyncio.ensure_future(http.get(gw.url + "/slow?s=20"))
        await asyncio.sleep(0.4)
        started = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        assert await _wait_exit(gw, 10) == 0
        # about the drain timeout, nowhere near the request's 20 s (no timing claim finer
        # than that: a loaded CI machine is slow, but not 10 s slow)
        assert time.monotonic() - started < 10
        try:
            response = await slow
            assert response.status != 200  # cut, never a made-up success
        except aiohttp.ClientError:
            pass  # the connection was closed under it: what the client sees


async def test_a_start_that_fails_half_way_gives_back_what_it_opened(
    tmp_path: Path, secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The public listener is up when the admin port turns out to be taken: serve raises,
    and the public port, the runtime (upstream client, store) and the signal handlers are
    given back, the tasks it started stopped."""
    closed: list[Runtime] = []
    close = Runtime.close

    async def counted_close(runtime: Runtime) -> None:
        closed.append(runtime)
        await close(runtime)

    monkeypatch.setattr(Runtime, "close", counted_close)
    public = free_port()
    before = asyncio.all_tasks()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        text = config_text("http://127.0.0.1:9").replace("127.0.0.1:0", f"127.0.0.1:{public}")
        text = text.replace("127.0.0.1:1", f"127.0.0.1:{taken.getsockname()[1]}")
        with pytest.raises(OSError):
            await serve(load(write_config(tmp_path, text)))
    assert len(closed) == 1 and not closed[0].has_client
    assert not _accepts(f"http://127.0.0.1:{public}")
    assert asyncio.all_tasks() == before
    loop = asyncio.get_running_loop()
    assert not any(loop.remove_signal_handler(s) for s in (signal.SIGTERM, signal.SIGHUP))
