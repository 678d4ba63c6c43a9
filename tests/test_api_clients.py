"""docs/api-clients.md's examples, run as written against a real `gateway serve`.

docs/examples/api_client.py runs as a subprocess (its own command line): it signs in with JSON,
is refreshed by its cookies, signs in again on 401 (a bearer token that expired, a session
revoked) and stops on a refused sign-in. docs/examples/spa.html and spa.js are served by the
upstream through the gateway to headless Chromium: a fetch that gets 401 sends the page to the
sign-in page, which brings it back. access_ttl is 2 s so that tokens expire during the tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.conftest import GatewayProcess, config_text, log_lines, session_extra
from tests.ingress.support import ROOT, chromium, code_blocks

EXAMPLES = ROOT / "docs" / "examples"
SCRIPT = EXAMPLES / "api_client.py"
PAGE = ROOT / "docs" / "api-clients.md"
ACCESS_TTL = 2  # seconds

ROUTES = """
routes:
  - path: /spa/:path*
    auth: public
  - path: /api/:path*
    on_unauthenticated: status
default: required
"""


# -- an upstream: the SPA's files, and an API that says what it was told -----------------


async def _file(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in ("spa.html", "spa.js"):
        raise web.HTTPNotFound()
    return web.FileResponse(EXAMPLES / name)


async def _api(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "path": request.path,
            "user": request.headers.get("X-User-Id"),
            "authorization": request.headers.get("Authorization"),
            "cookie": request.headers.get("Cookie"),
        }
    )


@pytest.fixture
async def gateway(
    aiohttp_server: Any, spawn_gateway: Callable[[str], GatewayProcess], tmp_path: Path
) -> GatewayProcess:
    app = web.Application()
    app.router.add_get("/spa/{name}", _file)
    app.router.add_route("*", "/{tail:.*}", _api)
    upstream = await aiohttp_server(app)
    text = config_text(
        str(upstream.make_url("")).rstrip("/"),
        extra=session_extra(tmp_path),
        routes=ROUTES,
        tokens=f"access_ttl: {ACCESS_TTL}s\nleeway: 0s",
    )
    return spawn_gateway(text)


def revoke(gateway: GatewayProcess, user: str) -> None:
    """What `gateway revoke --user` does: through the admin listener."""
    request = urllib.request.Request(  # noqa: S310 - loopback
        f"{gateway.admin_url}/sessions/revoke?user={user}",
        data=b"{}",
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - loopback
        assert json.loads(answer.read())["revoked_sessions"] >= 1


def events(gateway: GatewayProcess, name: str) -> list[dict[str, Any]]:
    return [line for line in log_lines(gateway.log) if line.get("event") == name]


# -- the script -------------------------------------------------------------------------


def script(
    gateway: GatewayProcess, *args: str, password: str = "wonderland"
) -> subprocess.Popen[str]:
    env = {**os.environ, "GATEWAY_USERNAME": "alice", "GATEWAY_PASSWORD": password}
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), gateway.url, "/api/whoami", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=EXAMPLES,
    )


def finish(proc: subprocess.Popen[str], gateway: GatewayProcess) -> tuple[list[Any], str]:
    """Its stdout, one JSON answer a line, and its stderr; fails with both and the log."""
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, f"{stdout}\n{stderr}\n{gateway.log.read_text()[-3000:]}"
    return [json.loads(line) for line in stdout.splitlines()], stderr


async def test_the_script_signs_in_once_and_is_refreshed_by_its_cookies(
    gateway: GatewayProcess,
) -> None:
    # rounds at 0, 1.2 and 2.4 s: the last one after the access token's 2 s
    proc = script(gateway, "--repeat", "3", "--interval", "1.2")
    answers, stderr = await asyncio.to_thread(finish, proc, gateway)
    assert [a["user"] for a in answers] == ["alice"] * 3
    assert stderr.count("signed in as alice") == 1, stderr
    assert "signing in again" not in stderr
    assert len(events(gateway, "refresh")) >= 1  # the gateway refreshed it in place
    # the app never sees the gateway's cookies or a token of its
    assert all(a["authorization"] is None and a["cookie"] is None for a in answers)


async def test_the_script_with_a_bearer_token_signs_in_again_when_it_expires(
    gateway: GatewayProcess,
) -> None:
    proc = script(gateway, "--bearer", "--repeat", "2", "--interval", str(ACCESS_TTL + 0.5))
    answers, stderr = await asyncio.to_thread(finish, proc, gateway)
    assert [a["user"] for a in answers] == ["alice"] * 2
    assert stderr.count("signed in as alice") == 2, stderr
    assert "GET /api/whoami: 401, signing in again" in stderr
    assert events(gateway, "refresh") == []  # a bearer token is never refreshed
    assert all(a["authorization"] is None and a["cookie"] is None for a in answers)


async def test_the_script_signs_in_again_after_its_session_is_revoked(
    gateway: GatewayProcess,
) -> None:
    # Without the revocation its second round would be refreshed by its cookies (as above),
    # so a second sign-in shows the 401; the interval leaves the revocation time to land.
    proc = script(gateway, "--repeat", "2", "--interval", "4")
    assert proc.stdout is not None
    first = await asyncio.to_thread(proc.stdout.readline)
    assert json.loads(first)["user"] == "alice"
    await asyncio.to_thread(revoke, gateway, "alice")  # before its second round
    answers, stderr = await asyncio.to_thread(finish, proc, gateway)
    assert [a["user"] for a in answers] == ["alice"]
    assert stderr.count("signed in as alice") == 2, stderr
    assert "GET /api/whoami: 401, signing in again" in stderr


async def test_the_script_stops_on_a_refused_sign_in(gateway: GatewayProcess) -> None:
    proc = script(gateway, password="wrong")
    stdout, stderr = await asyncio.to_thread(proc.communicate, timeout=60)
    assert proc.returncode == 2, stderr
    assert stdout == ""
    assert "error: sign-in answered 401" in stderr and "Traceback" not in stderr


def test_the_page_shows_spa_js_as_it_is() -> None:
    source = (EXAMPLES / "spa.js").read_text()
    assert source in code_blocks(PAGE)


def test_the_page_shows_how_the_script_signs_in() -> None:
    """The curl lines of the page ask what the script asks."""
    text = PAGE.read_text()
    assert "-H 'Content-Type: application/json'" in text
    assert re.search(r'"username":\s*"alice",\s*"password"', text)
    assert "Authorization: Bearer" in text


# -- the single-page app in a browser ---------------------------------------------------


def _wait(driver: webdriver.Chrome, what: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited 10s for {what}; at {driver.current_url}")
        time.sleep(0.05)


def _at_login(driver: webdriver.Chrome, next_path: str) -> None:
    _wait(driver, "the login page", lambda: urlsplit(driver.current_url).path == "/login")
    assert parse_qs(urlsplit(driver.current_url).query)["next"] == [next_path]


def _answer(driver: webdriver.Chrome) -> str:
    found = driver.find_elements(By.ID, "answer")
    return str(found[0].text) if found else ""


def _spa_flow(driver: webdriver.Chrome, gateway: GatewayProcess) -> None:
    page = "/spa/spa.html"
    # (a) no session: the page's first fetch gets 401, and the page goes to sign in
    driver.get(gateway.url + page)
    _at_login(driver, page)
    # (b) signing in brings it back, and now the fetch answers
    driver.find_element(By.NAME, "username").send_keys("alice")
    driver.find_element(By.NAME, "password").send_keys("wonderland")
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    _wait(driver, "the SPA's answer", lambda: _answer(driver).startswith("200 "))
    assert urlsplit(driver.current_url).path == page
    assert json.loads(_answer(driver).removeprefix("200 "))["user"] == "alice"
    # (c) the access token expires: the next fetch is refreshed in place, no redirect
    time.sleep(ACCESS_TTL + 1)
    before = _answer(driver)
    driver.execute_script("document.getElementById('answer').textContent = 'asking';")
    driver.find_element(By.ID, "again").click()
    _wait(driver, "the second answer", lambda: _answer(driver) != "asking")
    assert _answer(driver) == before
    # (d) the session is revoked: the next fetch gets 401, and the page goes to sign in
    revoke(gateway, "alice")
    driver.find_element(By.ID, "again").click()
    _at_login(driver, page)


async def test_the_spa_goes_to_sign_in_on_401_and_comes_back(gateway: GatewayProcess) -> None:
    with chromium() as driver:
        try:
            await asyncio.to_thread(_spa_flow, driver, gateway)
        except BaseException:
            print("gateway log:\n" + gateway.log.read_text()[-4000:])
            print("browser log:", driver.get_log("browser"))  # type: ignore[no-untyped-call]
            raise
    assert len(events(gateway, "refresh")) >= 1

    def unauthorized() -> list[str]:
        return [
            line["path"]
            for line in log_lines(gateway.log)
            if line.get("logger") == "gateway.access"
            and line.get("status") == 401
            and line["path"] != "/favicon.ico"  # Chromium asks for one; 401 like any path
        ]

    deadline = time.monotonic() + 5  # access lines are flushed on a timer
    while len(unauthorized()) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert unauthorized() == ["/api/whoami"] * 2  # the first fetch, the one after revoking
