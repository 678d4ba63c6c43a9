"""`rediss://`, `rediss+sentinel://` and `rediss+cluster://` against a real TLS Redis.

Every node, sentinel and link speaks TLS only (no plain port), with certificates
from a private CA made here; a real `gateway serve` trusts that CA the standard
way, SSL_CERT_FILE (docs/configuration.md, store), and signs in, lets a request
through (the per-request check on the pipelined connection, redis_wire), confirms
a logout, and then refuses the logged-out tokens. A gateway that does not trust
the CA gets no store at all: the certificate is checked, not just encrypted to.
The redis-server must be built with TLS (Debian's; .ci/run installs it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import SAME_ORIGIN, GatewayProcess, config_text, session_extra
from tests.helpers import FORM_HEADERS, cookie_header, status
from tests.helpers import sign_in_over_http as sign_in
from tests.redis_server import RedisServer, TlsFiles, tls_files, tls_redis_binary
from tests.redis_topologies import Cluster, Sentinels

pytestmark = pytest.mark.redis_ha

Spawn = Callable[..., GatewayProcess]
PASSWORD = "tls-redis-password"


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    if tls_redis_binary() is None:
        pytest.skip("no redis-server built with TLS (Debian's redis-server package has it)")
    return tls_files(tmp_path / "tls")


@pytest.fixture
def single(tmp_path: Path, tls: TlsFiles) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", PASSWORD, tls=tls)
    server.directory.mkdir()
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _gateway(
    spawn: Spawn,
    upstream_url: str,
    store: str,
    tmp_path: Path,
    ca: Path | None,
    password: str | None = None,
) -> GatewayProcess:
    """`ca`: the CA the gateway trusts, by SSL_CERT_FILE; `password`: by store_password_env."""
    more = "store_password_env: GW_TLS_REDIS_PASSWORD\n" if password else ""
    text = config_text(upstream_url, session_extra(tmp_path, store=store, more=more))
    env = {"GW_TLS_REDIS_PASSWORD": password} if password else {}
    return spawn(text, env={**env, "SSL_CERT_FILE": str(ca)} if ca else env)


async def _round_trip(http: aiohttp.ClientSession, gateway: GatewayProcess) -> None:
    """Sign in, a protected request, a confirmed logout, the logged-out tokens refused."""
    cookies = await sign_in(http, gateway)
    assert await status(http, gateway.url + "/api/x", cookies) == 200
    access = {"access_token": cookies["access_token"]}
    assert await status(http, gateway.url + "/api/x", access) == 200
    async with http.post(
        gateway.url + "/logout",
        headers={"Origin": SAME_ORIGIN, **cookie_header(cookies)},
        allow_redirects=False,
    ) as logout:
        assert logout.status == 303
    assert await status(http, gateway.url + "/api/x", access) == 401
    refresh = {"refresh_token": cookies["refresh_token"]}
    assert await status(http, gateway.url + "/api/x", refresh) == 401


async def test_rediss_single(
    single: RedisServer,
    tls: TlsFiles,
    spawn_gateway: Spawn,
    upstream_url: str,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    assert single.url.startswith("rediss://")
    trusting = _gateway(spawn_gateway, upstream_url, single.url, tmp_path, tls.ca, PASSWORD)
    await _round_trip(http, trusting)

    # without the CA the certificate is not trusted: no session is made, none let through
    untrusting = _gateway(spawn_gateway, upstream_url, single.url, tmp_path, None, PASSWORD)
    async with http.post(
        untrusting.url + "/login",
        data={"username": "alice", "password": "wonderland"},
        headers=FORM_HEADERS,
        allow_redirects=False,
    ) as refused:
        assert refused.status == 503


@pytest.mark.parametrize(
    ("password", "guarded"),
    [(None, False), (PASSWORD, False), (PASSWORD, True)],
    ids=["open", "password", "guarded"],
)
async def test_rediss_sentinel(
    password: str | None,
    guarded: bool,
    tls: TlsFiles,
    spawn_gateway: Spawn,
    upstream_url: str,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    """`password`: the data nodes ask for one; `guarded`: the sentinels too. The gateway
    sends it to a sentinel only when asked, on the same TLS connection."""
    sentinels = Sentinels(tmp_path / "sentinel", password, guarded=guarded, tls=tls)
    try:
        sentinels.start()
        assert sentinels.url.startswith("rediss+sentinel://")
        gateway = _gateway(spawn_gateway, upstream_url, sentinels.url, tmp_path, tls.ca, password)
        await _round_trip(http, gateway)
    finally:
        sentinels.stop()


async def test_rediss_cluster(
    tls: TlsFiles,
    spawn_gateway: Spawn,
    upstream_url: str,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    """Three primaries with a replica each (a logout is confirmed by a replica's WAIT)."""
    cluster = Cluster(tmp_path / "cluster", tls=tls)
    try:
        cluster.start()
        assert cluster.url.startswith("rediss+cluster://")
        gateway = _gateway(spawn_gateway, upstream_url, cluster.url, tmp_path, tls.ca)
        await _round_trip(http, gateway)
    finally:
        cluster.stop()
