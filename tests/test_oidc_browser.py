"""Sign-in with OpenID Connect once in a real browser (SPEC 7.4): headless Chromium, a real
`gateway serve`, the real OpenID Provider of tests/oidc.

The user opens a protected page, meets the gateway's login page, clicks the provider's
button, signs in on the provider's own page and lands back on the page with their identity;
then signs out, confirms at the provider, and is back on the gateway's login page. The
upstream is a tiny HTML app in this test's event loop; the blocking browser steps run in a
worker thread so that it keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from tests.conftest import GatewayProcess, config_text, session_extra
from tests.ingress.support import chromium
from tests.oidc.support import (
    ALICE,
    CLIENT_ID,
    CLIENT_SECRET,
    SECRET_ENV,
    OpenIDProvider,
    running_provider,
)

pytestmark = pytest.mark.oidc

PROVIDER_ID, LABEL = "corp", "Corp SSO"
ACCESS, REFRESH = "access_token", "refresh_token"


@pytest.fixture
def driver() -> Iterator[webdriver.Chrome]:
    with chromium() as chrome:
        yield chrome


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[OpenIDProvider]:
    with running_provider(tmp_path) as started:
        yield started


async def _app_page(request: web.Request) -> web.Response:
    """What the browser sees behind the gateway: who the upstream was told the user is."""
    fields = "".join(
        f'<p id="{name.lower()}">{html.escape(request.headers.get(name, ""))}</p>'
        for name in ("X-User-Id", "X-User-Email", "X-User-Name", "X-User-Roles", "Cookie")
    )
    body = (
        f"<!doctype html><title>app</title>{fields}"
        '<form method="post" action="/logout"><button id="sign-out">Sign out</button></form>'
    )
    return web.Response(text=body, content_type="text/html")


@pytest.fixture
async def html_upstream(aiohttp_server: Any) -> str:
    app = web.Application()
    app.router.add_get("/{tail:.*}", _app_page)
    server: TestServer = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


# -- the blocking browser steps ---------------------------------------------------------


def _wait(
    driver: webdriver.Chrome, what: str, done: Callable[[], bool], seconds: float = 15
) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"waited {seconds}s for {what}; at {driver.current_url}:\n"
                + driver.page_source[:3000]
            )
        time.sleep(0.05)


def _at(driver: webdriver.Chrome, base: str, path: str) -> bool:
    here = urlsplit(driver.current_url)
    return f"{here.scheme}://{here.netloc}" == base and here.path == path


def _provider_button(driver: webdriver.Chrome) -> WebElement:
    found = driver.find_elements(
        By.XPATH, f"//*[self::a or self::button][contains(normalize-space(.), '{LABEL}')]"
    )
    assert found, "no button labelled " + LABEL + " on the login page:\n" + driver.page_source
    return found[0]


def _browser_flow(driver: webdriver.Chrome, gateway: str, issuer: str) -> None:
    # a protected page, no session: the gateway's login page, with the provider's button
    driver.get(gateway + "/dashboard")
    _wait(driver, "the gateway's login page", lambda: _at(driver, gateway, "/login"))
    assert driver.find_elements(By.NAME, "password")  # the password form beside it
    _provider_button(driver).click()

    # the provider's own sign-in page
    _wait(
        driver,
        "the provider's sign-in page",
        lambda: (
            urlsplit(driver.current_url).netloc == urlsplit(issuer).netloc
            and bool(driver.find_elements(By.ID, "username"))
        ),
    )
    assert driver.find_element(By.ID, "client").text == CLIENT_ID
    driver.find_element(By.ID, "username").send_keys(ALICE.login)
    driver.find_element(By.ID, "sign-in").click()

    # back on the page first asked for, and the app was told who signed in
    _wait(
        driver,
        "/dashboard with an identity",
        lambda: (
            _at(driver, gateway, "/dashboard") and bool(driver.find_elements(By.ID, "x-user-id"))
        ),
    )
    assert driver.find_element(By.ID, "x-user-id").text == ALICE.sub
    assert driver.find_element(By.ID, "x-user-email").text == ALICE.email
    assert driver.find_element(By.ID, "x-user-name").text == ALICE.name
    assert driver.find_element(By.ID, "x-user-roles").text == ",".join(sorted(ALICE.groups))
    forwarded = driver.find_element(By.ID, "cookie").text
    assert ACCESS not in forwarded and REFRESH not in forwarded

    # the gateway's two cookies, HttpOnly: page scripts see neither
    cookies = {c["name"]: c for c in driver.get_cookies() if c["name"] in (ACCESS, REFRESH)}
    assert set(cookies) == {ACCESS, REFRESH} and all(c["httpOnly"] for c in cookies.values())
    visible = driver.execute_script("return document.cookie")
    assert ACCESS not in visible and REFRESH not in visible

    # sign out: the provider asks, the user confirms, the gateway's login page again
    driver.find_element(By.ID, "sign-out").click()
    _wait(
        driver,
        "the provider's sign-out question",
        lambda: bool(driver.find_elements(By.ID, "logout-yes")),
    )
    driver.find_element(By.ID, "logout-yes").click()
    _wait(driver, "the gateway's login page after sign-out", lambda: _at(driver, gateway, "/login"))
    assert not [c for c in driver.get_cookies() if c["name"] in (ACCESS, REFRESH)]

    # signed out for real: the protected page asks to sign in again
    driver.get(gateway + "/dashboard")
    _wait(driver, "the login page again", lambda: _at(driver, gateway, "/login"))


async def test_sign_in_with_the_provider_in_chromium(
    driver: webdriver.Chrome,
    spawn_gateway: Callable[..., GatewayProcess],
    html_upstream: str,
    provider: OpenIDProvider,
    tmp_path: Path,
) -> None:
    providers = (
        "  providers:\n"
        f"    - id: {PROVIDER_ID}\n"
        f"      name: {LABEL}\n"
        f"      issuer: {provider.issuer}\n"
        f"      client_id: {CLIENT_ID}\n"
        f"      client_secret_env: {SECRET_ENV}\n"
        "      scopes: [openid, email, profile, groups]\n"
        "      claims: {roles: groups}\n"
    )
    gateway = spawn_gateway(
        config_text(html_upstream, session_extra(tmp_path) + providers),
        env={SECRET_ENV: CLIENT_SECRET},
    )
    await provider.register([gateway.url])
    await asyncio.to_thread(_browser_flow, driver, gateway.url, provider.issuer)
    ended = [e for e in await provider.events() if e["event"] == "end_session.success"]
    assert len(ended) == 1  # the provider's session ended too
