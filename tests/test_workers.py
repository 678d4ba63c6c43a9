"""`workers: 2` on a real process tree: a supervisor and two workers on one port.

What is checked: both workers serve the port, metrics add up across them, a
killed worker is replaced while the other goes on serving, SIGHUP reaches the
workers, and SIGTERM stops everything with exit code 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import GatewayProcess, config_text, log_lines, metric, scrape
from tests.helpers import OPEN_ROUTES

Spawn = Callable[..., GatewayProcess]
ROUTES = OPEN_ROUTES  # /public and /switch public, the rest required


def workers_of(supervisor: int) -> list[int]:
    """The supervisor's child processes, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == supervisor:
            found.append(int(entry.name))
    return sorted(found)


async def eventually(check: Callable[[], Awaitable[bool] | bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, "not true in time"
        await asyncio.sleep(0.1)


async def ready(gw: GatewayProcess) -> bool:
    async with aiohttp.ClientSession() as http, http.get(gw.admin_url + "/readyz") as response:
        return response.status == 200


@pytest.fixture
def tree(spawn_gateway: Spawn, upstream_url: str, redis_url: str) -> GatewayProcess:
    text = config_text(upstream_url, f"workers: 2\nstore: {redis_url}\n", routes=ROUTES)
    return spawn_gateway(text)


async def test_two_workers_serve_one_port_and_metrics_add_up(tree: GatewayProcess) -> None:
    await eventually(lambda: ready(tree))
    assert len(workers_of(tree.proc.pid)) == 2
    async with aiohttp.ClientSession() as http:
        for _ in range(60):  # a new connection each: the kernel spreads them over the workers
            async with http.get(tree.url + "/public/x", headers={"Connection": "close"}) as r:
                assert r.status == 200
    route = "/public/:path*"

    def counted() -> float:
        samples = scrape(tree.admin_url)
        return metric(
            samples, "gateway_requests_total", route=route, decision="public", status="2xx"
        )

    # each worker hands its counts to its metrics file every half second
    await eventually(lambda: counted() == 60)
    assert counted() == 60
    assert metric(scrape(tree.admin_url), "gateway_workers") == 2
    workers = {line.get("worker") for line in log_lines(tree.log) if line["msg"] == "listening"}
    assert workers == {1, 2}


async def test_a_killed_worker_is_replaced_while_the_other_serves(tree: GatewayProcess) -> None:
    await eventually(lambda: ready(tree))
    before = workers_of(tree.proc.pid)
    os.kill(before[0], signal.SIGKILL)
    async with aiohttp.ClientSession() as http:
        for _ in range(20):  # the survivor takes every connection meanwhile
            async with http.get(tree.url + "/public/x", headers={"Connection": "close"}) as r:
                assert r.status == 200
    await eventually(lambda: len(set(workers_of(tree.proc.pid)) - set(before)) == 1)
    await eventually(lambda: ready(tree))
    exits = [line for line in log_lines(tree.log) if line.get("event") == "worker_exit"]
    assert exits and exits[0]["code"] == -signal.SIGKILL


async def test_sighup_reaches_every_worker_and_sigterm_stops_them_all(
    tree: GatewayProcess,
) -> None:
    await eventually(lambda: ready(tree))
    children = workers_of(tree.proc.pid)
    tree.config.write_text(
        tree.config.read_text().replace("auth: public\ndefault", "auth: deny\ndefault")
    )
    tree.proc.send_signal(signal.SIGHUP)

    async def all_denied() -> bool:
        async with aiohttp.ClientSession() as http:
            for _ in range(10):
                async with http.get(tree.url + "/switch/x", headers={"Connection": "close"}) as r:
                    if r.status != 403:
                        return False
        return True

    await eventually(all_denied, 10)
    assert metric(scrape(tree.admin_url), "gateway_config_reloads_total", result="success") == 1
    tree.proc.send_signal(signal.SIGTERM)
    await eventually(lambda: tree.proc.poll() is not None, 30)
    assert tree.proc.returncode == 0
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]


def test_workers_need_a_shared_store(tmp_path: Path) -> None:
    from gateway.config import load
    from gateway.errors import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text(config_text("http://127.0.0.1:3000", "workers: 2\n"))
    with pytest.raises(ConfigError, match="need a shared store"):
        load(path)
