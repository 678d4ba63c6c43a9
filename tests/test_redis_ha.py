"""`gateway serve` on Sentinel and on Cluster, primaries killed under it (SPEC §7.6).

Real topologies (tests/redis_topologies.py), a real gateway process: during a
failover a request that needs the store gets 503 and a revoked token never 200;
afterwards the same process serves again and sessions made before still work; an
acknowledged logout or revocation survives a primary killed right after the
answer; without a replica a logout is not acknowledged (503, Retry-After) and
`gateway revoke` exits non-zero, while /readyz stays 200 and says why.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import SAME_ORIGIN, GatewayProcess, config_text, session_extra, write_config
from tests.helpers import cookie_header, run_cli, status
from tests.helpers import sign_in_over_http as sign_in
from tests.redis_topologies import Cluster, Sentinels

pytestmark = pytest.mark.redis_ha

Spawn = Callable[[str], GatewayProcess]
ALICE = "gw:{alice}:cut"  # a key in alice's slot: the cluster node to kill


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[Sentinels]:
    topology = Sentinels(tmp_path / "sentinel")
    try:
        topology.start()
        yield topology
    finally:
        topology.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    topology = Cluster(tmp_path / "cluster")
    try:
        topology.start()
        yield topology
    finally:
        topology.stop()


def _gateway(
    spawn: Spawn, upstream_url: str, store: str, tmp_path: Path
) -> tuple[GatewayProcess, str]:
    text = config_text(upstream_url, session_extra(tmp_path, store=store))
    return spawn(text), str(write_config(tmp_path, text, "cli.yaml"))


async def _logout(
    http: aiohttp.ClientSession, gateway: GatewayProcess, cookies: dict[str, str]
) -> aiohttp.ClientResponse:
    async with http.post(
        gateway.url + "/logout",
        headers={"Origin": SAME_ORIGIN, **cookie_header(cookies)},
        allow_redirects=False,
    ) as response:
        await response.read()
        return response


async def _settled(http: aiohttp.ClientSession, url: str, cookies: dict[str, str]) -> int:
    """The first answer that is not 503, within 20 s: the gateway follows the failover."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        answer = await status(http, url, cookies)
        if answer != 503:
            return answer
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} still 503 after 20 s")


async def _through_failover(
    http: aiohttp.ClientSession,
    gateway: GatewayProcess,
    live: dict[str, str],
    revoked: dict[str, str],
    switched: asyncio.Future[None],
) -> list[int]:
    """Requests during the switch: the live session 200 or 503, the revoked one never 200."""
    seen = []
    while not switched.done():
        answer = await status(http, gateway.url + "/api/x", live)
        assert answer in (200, 503)
        seen.append(answer)
        assert await status(http, gateway.url + "/api/x", revoked) in (401, 503)
        await asyncio.sleep(0.05)
    await switched
    return seen


async def _check_unconfirmed(
    http: aiohttp.ClientSession, gateway: GatewayProcess, cli_config: str, secret: str
) -> None:
    """The primary has no replica: a logout and a revoke are not acknowledged; /readyz is 200."""
    async with http.get(gateway.admin_url + "/readyz") as ready:
        assert ready.status == 200
        assert "no replica" in (await ready.json())["warning"]
    cookies = await sign_in(http, gateway)  # sign-in needs no replica
    refused = await _logout(http, gateway, cookies)
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "1"
    revoked = run_cli("revoke", "--user", "alice", "--config", cli_config, secret=secret)
    assert revoked.returncode != 0
    assert "not yet confirmed" in revoked.stderr
    # it is on the primary all the same: the session is refused from now on
    access = {"access_token": cookies["access_token"]}
    assert await status(http, gateway.url + "/api/x", access) == 401


async def test_sentinel_failover_under_a_running_gateway(
    sentinels: Sentinels,
    spawn_gateway: Spawn,
    upstream_url: str,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    secret: str,
) -> None:
    gateway, cli_config = _gateway(spawn_gateway, upstream_url, sentinels.url, tmp_path)
    live, gone = await sign_in(http, gateway), await sign_in(http, gateway)
    assert (await _logout(http, gateway, gone)).status == 303
    revoked = {"access_token": gone["access_token"]}
    assert await status(http, gateway.url + "/api/x", live) == 200

    old = sentinels.primary()
    old.stop()
    switched = asyncio.ensure_future(asyncio.to_thread(sentinels.wait_promoted, old))
    seen = await _through_failover(http, gateway, live, revoked, switched)
    assert 503 in seen  # the switch was seen, and answered closed

    # the same process serves again, the sessions from before the failover too
    assert await _settled(http, gateway.url + "/api/x", live) == 200
    refresh = {"refresh_token": live["refresh_token"]}
    assert await status(http, gateway.url + "/api/y", refresh) == 200
    assert await status(http, gateway.url + "/api/x", revoked) == 401
    assert (
        await status(http, gateway.url + "/api/x", {"refresh_token": gone["refresh_token"]}) == 401
    )

    await _check_unconfirmed(http, gateway, cli_config, secret)
    await asyncio.to_thread(sentinels.rejoin, old)
    async with http.get(gateway.admin_url + "/readyz") as ready:
        assert await ready.json() == {"status": "ready"}
    assert (await _logout(http, gateway, await sign_in(http, gateway))).status == 303


async def test_cluster_failover_under_a_running_gateway(
    cluster: Cluster,
    spawn_gateway: Spawn,
    upstream_url: str,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    secret: str,
) -> None:
    gateway, cli_config = _gateway(spawn_gateway, upstream_url, cluster.url, tmp_path)
    live, gone = await sign_in(http, gateway), await sign_in(http, gateway)
    assert (await _logout(http, gateway, gone)).status == 303
    revoked = {"access_token": gone["access_token"]}
    assert await status(http, gateway.url + "/api/x", live) == 200

    old = cluster.owner(ALICE)
    old.stop()
    switched = asyncio.ensure_future(asyncio.to_thread(cluster.wait_taken_over, ALICE, old))
    seen = await _through_failover(http, gateway, live, revoked, switched)
    assert 503 in seen

    assert await _settled(http, gateway.url + "/api/x", live) == 200
    refresh = {"refresh_token": live["refresh_token"]}
    assert await status(http, gateway.url + "/api/y", refresh) == 200
    assert await status(http, gateway.url + "/api/x", revoked) == 401
    assert (
        await status(http, gateway.url + "/api/x", {"refresh_token": gone["refresh_token"]}) == 401
    )

    await _check_unconfirmed(http, gateway, cli_config, secret)
    await asyncio.to_thread(cluster.rejoin, old)
    async with http.get(gateway.admin_url + "/readyz") as ready:
        assert await ready.json() == {"status": "ready"}
    assert (await _logout(http, gateway, await sign_in(http, gateway))).status == 303


ROUNDS = 5


@pytest.mark.parametrize("kind", ["sentinel", "cluster"])
async def test_no_acknowledged_logout_or_revocation_is_lost(
    kind: str,
    tmp_path: Path,
    spawn_gateway: Spawn,
    upstream_url: str,
    http: aiohttp.ClientSession,
    secret: str,
) -> None:
    """Each round: a logout (or a revoke) answered, the primary killed at once, a failover;
    the promoted replica must still refuse the session."""
    topology: Sentinels | Cluster = (
        Sentinels(tmp_path / "s") if kind == "sentinel" else Cluster(tmp_path / "c")
    )
    topology.start()
    try:
        gateway, cli_config = _gateway(spawn_gateway, upstream_url, topology.url, tmp_path)
        for round_ in range(ROUNDS):
            cookies = await sign_in(http, gateway)
            if isinstance(topology, Sentinels):
                doomed = topology.primary()
            else:
                doomed = topology.owner(ALICE)
            if round_ % 2 == 0:
                assert (await _logout(http, gateway, cookies)).status == 303
            else:
                done = await asyncio.to_thread(
                    run_cli, "revoke", "--user", "alice", "--config", cli_config, secret=secret
                )
                assert done.returncode == 0, done.stderr
            doomed.stop()  # SIGKILL right after the answer
            if isinstance(topology, Sentinels):
                await asyncio.to_thread(topology.wait_promoted, doomed)
            else:
                await asyncio.to_thread(topology.wait_taken_over, ALICE, doomed)
            for name in ("access_token", "refresh_token"):
                answer = await _settled(http, gateway.url + "/api/x", {name: cookies[name]})
                assert answer == 401, f"round {round_}: {name} let through after the failover"
            await asyncio.to_thread(topology.rejoin, doomed)
    finally:
        topology.stop()
