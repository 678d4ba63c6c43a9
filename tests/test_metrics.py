"""/metrics on the admin listener of a real process, after real traffic."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    SAME_ORIGIN,
    GatewayProcess,
    config_text,
    metric,
    scrape,
    session_extra,
)
from tests.helpers import cookie_header, set_cookies
from tests.redis_server import RedisServer

Spawn = Callable[..., GatewayProcess]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


async def login(http: aiohttp.ClientSession, gw: GatewayProcess, password: str) -> dict[str, str]:
    async with http.post(
        gw.url + "/login",
        data={"username": "alice", "password": password},
        headers={"Origin": SAME_ORIGIN},
        allow_redirects=False,
    ) as response:
        return {name: c["value"] for name, c in set_cookies(response).items()}


async def get(http: aiohttp.ClientSession, url: str, cookies: dict[str, str]) -> int:
    async with http.get(url, headers=cookie_header(cookies), allow_redirects=False) as response:
        return response.status


async def test_traffic_shows_up_by_route_decision_and_result(
    spawn_gateway: Spawn, upstream_url: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    gw = spawn_gateway(
        config_text(
            upstream_url,
            session_extra(tmp_path, login="max_failures: 2"),
            tokens="refresh_reuse_grace: 0s",
        )
    )
    for _ in range(3):  # two failures, then throttled
        await login(http, gw, "wrong")
    cookies = await login(http, gw, "wonderland")  # throttled too: same user and client
    assert not cookies
    gw2 = spawn_gateway(
        config_text(upstream_url, session_extra(tmp_path), tokens="refresh_reuse_grace: 0s")
    )
    cookies = await login(http, gw2, "wonderland")
    assert await get(http, gw2.url + "/api/x", cookies) == 200
    assert await get(http, gw2.url + "/public/x", {}) == 200
    assert await get(http, gw2.url + "/admin/x", {}) == 401  # no Accept: text/html
    assert await get(http, gw2.url + "/internal/x", cookies) == 403
    refresh = {"refresh_token": cookies["refresh_token"]}
    assert await get(http, gw2.url + "/api/x", refresh) == 200  # rotated
    await asyncio.sleep(0.05)
    assert await get(http, gw2.url + "/api/x", refresh) == 401  # reused: family revoked

    first, second = scrape(gw.admin_url), scrape(gw2.admin_url)
    assert metric(first, "gateway_logins_total", result="failure") == 2
    assert metric(first, "gateway_logins_total", result="throttled") == 2
    assert metric(second, "gateway_logins_total", result="success") == 1
    assert (
        metric(
            second, "gateway_requests_total", route="/api/:path*", decision="allow", status="2xx"
        )
        == 2
    )
    assert (
        metric(
            second,
            "gateway_requests_total",
            route="/public/:path*",
            decision="public",
            status="2xx",
        )
        == 1
    )
    assert (
        metric(
            second,
            "gateway_requests_total",
            route="/internal/:path*",
            decision="deny",
            status="4xx",
        )
        == 1
    )
    assert (
        metric(
            second,
            "gateway_requests_total",
            route="/admin/:path*",
            decision="unauthorized",
            status="4xx",
        )
        == 1
    )
    assert metric(second, "gateway_refreshes_total", result="rotated") == 1
    assert metric(second, "gateway_refreshes_total", result="reuse") == 1
    assert metric(second, "gateway_refresh_reuse_total") == 1
    count = metric(second, "gateway_request_duration_seconds_count", route="/api/:path*")
    assert count == 3
    assert metric(second, "gateway_store_duration_seconds_count", operation="rotate") == 2
    assert metric(second, "gateway_config_last_reload_successful") == 1


async def test_store_errors_are_counted(
    spawn_gateway: Spawn,
    upstream_url: str,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    gw = spawn_gateway(config_text(upstream_url, session_extra(tmp_path, store=redis_server.url)))
    cookies = await login(http, gw, "wonderland")
    assert await get(http, gw.url + "/api/x", cookies) == 200
    redis_server.stop()
    assert await get(http, gw.url + "/api/x", cookies) == 503
    samples = scrape(gw.admin_url)
    assert metric(samples, "gateway_store_errors_total", operation="access_revoked") >= 1
    assert metric(samples, "gateway_requests_total", route="/api/:path*",
                  decision="store_unavailable", status="5xx") == 1  # fmt: skip


def test_names_follow_prometheus_conventions(spawn_gateway: Spawn) -> None:
    gw = spawn_gateway(config_text("http://127.0.0.1:9"))
    with urllib.request.urlopen(gw.admin_url + "/metrics", timeout=5) as answer:  # noqa: S310
        assert answer.headers["Content-Type"].startswith("text/plain; version=")
        families = list(text_string_to_metric_families(answer.read().decode()))
    names = {f.name: f.type for f in families}
    assert {
        "gateway_requests", "gateway_request_duration_seconds", "gateway_refreshes",
        "gateway_refresh_reuse", "gateway_logins", "gateway_config_reloads",
        "gateway_store_errors", "gateway_store_duration_seconds",
    } <= set(names)  # fmt: skip
    for name, kind in names.items():
        assert name.startswith("gateway_"), name
        if kind == "histogram":
            assert name.endswith("_seconds"), name
    for family in families:
        for sample in family.samples:
            if family.type == "counter" and not sample.name.endswith("_created"):
                assert sample.name.endswith("_total"), sample.name
