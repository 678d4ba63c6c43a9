"""Reload of a real `gateway serve` process: SIGHUP, file edits, a ConfigMap's symlink swap,
invalid edits, changes that need a restart, in-flight requests, and key rotation."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt

from tests.conftest import (
    SAME_ORIGIN,
    GatewayProcess,
    config_text,
    log_lines,
    metric,
    mint,
    scrape,
    session_extra,
    users_yaml,
)
from tests.helpers import OPEN_ROUTES, cookie_header, set_cookies

Spawn = Callable[..., GatewayProcess]


async def status(http: aiohttp.ClientSession, url: str, **kwargs: Any) -> int:
    async with http.get(url, allow_redirects=False, **kwargs) as response:
        return response.status


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 10) -> None:
    """The watcher polls every second and waits for a change to hold still for one poll."""
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {seconds}s")
        await asyncio.sleep(0.1)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def events(gateway: GatewayProcess, name: str) -> list[dict[str, Any]]:
    return [line for line in log_lines(gateway.log) if line.get("event") == name]


async def test_sighup_applies_an_edit_and_counts_it(
    spawn_gateway: Spawn, upstream_url: str, http: aiohttp.ClientSession
) -> None:
    gw = spawn_gateway(config_text(upstream_url, routes=OPEN_ROUTES))
    assert await status(http, gw.url + "/switch/x") == 200
    # the watcher would see this too; SIGHUP right away shows SIGHUP alone does it
    gw.config.write_text(
        gw.config.read_text().replace("auth: public\ndefault", "auth: deny\ndefault")
    )
    gw.proc.send_signal(signal.SIGHUP)

    async def denied() -> bool:
        return await status(http, gw.url + "/switch/x") == 403

    await eventually(denied, 5)
    samples = scrape(gw.admin_url)
    assert metric(samples, "gateway_config_reloads_total", result="success") >= 1
    assert metric(samples, "gateway_config_last_reload_successful") == 1
    assert events(gw, "reload")


async def test_a_saved_file_is_picked_up_without_a_signal(
    spawn_gateway: Spawn, upstream_url: str, http: aiohttp.ClientSession
) -> None:
    gw = spawn_gateway(config_text(upstream_url, routes=OPEN_ROUTES))
    gw.config.write_text(
        gw.config.read_text().replace("auth: public\ndefault", "auth: deny\ndefault")
    )

    async def denied() -> bool:
        return await status(http, gw.url + "/switch/x") == 403

    await eventually(denied)
    assert events(gw, "reload")[-1]["reason"] == "file changed"


async def test_a_configmap_symlink_swap_reloads_config_and_users(
    spawn_gateway: Spawn, upstream_url: str, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Kubernetes mounts a ConfigMap as name -> ..data/name, ..data -> ..<timestamp>/,
    and updates it by writing a new timestamped directory and renaming a new ..data
    link over the old one. Nothing about config.yaml itself is ever written."""
    mount = tmp_path / "mount"
    first = mount / "..2026_11_22_10_00_00.1"
    first.mkdir(parents=True)
    (mount / "..data").symlink_to(first.name)
    for name in ("config.yaml", "users.yaml"):
        (mount / name).symlink_to(f"..data/{name}")
    (first / "users.yaml").write_text(users_yaml())
    body = config_text(
        upstream_url,
        session_extra(tmp_path).replace(str(tmp_path / "users.yaml"), "users.yaml"),
        routes=OPEN_ROUTES,
    )
    gw = spawn_gateway(body, path=mount / "config.yaml")  # written through the links
    assert (first / "config.yaml").read_text().startswith("\nlisten")
    assert await status(http, gw.url + "/switch/x") == 200
    assert await sign_in(http, gw, "alice", "wonderland") == 303

    # A new ConfigMap version: /switch is denied, alice has a new password.
    second = mount / "..2026_11_22_10_05_00.2"
    second.mkdir()
    (second / "config.yaml").write_text(
        (first / "config.yaml").read_text().replace("auth: public\ndefault", "auth: deny\ndefault")
    )
    (second / "users.yaml").write_text(users_yaml({"alice": ("looking-glass", ["admin"])}))
    (mount / "..data_tmp").symlink_to(second.name)
    os.rename(mount / "..data_tmp", mount / "..data")

    async def denied() -> bool:
        return await status(http, gw.url + "/switch/x") == 403

    await eventually(denied)
    assert await sign_in(http, gw, "alice", "looking-glass") == 303
    assert await sign_in(http, gw, "alice", "wonderland") == 401
    assert await sign_in(http, gw, "bob", "builder") == 401  # bob left with the new version


async def sign_in(http: aiohttp.ClientSession, gw: GatewayProcess, user: str, password: str) -> int:
    async with http.post(
        gw.url + "/login",
        data={"username": user, "password": password},
        headers={"Origin": SAME_ORIGIN},
        allow_redirects=False,
    ) as response:
        return response.status


async def test_a_users_file_edit_alone_reloads(
    spawn_gateway: Spawn, upstream_url: str, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    gw = spawn_gateway(config_text(upstream_url, session_extra(tmp_path)))
    assert await sign_in(http, gw, "bob", "builder") == 303
    (tmp_path / "users.yaml").write_text(users_yaml({"alice": ("wonderland", ["admin"])}))

    async def bob_gone() -> bool:
        return await sign_in(http, gw, "bob", "builder") == 401

    await eventually(bob_gone)


async def test_an_invalid_edit_keeps_the_old_config_and_says_where(
    spawn_gateway: Spawn, upstream_url: str, http: aiohttp.ClientSession
) -> None:
    gw = spawn_gateway(config_text(upstream_url, routes=OPEN_ROUTES))
    text = gw.config.read_text()
    broken = text.replace("auth: public\ndefault", "auht: deny\ndefault").replace(
        "upstream_timeout: 1s", "upstream_timeout: soon"
    )
    gw.config.write_text(broken)
    gw.proc.send_signal(signal.SIGHUP)

    async def failed() -> bool:
        return metric(scrape(gw.admin_url), "gateway_config_reloads_total", result="failure") >= 1

    await eventually(failed, 5)
    assert await status(http, gw.url + "/switch/x") == 200  # the old config still serves
    assert await status(http, gw.admin_url + "/readyz") == 200
    assert metric(scrape(gw.admin_url), "gateway_config_last_reload_successful") == 0
    problems = {p["key"]: p for p in events(gw, "reload_problem")}
    lines = broken.splitlines()
    assert set(problems) >= {"routes[1].auht", "upstream_timeout"}
    for key, problem in problems.items():
        assert problem["file"] == str(gw.config)
        assert problem["msg"].startswith(f"{gw.config}:{problem['line']}:")
        assert key.rsplit(".", 1)[-1].split("[")[0] in lines[problem["line"] - 1], key

    # fixed again: applies, and the gauge says so
    gw.config.write_text(text.replace("auth: public\ndefault", "auth: deny\ndefault"))
    gw.proc.send_signal(signal.SIGHUP)

    async def denied() -> bool:
        return await status(http, gw.url + "/switch/x") == 403

    await eventually(denied, 5)
    assert metric(scrape(gw.admin_url), "gateway_config_last_reload_successful") == 1


async def test_a_change_that_needs_a_restart_applies_nothing(
    spawn_gateway: Spawn, upstream_url: str, http: aiohttp.ClientSession
) -> None:
    gw = spawn_gateway(config_text(upstream_url, routes=OPEN_ROUTES))
    text = gw.config.read_text()
    port = gw.url.rsplit(":", 1)[1]
    edited = text.replace(f"listen: 127.0.0.1:{port}", "listen: 127.0.0.1:1") + "workers: 1\n"
    edited = edited.replace("auth: public\ndefault", "auth: deny\ndefault")
    gw.config.write_text(edited)
    gw.proc.send_signal(signal.SIGHUP)

    async def refused() -> bool:
        samples = scrape(gw.admin_url)
        return metric(samples, "gateway_config_reloads_total", result="restart_required") >= 1

    await eventually(refused, 5)
    assert await status(http, gw.url + "/switch/x") == 200  # the route edit was not applied
    [event] = [e for e in events(gw, "reload_failed") if e["result"] == "restart_required"]
    assert event["keys"] == ["listen"]


async def test_in_flight_requests_finish_on_the_config_they_started_with(
    spawn_gateway: Spawn, upstream_url: str, http: aiohttp.ClientSession
) -> None:
    routes = "routes:\n  - path: /slow\n    auth: public\ndefault: required\n"
    text = config_text(upstream_url, routes=routes)
    gw = spawn_gateway(text.replace("upstream_timeout: 1s", "upstream_timeout: 10s"))
    slow = asyncio.ensure_future(http.get(gw.url + "/slow?s=2"))
    await asyncio.sleep(0.5)
    gw.config.write_text(gw.config.read_text().replace("auth: public", "auth: deny"))
    gw.proc.send_signal(signal.SIGHUP)

    async def denied() -> bool:
        return await status(http, gw.url + "/slow?s=0") == 403

    await eventually(denied, 5)
    response = await slow
    assert response.status == 200
    assert await response.text() == "late"
    response.release()


ROTATE_ENV = "GATEWAY_TEST_NEXT_SECRET"


async def test_key_rotation_by_reload_keeps_sessions_then_retires_the_old_key(
    spawn_gateway: Spawn,
    upstream_url: str,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    secret: str,
) -> None:
    """Roll in a new key with the old one as previous, then retire the old one.

    The secret files are what a Kubernetes Secret mounted as a volume gives; an env
    var would need a restart, since a running process's environment never changes."""
    (tmp_path / "old.key").write_text(secret)
    (tmp_path / "new.key").write_text(new_secret := secrets.token_urlsafe(48))
    body = config_text(upstream_url, session_extra(tmp_path)).replace(
        "  secret_env: GATEWAY_TEST_SECRET\n",
        f"  secret_file: {tmp_path / 'old.key'}\n  kid: k1\n",
    )
    gw = spawn_gateway(body)
    async with http.post(
        gw.url + "/login",
        data={"username": "alice", "password": "wonderland"},
        headers={"Origin": SAME_ORIGIN},
        allow_redirects=False,
    ) as response:
        cookies = {name: c["value"] for name, c in set_cookies(response).items()}
    assert jwt.get_unverified_header(cookies["access_token"])["kid"] == "k1"

    body = gw.config.read_text()  # with the real ports
    rotated = body.replace(
        f"  secret_file: {tmp_path / 'old.key'}\n  kid: k1\n",
        f"  secret_file: {tmp_path / 'new.key'}\n  kid: k2\n"
        f"  previous_keys:\n    - {{kid: k1, secret_file: {tmp_path / 'old.key'}}}\n",
    )
    gw.config.write_text(rotated)
    gw.proc.send_signal(signal.SIGHUP)

    async def reloaded() -> bool:
        return metric(scrape(gw.admin_url), "gateway_config_reloads_total", result="success") >= 1

    await eventually(reloaded, 5)
    # the session signed with k1 goes on: its access token verifies with the previous key
    assert await status(http, gw.url + "/private", headers=cookie_header(cookies)) == 200
    # and its refresh token rotates into tokens signed with the new key
    async with http.get(
        gw.url + "/private", headers=cookie_header({"refresh_token": cookies["refresh_token"]})
    ) as response:
        assert response.status == 200
        fresh = {name: c["value"] for name, c in set_cookies(response).items()}
    assert jwt.get_unverified_header(fresh["access_token"])["kid"] == "k2"
    jwt.decode(fresh["access_token"], new_secret, algorithms=["HS256"], audience="upstream")

    # retire k1: what it signed stops working, what k2 signed goes on
    gw.config.write_text(rotated.split("  previous_keys:")[0] + rotated.split("}\n", 1)[1])
    gw.proc.send_signal(signal.SIGHUP)

    async def retired() -> bool:
        old = mint(secret, headers={"kid": "k1"})
        return (
            await status(http, gw.url + "/private", headers={"Authorization": f"Bearer {old}"})
            == 401
        )

    await eventually(retired, 5)
    assert await status(http, gw.url + "/private", headers=cookie_header(fresh)) == 200
