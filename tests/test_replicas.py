"""Real `gateway serve` processes: two replicas sharing one Redis, Redis outages, the CLI."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import (
    SAME_ORIGIN,
    SECRET_ENV,
    GatewayProcess,
    config_text,
    session_extra,
    write_config,
)
from tests.helpers import (
    cookie_header,
    gateway_process,
    run_cli,
    set_cookies,
    status,
)
from tests.helpers import (
    sign_in_over_http as sign_in,
)
from tests.redis_server import RedisServer

Spawn = Callable[[str], GatewayProcess]


@pytest.fixture
def pair(
    spawn_gateway: Spawn, upstream_url: str, redis_url: str, tmp_path: Path
) -> tuple[GatewayProcess, GatewayProcess, str]:
    """Two replicas on one Redis, and a config file for the CLI pointing at the same store."""
    text = config_text(
        upstream_url,
        session_extra(tmp_path, store=redis_url),
        # a 2 s grace: 20 racing requests fit in it even on a slow machine; an 8 s access TTL
        # makes open WebSockets re-check every 2 s
        tokens="refresh_reuse_grace: 2s\naccess_ttl: 8s",
    )
    cli_config = write_config(tmp_path, text, "cli.yaml")
    return spawn_gateway(text), spawn_gateway(text), str(cli_config)


async def test_two_replicas_race_one_rotation(
    pair: tuple[GatewayProcess, GatewayProcess, str], http: aiohttp.ClientSession
) -> None:
    a, b, _ = pair
    stale = {"refresh_token": (await sign_in(http, a))["refresh_token"]}

    async def hit(gateway: GatewayProcess, i: int) -> tuple[int, str]:
        async with http.get(f"{gateway.url}/api/{i}", headers=cookie_header(stale)) as response:
            return response.status, set_cookies(response)["refresh_token"]["value"]

    results = await asyncio.gather(*(hit(a if i % 2 else b, i) for i in range(20)))
    assert [s for s, _ in results] == [200] * 20
    successors = {token for _, token in results}
    assert len(successors) == 1
    (successor,) = successors
    assert await status(http, b.url + "/api/next", {"refresh_token": successor}) == 200


async def test_replay_after_grace_is_caught_on_the_other_replica(
    pair: tuple[GatewayProcess, GatewayProcess, str], http: aiohttp.ClientSession
) -> None:
    a, b, _ = pair
    first = await sign_in(http, a)
    async with http.get(
        a.url + "/api/x", headers=cookie_header({"refresh_token": first["refresh_token"]})
    ) as rotated:
        newest = {n: c["value"] for n, c in set_cookies(rotated).items()}
    await asyncio.sleep(2.3)
    assert await status(http, b.url + "/api/x", {"refresh_token": first["refresh_token"]}) == 401
    assert await status(http, a.url + "/api/x", {"refresh_token": newest["refresh_token"]}) == 401
    assert await status(http, a.url + "/api/x", {"access_token": newest["access_token"]}) == 401
    events = [line for line in b.log.read_text().splitlines() if '"refresh_reuse"' in line]
    assert len(events) == 1
    assert first["refresh_token"] not in b.log.read_text()  # never a token in a log line


async def test_logout_on_one_replica_is_seen_by_the_other(
    pair: tuple[GatewayProcess, GatewayProcess, str], http: aiohttp.ClientSession
) -> None:
    a, b, _ = pair
    cookies = await sign_in(http, a)
    assert await status(http, b.url + "/api/x", cookies) == 200
    async with http.post(
        a.url + "/logout",
        headers={"Origin": SAME_ORIGIN, **cookie_header(cookies)},
        allow_redirects=False,
    ) as response:
        assert response.status == 303
    assert await status(http, b.url + "/api/x", {"access_token": cookies["access_token"]}) == 401
    assert await status(http, b.url + "/api/x", {"refresh_token": cookies["refresh_token"]}) == 401


async def test_revoke_command_reaches_every_replica(
    pair: tuple[GatewayProcess, GatewayProcess, str], http: aiohttp.ClientSession, secret: str
) -> None:
    a, b, cli_config = pair
    first, second = await sign_in(http, a), await sign_in(http, b)
    listed = run_cli("sessions", "--user", "alice", "--config", cli_config, secret=secret)
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.strip().splitlines()) >= 2 and "127.0.0.1" in listed.stdout
    async with http.ws_connect(
        b.url + "/ws", headers={"Origin": SAME_ORIGIN, **cookie_header(second)}
    ) as ws:
        await ws.receive(timeout=5)  # the upstream's greeting
        revoked = run_cli("revoke", "--user", "alice", "--config", cli_config, secret=secret)
        assert revoked.returncode == 0, revoked.stderr
        assert "revoked alice" in revoked.stdout
        for gateway, cookies in ((a, first), (b, second), (a, second), (b, first)):
            for name in ("access_token", "refresh_token"):
                assert await status(http, gateway.url + "/api/x", {name: cookies[name]}) == 401
        closed = await ws.receive(timeout=30)  # the open socket is closed, not left running
        assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert (
        "no live sessions"
        in run_cli("sessions", "--user", "alice", "--config", cli_config, secret=secret).stdout
    )


async def test_redis_killed_and_restarted(
    spawn_gateway: Spawn,
    upstream_url: str,
    redis_server: RedisServer,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    gateway = spawn_gateway(
        config_text(upstream_url, session_extra(tmp_path, store=redis_server.url))
    )
    cookies = await sign_in(http, gateway)
    assert await status(http, gateway.url + "/api/x", cookies) == 200
    assert await status(http, gateway.admin_url + "/readyz", {}) == 200

    redis_server.stop()
    assert await status(http, gateway.url + "/api/x", cookies) == 503  # never waved through
    assert await status(http, gateway.admin_url + "/readyz", {}) == 503
    assert await status(http, gateway.url + "/public/x", {}) == 200
    assert await status(http, gateway.admin_url + "/healthz", {}) == 200

    redis_server.start()  # an empty Redis on the same port: the gateway reconnects by itself
    assert await status(http, gateway.admin_url + "/readyz", {}) == 200
    assert (
        await status(http, gateway.url + "/api/x", {"access_token": cookies["access_token"]}) == 200
    )
    fresh = await sign_in(http, gateway)
    assert await status(http, gateway.url + "/api/x", fresh) == 200


async def test_revoke_and_sessions_reach_a_memory_store_through_the_admin_port(
    spawn_gateway: Spawn,
    upstream_url: str,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    secret: str,
) -> None:
    text = config_text(upstream_url, session_extra(tmp_path))
    gateway = spawn_gateway(text)
    cookies = await sign_in(http, gateway)
    port = gateway.admin_url.rsplit(":", 1)[1]
    cli_config = write_config(
        tmp_path,
        text.replace("admin_listen: 127.0.0.1:1", f"admin_listen: 127.0.0.1:{port}"),
        "c.yaml",
    )
    listed = run_cli("sessions", "--user", "alice", "--config", str(cli_config), secret=secret)
    assert listed.returncode == 0 and "signed in" in listed.stdout, listed.stderr
    revoked = run_cli("revoke", "--user", "alice", "--config", str(cli_config), secret=secret)
    assert revoked.returncode == 0 and "1 session ended" in revoked.stdout, revoked.stderr
    assert await status(http, gateway.url + "/api/x", cookies) == 401


async def test_session_admin_answers_loopback_only(
    spawn_gateway: Spawn, upstream_url: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    gateway = spawn_gateway(config_text(upstream_url, session_extra(tmp_path)))
    async with http.get(gateway.admin_url + "/sessions") as response:
        assert response.status == 400  # loopback, but no ?user=
    async with http.post(gateway.admin_url + "/sessions/revoke?user=x", json={}) as response:
        assert response.status == 200
        assert (await response.json()) == {"revoked_sessions": 0}


def test_hash_password_makes_an_argon2id_hash_the_users_file_accepts(
    tmp_path: Path, secret: str, upstream_url: str
) -> None:
    made = run_cli("hash-password", secret=secret, stdin="s3cret pass\n")
    assert made.returncode == 0, made.stderr
    digest = made.stdout.strip()
    assert digest.startswith("$argon2id$")
    assert "s3cret" not in made.stdout + made.stderr
    (tmp_path / "users.yaml").write_text(f'carol:\n  password_hash: "{digest}"\n')
    text = config_text(upstream_url, f"login:\n  users_file: {tmp_path / 'users.yaml'}\n")
    checked = run_cli("check-config", "--config", str(write_config(tmp_path, text)), secret=secret)
    assert checked.returncode == 0, checked.stderr
    assert run_cli("hash-password", secret=secret, stdin="\n").returncode == 1


def test_workers_with_memory_store_is_a_config_error(
    tmp_path: Path, secret: str, upstream_url: str
) -> None:
    path = write_config(tmp_path, config_text(upstream_url, "workers: 2\n"))
    result = gateway_process("serve", "--config", str(path), env={SECRET_ENV: secret})
    assert result.returncode == 2
    assert "workers" in result.stderr and "redis://" in result.stderr
    assert "Traceback" not in result.stderr


async def test_no_password_token_or_cookie_value_reaches_the_log(
    spawn_gateway: Spawn,
    upstream_url: str,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    secret: str,
) -> None:
    """At log_level debug, through every event: nothing secret, a request id on every line."""
    gateway = spawn_gateway(
        config_text(
            upstream_url, session_extra(tmp_path, more="log_level: debug\n"),
            tokens="refresh_reuse_grace: 0s",
        )
    )  # fmt: skip
    secrets_seen: list[str] = ["wonderland", "not-the-password-42", "side-cookie-value-77", secret]
    async with http.post(
        gateway.url + "/login",
        json={"username": "alice", "password": "not-the-password-42"},
        headers={"Origin": SAME_ORIGIN},
    ) as failed:
        assert failed.status == 401
    first = await sign_in(http, gateway)
    secrets_seen += first.values()
    extra = {"other_app": "side-cookie-value-77", **first}
    assert await status(http, gateway.url + "/api/x", extra) == 200
    async with http.get(
        gateway.url + "/api/x", headers=cookie_header({"refresh_token": first["refresh_token"]})
    ) as rotated:
        newest = {n: c["value"] for n, c in set_cookies(rotated).items()}
        secrets_seen += newest.values()
    await asyncio.sleep(0.05)
    assert (
        await status(http, gateway.url + "/api/x", {"refresh_token": first["refresh_token"]}) == 401
    )
    async with http.post(
        gateway.url + "/logout",
        headers={"Origin": SAME_ORIGIN, **cookie_header(newest)},
        allow_redirects=False,
    ) as out:
        assert out.status == 303
    again = await sign_in(http, gateway)
    secrets_seen += again.values()
    async with http.get(  # a token in the query string: the access line logs the path only
        gateway.url + "/api/x?access_token=" + again["access_token"]
    ) as leaked:
        assert leaked.status == 401
    async with http.post(gateway.admin_url + "/sessions/revoke?user=alice", json={}) as revoked:
        assert revoked.status == 200
    gateway.proc.send_signal(signal.SIGHUP)
    await asyncio.sleep(0.5)
    gateway.proc.terminate()
    gateway.proc.wait(timeout=30)
    text = gateway.log.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    events = {line.get("event") for line in lines}
    assert {"login", "login_failed", "refresh", "refresh_reuse", "logout", "revoke", "reload"} <= (
        events
    )
    for value in secrets_seen:
        assert value and value not in text
        assert value.rsplit(".", 1)[-1] not in text  # not even a token's signature
    # every line carries a request id; a request's events carry that request's
    assert all("request_id" in line for line in lines)
    access_ids = {line["request_id"] for line in lines if line["logger"] == "gateway.access"}
    request_events = [line for line in lines if line.get("event") in ("login", "logout")]
    assert request_events and all(line["request_id"] in access_ids for line in request_events)
