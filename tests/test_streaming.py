"""Bodies stream through a real gateway process: 1 GiB each way, memory stays flat."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from tests.conftest import GatewayProcess, config_text, mint

GIB = 1024**3
CHUNK = bytes(range(256)) * 4096  # 1 MiB
ALLOWED_GROWTH = 100 * 1024**2

pytestmark = pytest.mark.slow


@contextlib.asynccontextmanager
async def rss_growth(gateway: GatewayProcess) -> AsyncIterator[list[int]]:
    """Samples the gateway's RSS while the block runs; yields [peak growth in bytes]."""
    baseline = gateway.rss_bytes()
    growth, stop = [0], asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            growth[0] = max(growth[0], gateway.rss_bytes() - baseline)
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    try:
        yield growth
    finally:
        stop.set()
        await watcher


@pytest.fixture
async def streaming_gateway(
    spawn_gateway: Callable[[str], GatewayProcess], upstream_url: str
) -> GatewayProcess:
    text = config_text(upstream_url).replace("upstream_timeout: 1s", "upstream_timeout: 60s")
    gateway = spawn_gateway(text)
    return gateway


async def test_1gib_upload_streams_with_flat_memory(
    streaming_gateway: GatewayProcess, secret: str
) -> None:
    gateway = streaming_gateway
    cookies = {"access_token": mint(secret)}
    async with aiohttp.ClientSession(cookies=cookies) as session:
        async with session.post(gateway.url + "/upload", data=b"warm-up") as warm:
            assert warm.status == 200

        async def body() -> AsyncIterator[bytes]:
            for _ in range(GIB // len(CHUNK)):
                yield CHUNK

        async with (
            rss_growth(gateway) as growth,
            session.post(
                gateway.url + "/upload", data=body(), timeout=aiohttp.ClientTimeout(total=300)
            ) as response,
        ):
            assert response.status == 200
            result = await response.json()
    expected = hashlib.sha256()
    for _ in range(GIB // len(CHUNK)):
        expected.update(CHUNK)
    assert result == {"length": GIB, "sha256": expected.hexdigest()}
    assert growth[0] < ALLOWED_GROWTH, f"gateway RSS grew by {growth[0] / 1024**2:.0f} MiB"


async def test_1gib_download_streams_with_flat_memory(
    streaming_gateway: GatewayProcess, secret: str
) -> None:
    gateway = streaming_gateway
    cookies = {"access_token": mint(secret)}
    async with aiohttp.ClientSession(cookies=cookies) as session:
        async with session.get(gateway.url + "/stream/1024") as warm:
            assert warm.status == 200
            await warm.read()
        total = 0
        async with (
            rss_growth(gateway) as growth,
            session.get(
                gateway.url + f"/stream/{GIB}", timeout=aiohttp.ClientTimeout(total=300)
            ) as response,
        ):
            assert response.status == 200
            async for chunk in response.content.iter_chunked(1024 * 1024):
                total += len(chunk)
    assert total == GIB
    assert growth[0] < ALLOWED_GROWTH, f"gateway RSS grew by {growth[0] / 1024**2:.0f} MiB"
