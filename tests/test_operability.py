"""What an operator reads: the client in the access line, the cause of a 502 or 504."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from tests.conftest import GatewayProcess, config_text, free_port, log_lines

PUBLIC = "routes: []\ndefault: public\n"


def _wait_for(path: Any, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """The log lines once one satisfies `predicate` (the access log is flushed on a timer)."""
    deadline = time.monotonic() + 10
    while True:
        lines = log_lines(path)
        if any(predicate(line) for line in lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


async def test_access_line_names_the_client(
    spawn_gateway: Callable[..., GatewayProcess], upstream_url: str
) -> None:
    gateway = spawn_gateway(config_text(upstream_url, routes=PUBLIC))
    async with aiohttp.ClientSession() as http, http.get(gateway.url + "/x") as response:
        assert response.status == 200
        request_id = response.headers["X-Request-Id"]
    lines = await asyncio.to_thread(
        _wait_for, gateway.log, lambda line: line.get("request_id") == request_id
    )
    access = [line for line in lines if line.get("logger") == "gateway.access"]
    mine = [line for line in access if line["request_id"] == request_id]
    assert mine and mine[0]["client"] == "127.0.0.1"


async def test_a_refused_upstream_is_a_502_with_its_cause_logged(
    spawn_gateway: Callable[..., GatewayProcess],
) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    gateway = spawn_gateway(config_text(down, routes=PUBLIC))
    url = gateway.url + "/x?token=s3cr3t-in-query"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 502
        request_id = response.headers["X-Request-Id"]
    lines = await asyncio.to_thread(
        _wait_for, gateway.log, lambda line: line.get("msg", "").startswith("upstream failed")
    )
    warnings = [line for line in lines if line.get("msg", "").startswith("upstream failed")]
    assert warnings, lines
    assert warnings[0]["cause"] == "connection refused"
    assert warnings[0]["level"] == "warning"
    assert warnings[0]["request_id"] == request_id
    assert "s3cr3t" not in gateway.log.read_text()  # the URL's query is never logged


async def test_a_slow_upstream_is_a_504_with_timeout_logged(
    spawn_gateway: Callable[..., GatewayProcess], aiohttp_server: Any
) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/{tail:.*}", slow)
    server = await aiohttp_server(app)
    gateway = spawn_gateway(config_text(str(server.make_url("")).rstrip("/"), routes=PUBLIC))
    async with aiohttp.ClientSession() as http, http.get(gateway.url + "/x") as response:
        assert response.status == 504
    lines = await asyncio.to_thread(
        _wait_for, gateway.log, lambda line: line.get("msg", "").startswith("upstream timed out")
    )
    causes = [line.get("cause") for line in lines if line.get("logger") == "gateway.proxy"]
    assert "timeout" in causes, json.dumps(lines)[:2000]
