"""A real browser against a real gateway process: sign in, HttpOnly cookies, refresh, sign out.

Headless Chromium driven by Selenium. The upstream is a tiny HTML app in this test's event
loop; the blocking browser steps run in a worker thread so that it keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.conftest import GatewayProcess, config_text, session_extra
from tests.ingress.support import chromium

ACCESS, REFRESH = "access_token", "refresh_token"
ACCESS_TTL = 2  # seconds; the test waits past it once


@pytest.fixture
def driver() -> Iterator[webdriver.Chrome]:
    with chromium() as chrome:
        yield chrome


async def _app_page(request: web.Request) -> web.Response:
    """What the browser sees behind the gateway: who the upstream was told the user is."""
    who = html.escape(request.headers.get("X-User-Id", ""))
    cookie = html.escape(request.headers.get("Cookie", ""))
    body = (
        "<!doctype html><title>app</title>"
        f'<p id="who">{who}</p><p id="cookie">{cookie}</p>'
        '<form method="post" action="/logout"><button id="logout">Sign out</button></form>'
    )
    return web.Response(text=body, content_type="text/html")


def _html_upstream() -> web.Application:
    app = web.Application()
    app.router.add_get("/{tail:.*}", _app_page)
    return app


# -- the blocking browser steps ---------------------------------------------------------


def _wait(
    driver: webdriver.Chrome, what: str, done: Callable[[], bool], seconds: float = 10
) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds}s for {what}; at {driver.current_url}")
        time.sleep(0.05)


def _path(driver: webdriver.Chrome) -> str:
    return urlsplit(driver.current_url).path


def _on_login_form(driver: webdriver.Chrome, next_path: str | None) -> None:
    _wait(driver, "the login page", lambda: _path(driver) == "/login")
    if next_path is not None:
        assert parse_qs(urlsplit(driver.current_url).query).get("next") == [next_path]
    assert driver.find_element(By.NAME, "password").get_attribute("type") == "password"


def _sign_in(driver: webdriver.Chrome, username: str, password: str) -> None:
    driver.find_element(By.NAME, "username").send_keys(username)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()


def _app_user(driver: webdriver.Chrome, path: str) -> str:
    """On the upstream page at `path`, what X-User-Id the upstream received."""
    _wait(driver, path, lambda: _path(driver) == path and bool(driver.find_elements(By.ID, "who")))
    forwarded_cookie = driver.find_element(By.ID, "cookie").text
    assert ACCESS not in forwarded_cookie and REFRESH not in forwarded_cookie
    return str(driver.find_element(By.ID, "who").text)


def _cookies(driver: webdriver.Chrome) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in driver.get_cookies() if c["name"] in (ACCESS, REFRESH)}


def _browser_flow(driver: webdriver.Chrome, base: str) -> None:
    # (a) a protected page, no session: the login form, remembering where we were going
    driver.get(base + "/dashboard")
    _on_login_form(driver, "/dashboard")

    # (b) sign in: back on /dashboard, and the upstream was told who we are
    _sign_in(driver, "alice", "wonderland")
    assert _app_user(driver, "/dashboard") == "alice"

    # (c) both cookies exist and are HttpOnly: page scripts see neither name nor token
    cookies = _cookies(driver)
    assert set(cookies) == {ACCESS, REFRESH}
    assert all(c["httpOnly"] for c in cookies.values()), cookies
    visible = driver.execute_script("return document.cookie")
    assert ACCESS not in visible and REFRESH not in visible
    assert all(c["value"] and c["value"] not in visible for c in cookies.values())

    # (d) the access token expires; the next navigation refreshes in place (no login form)
    time.sleep(ACCESS_TTL + 1)
    driver.get(base + "/dashboard/reports")
    assert _app_user(driver, "/dashboard/reports") == "alice"
    renewed = _cookies(driver)
    assert set(renewed) == {ACCESS, REFRESH}
    assert renewed[ACCESS]["value"] != cookies[ACCESS]["value"]
    assert renewed[REFRESH]["value"] != cookies[REFRESH]["value"], "refresh token not rotated"

    # (e) sign out with the app's POST form: login page, cookies gone, protected again
    driver.find_element(By.ID, "logout").click()
    _on_login_form(driver, None)
    assert _cookies(driver) == {}
    driver.get(base + "/dashboard")
    _on_login_form(driver, "/dashboard")

    # ... and sign out by a same-site GET navigation to /logout
    _sign_in(driver, "alice", "wonderland")
    assert _app_user(driver, "/dashboard") == "alice"
    driver.get(base + "/logout")
    _on_login_form(driver, None)
    assert _cookies(driver) == {}
    driver.get(base + "/dashboard")
    _on_login_form(driver, "/dashboard")


async def test_browser_sign_in_refresh_and_sign_out(
    driver: webdriver.Chrome,
    aiohttp_server: Any,
    spawn_gateway: Callable[[str], GatewayProcess],
    tmp_path: Path,
) -> None:
    upstream: TestServer = await aiohttp_server(_html_upstream())
    text = config_text(
        str(upstream.make_url("")).rstrip("/"),
        extra=session_extra(tmp_path),
        tokens=f"access_ttl: {ACCESS_TTL}s\nleeway: 0s",
    )
    gateway = spawn_gateway(text)
    try:
        await asyncio.to_thread(_browser_flow, driver, gateway.url)
    except BaseException:
        print("gateway log:\n" + gateway.log.read_text())
        raise
