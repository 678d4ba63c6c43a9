"""Revocation holds (SPEC 7.1): for every token it covers, for as long as it could be valid.

`gateway revoke --user NAME` refuses every access token of that user issued
before it, whoever minted it and whatever its `exp`: a token minted by another
service with the shared key and an `exp` days away stays refused long after
`access_ttl + leeway`, the longest the gateway's own tokens live. And a
revoked session's bearer token never reaches the upstream, also when the
request carries an access cookie beside it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import (
    Client,
    GatewayFactory,
    GatewayProcess,
    config_text,
    mint,
    received,
    runtime_of,
    session_extra,
    write_config,
)
from tests.helpers import run_cli, sign_in

DAY = 86400
# the shortest lifetime the config allows: a gateway token is dead 1 s after issue
SHORT = "access_ttl: 1s\nleeway: 0s"


async def status_with(http: aiohttp.ClientSession, url: str, token: str) -> int:
    async with http.get(url, headers={"Cookie": f"access_token={token}"}) as response:
        return response.status


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_a_revoked_users_foreign_token_stays_refused_past_access_ttl(
    spawn_gateway: Callable[[str], GatewayProcess],
    upstream_url: str,
    redis_url: str,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    secret: str,
    store: str,
) -> None:
    user = f"holds-{uuid.uuid4().hex[:12]}"  # its own key space on the shared Redis
    text = config_text(
        upstream_url,
        session_extra(tmp_path, store="memory://" if store == "memory" else redis_url),
        tokens=SHORT,
    )
    gateway = spawn_gateway(text)
    # the CLI reads the spawned config: its real admin port (memory://) or the same Redis
    cli_config = write_config(tmp_path, gateway.config.read_text(), "cli.yaml")
    url = gateway.url + "/api/x"
    now = int(time.time())
    # minted by another service with the shared key: no session, an exp days away
    foreign = mint(secret, sub=user, iat=now - 5, nbf=now - 5, exp=now + 3 * DAY)
    assert await status_with(http, url, foreign) == 200  # valid until the revoke

    revoked = run_cli("revoke", "--user", user, "--config", str(cli_config), secret=secret)
    assert revoked.returncode == 0, revoked.stderr
    assert await status_with(http, url, foreign) == 401

    await asyncio.sleep(2.5)  # access_ttl + leeway = 1 s: every token of ours is dead by now
    assert await status_with(http, url, foreign) == 401
    # the cut-off refuses what came before it, not the user: a later token passes
    fresh = int(time.time())
    later = mint(secret, sub=user, iat=fresh, nbf=fresh, exp=fresh + 3 * DAY)
    assert await status_with(http, url, later) == 200
    assert await status_with(http, url, foreign) == 401


async def test_revoke_user_holds_in_process_for_a_token_minted_elsewhere(
    make_gateway: GatewayFactory, tmp_path: Path, secret: str
) -> None:
    """The same through the store's revoke_user, as the admin endpoint calls it."""
    client = await make_gateway(session_extra(tmp_path), tokens=SHORT)
    now = int(time.time())
    foreign = mint(secret, iat=now - 5, nbf=now - 5, exp=now + 30 * DAY)
    cookie = {"Cookie": f"access_token={foreign}"}
    assert (await client.get("/api/x", headers=cookie)).status == 200
    sessions = runtime_of(client).snapshot.sessions
    await sessions.revoke_user("alice")
    assert (await client.get("/api/x", headers=cookie)).status == 401
    await asyncio.sleep(2.5)
    assert (await client.get("/api/x", headers=cookie)).status == 401
    assert (await client.get("/maybe/x", headers=cookie)).status == 200  # optional: anonymous
    seen = received(await (await client.get("/maybe/x", headers=cookie)).json())
    assert "x-user-id" not in seen


# -- a revoked session's bearer token, beside a cookie ---------------------------------------


async def _revoked_alice_and_bob(client: Client, kind: str = "access") -> tuple[str, str]:
    """One of Alice's tokens (`kind`: access or refresh) after `revoke`, and Bob's valid
    access token."""
    alice = await sign_in(client)
    bob = await sign_in(client, "bob", "builder")
    sessions = runtime_of(client).snapshot.sessions
    assert await sessions.revoke_user("alice") == 1
    return alice[f"{kind}_token"], bob["access_token"]


@pytest.fixture
async def gateway(make_gateway: GatewayFactory, tmp_path: Path) -> Client:
    return await make_gateway(session_extra(tmp_path))


@pytest.mark.parametrize("kind", ["access", "refresh"])
@pytest.mark.parametrize("cookie", ["garbage", "bob"])
@pytest.mark.parametrize("path", ["/maybe/x", "/api/x"])
async def test_a_revoked_bearer_token_never_reaches_the_upstream_beside_a_cookie(
    gateway: Client, cookie: str, path: str, kind: str
) -> None:
    """The bearer is the revoked session's access token, or its refresh token (a longer
    lived credential of the same session, sent where an access token goes)."""
    revoked, bob = await _revoked_alice_and_bob(gateway, kind)
    access = "not.a.token" if cookie == "garbage" else bob
    response = await gateway.get(
        path,
        headers={"Authorization": f"Bearer {revoked}", "Cookie": f"access_token={access}"},
    )
    if response.status != 200:
        # refused by the gateway itself: nothing went upstream at all
        assert cookie == "garbage" and path == "/api/x"
        assert response.status == 401
        assert "headers" not in await response.text()
        return
    seen = received(await response.json())
    assert revoked not in json.dumps(seen)
    assert "authorization" not in seen
    if cookie == "bob":
        assert seen["x-user-id"] == ["bob"]  # the cookie's identity, not the bearer's
    else:
        assert "x-user-id" not in seen


@pytest.mark.parametrize("kind", ["access", "refresh"])
async def test_the_revoked_bearer_alone_is_refused_or_dropped(gateway: Client, kind: str) -> None:
    revoked, _ = await _revoked_alice_and_bob(gateway, kind)
    bearer = {"Authorization": f"Bearer {revoked}"}
    assert (await gateway.get("/api/x", headers=bearer)).status == 401
    response = await gateway.get("/maybe/x", headers=bearer)
    assert response.status == 200
    seen = received(await response.json())
    assert "authorization" not in seen and "x-user-id" not in seen


async def test_an_apps_own_bearer_still_passes_beside_our_cookie(gateway: Client) -> None:
    """Only tokens of ours are held back: an app's own API key beside a session cookie
    reaches the app."""
    _, bob = await _revoked_alice_and_bob(gateway)
    response = await gateway.get(
        "/api/x", headers={"Authorization": "Bearer app-api-key", "Cookie": f"access_token={bob}"}
    )
    assert response.status == 200
    assert received(await response.json())["authorization"] == ["Bearer app-api-key"]
