"""The gateway behind real proxies, run from the configurations in docs/deployment.md.

nginx, Caddy and HAProxy each run as a plain process on a loopback port, from the code block
of docs/deployment.md "Behind an ingress or reverse proxy" (only addresses changed), in front
of a real `gateway serve` configured as the page says (`trusted_proxies`), in front of the echo
upstream of conftest.py. Through each: a sign-in, a browser sign-in, a WebSocket, the client's
address upstream and in the gateway's events, throttling per client, forged forwarding headers.

Telling clients apart on one machine: the test's clients connect from 127.0.0.2 and 127.0.0.3
(every 127/8 address is the loopback interface), the proxy connects to the gateway from
127.0.0.1, the one address in `trusted_proxies`. So what the gateway calls the client is the
address the proxy saw and wrote into X-Forwarded-For, never the proxy's own. The browser
connects from 127.0.0.1, which is also the proxy's address: its checks say so.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from tests.conftest import GatewayProcess, config_text, log_lines, received, session_extra
from tests.ingress.support import (
    CADDY,
    DEPLOYMENT,
    DOCS_GATEWAY,
    GATEWAY_BEHIND_PROXY,
    HAPROXY,
    NGINX,
    NGINX_WRONG,
    Proxy,
    chromium,
    code_blocks,
    doc_block,
    start_proxy,
)

PROXIES = [NGINX, CADDY, HAPROXY]
CLIENT_A, CLIENT_B = "127.0.0.2", "127.0.0.3"  # two clients; the proxy itself is 127.0.0.1
FORGED = "203.0.113.7"
ACCESS, REFRESH = "access_token", "refresh_token"


# -- the stack: echo upstream <- gateway serve <- proxy ---------------------------------


@dataclass
class Stack:
    gateway: GatewayProcess
    proxy: Proxy

    def failure_report(self) -> str:
        return (
            f"--- gateway log\n{self.gateway.log.read_text()[-4000:]}\n"
            f"--- {self.proxy.name} output\n{self.proxy.log()[-3000:]}"
        )


def gateway_config(upstream_url: str, directory: Path, tokens: str = "") -> str:
    """conftest's config with sign-in, plus the docs' "behind a proxy" lines but `listen`."""
    lines = doc_block(GATEWAY_BEHIND_PROXY).splitlines()[1:]
    listen = [line for line in lines if line.startswith("listen:")]
    # the docs' proxy configurations point at this address; the test puts the gateway on a
    # free port and the proxies in front of that instead
    assert [line.split()[1] for line in listen] == [DOCS_GATEWAY]
    assert any(line.startswith("trusted_proxies: [127.0.0.1/32]") for line in lines)
    more = "".join(line + "\n" for line in lines if not line.startswith("listen:"))
    return config_text(
        upstream_url,
        extra=session_extra(directory, login="max_failures: 2", more=more),
        tokens=tokens,
    )


StackFactory = Callable[..., Stack]


@pytest.fixture
def stack(
    spawn_gateway: Callable[[str], GatewayProcess], upstream_url: str, tmp_path: Path
) -> Iterator[StackFactory]:
    proxies: list[Proxy] = []

    def start(name: str, block: str | None = None, tokens: str = "") -> Stack:
        gateway = spawn_gateway(gateway_config(upstream_url, tmp_path, tokens))
        port = int(gateway.url.rsplit(":", 1)[1])
        proxy = start_proxy(name, tmp_path / name, port, block)
        proxies.append(proxy)
        return Stack(gateway, proxy)

    yield start
    for proxy in proxies:
        proxy.stop()


def client_from(address: str) -> aiohttp.ClientSession:
    """A client whose connections come from `address` (any 127/8 address is loopback)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(local_addr=(address, 0), force_close=True),
        cookie_jar=aiohttp.CookieJar(unsafe=True),  # unsafe: keep cookies of an IP host
    )


async def sign_in(http: aiohttp.ClientSession, base: str, headers: dict[str, str]) -> None:
    response = await http.post(
        base + "/login",
        data={"username": "alice", "password": "wonderland", "next": "/api/whoami"},
        headers={"Origin": base, **headers},
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    assert response.headers["Location"] == "/api/whoami"
    names = sorted(c.partition("=")[0] for c in response.headers.getall("Set-Cookie"))
    assert names == [ACCESS, REFRESH]


def wait_for_line(log: Path, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first JSON log line `wanted` accepts; access lines are flushed on a timer."""
    deadline = time.monotonic() + 5
    while True:
        found = [line for line in log_lines(log) if wanted(line)]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no such line in {log}:\n{log.read_text()[-4000:]}")
        time.sleep(0.05)


def is_event(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda line: line.get("event") == name


def is_access(method: str, path: str) -> Callable[[dict[str, Any]], bool]:
    return lambda line: (
        line.get("logger") == "gateway.access"
        and line.get("method") == method
        and line.get("path") == path
    )


def docs_log_line(logger: str, marker: str) -> dict[str, Any]:
    """The example log line of deployment.md from `logger` that contains `marker`."""
    found: list[dict[str, Any]] = [
        json.loads(line)
        for block in code_blocks(DEPLOYMENT)
        for line in block.splitlines()
        if line.startswith("{") and f'"logger":"{logger}"' in line and marker in line
    ]
    assert len(found) == 1, f"{len(found)} example lines of {logger} with {marker}"
    return found[0]


def host_sent(proxy: Proxy) -> str:
    """The Host the client sent, as it must reach the gateway and the app.

    nginx's `$host` drops the port, as the docs say. On loopback a proxy that rewrote Host to
    the gateway's own `127.0.0.1:port` would still pass the cross-site check (ports are not
    compared): only this exact comparison catches it.
    """
    return "127.0.0.1" if proxy.name == NGINX else f"127.0.0.1:{proxy.port}"


def hops(values: list[str]) -> list[str]:
    return [hop.strip() for value in values for hop in value.split(",")]


# -- through each proxy -----------------------------------------------------------------


@pytest.mark.parametrize("name", PROXIES)
async def test_sign_in_and_the_client_address_through_the_proxy(
    stack: StackFactory, name: str
) -> None:
    s = stack(name)
    base = s.proxy.url
    # everything a client could forge about where it is and how it came
    forged = {"X-Forwarded-For": FORGED, "X-Real-IP": "203.0.113.8", "X-Forwarded-Proto": "https"}
    try:
        async with client_from(CLIENT_A) as http:
            await sign_in(http, base, forged)
            response = await http.get(base + "/api/whoami", headers=forged)
            assert response.status == 200, await response.text()
            seen = received(await response.json())
    except BaseException:
        print(s.failure_report())
        raise

    assert seen["x-user-id"] == ["alice"]
    # the app is told the address the proxy saw, never a forged one
    assert seen["x-real-ip"] == [CLIENT_A]
    forwarded = hops(seen["x-forwarded-for"])
    assert forwarded[-2:] == [CLIENT_A, "127.0.0.1"]  # the proxy saw A; the gateway the proxy
    if name == CADDY:
        assert forwarded == [CLIENT_A, "127.0.0.1"]  # Caddy drops an untrusted client's list
    else:
        assert forwarded == [FORGED, CLIENT_A, "127.0.0.1"]  # kept on the left, never believed
    assert seen["x-forwarded-proto"] == ["http"]  # the proxy's scheme, not the client's claim
    assert seen["host"] == [host_sent(s.proxy)]

    login = wait_for_line(s.gateway.log, is_event("login"))
    assert login["client"] == CLIENT_A, login
    access = wait_for_line(s.gateway.log, is_access("POST", "/login"))
    assert (access["status"], access["decision"]) == (303, "login")
    assert access["client"] == CLIENT_A, access
    # what `gateway sessions --user alice` shows
    with urllib.request.urlopen(s.gateway.admin_url + "/sessions?user=alice", timeout=5) as r:  # noqa: S310 - loopback
        sessions = json.loads(r.read())["sessions"]
    assert [row["client"] for row in sessions] == [CLIENT_A]


@pytest.mark.parametrize("name", PROXIES)
async def test_throttling_counts_each_client_behind_the_proxy(
    stack: StackFactory, name: str
) -> None:
    s = stack(name)  # max_failures: 2
    base = s.proxy.url

    async def attempt(source: str, forged: str | None = None, password: str = "wrong") -> int:
        headers = {"Origin": base}
        if forged is not None:
            headers["X-Forwarded-For"] = forged
        async with client_from(source) as http:
            response = await http.post(
                base + "/login",
                json={"username": "alice", "password": password},
                headers=headers,
                allow_redirects=False,
            )
            return response.status

    try:
        # a new forged address each time does not make a new client
        assert await attempt(CLIENT_A, FORGED) == 401
        assert await attempt(CLIENT_A, "198.51.100.1") == 401
        assert await attempt(CLIENT_A, "198.51.100.2") == 429
        assert await attempt(CLIENT_A) == 429
        # another client behind the same proxy has a counter of its own
        assert await attempt(CLIENT_B) == 401
        assert await attempt(CLIENT_B, password="wonderland") == 303
    except BaseException:
        print(s.failure_report())
        raise
    failed = [
        line["client"] for line in log_lines(s.gateway.log) if line.get("event") == "login_failed"
    ]
    assert failed == [CLIENT_A, CLIENT_A, CLIENT_B]
    # the docs' examples of those lines have the same fields
    example = docs_log_line("gateway.security", '"event":"login_failed"')
    actual = wait_for_line(s.gateway.log, is_event("login_failed"))
    assert set(example) == set(actual)
    example = docs_log_line("gateway.access", '"decision":"login_failed"')
    actual = wait_for_line(s.gateway.log, is_access("POST", "/login"))
    assert set(example) == set(actual)
    for key in ("method", "path", "status", "user", "route", "decision", "upstream_status"):
        assert example[key] == actual[key], key
    # and the access lines name the same clients as the events (the last one written, the
    # lines are flushed on a timer)
    wait_for_line(s.gateway.log, lambda line: line.get("decision") == "login")
    access = [
        (line["client"], line["status"])
        for line in log_lines(s.gateway.log)
        if is_access("POST", "/login")(line)
    ]
    expected = [(CLIENT_A, 401), (CLIENT_A, 401), (CLIENT_A, 429), (CLIENT_A, 429)]
    assert access == [*expected, (CLIENT_B, 401), (CLIENT_B, 303)]


@pytest.mark.parametrize("name", PROXIES)
async def test_a_websocket_through_the_proxy_and_closed_at_logout(
    stack: StackFactory, name: str
) -> None:
    # access_ttl 8s: an open WebSocket's session is re-checked every 2 s
    s = stack(name, tokens="access_ttl: 8s")
    base = s.proxy.url
    try:
        async with client_from(CLIENT_A) as http:
            await sign_in(http, base, {})
            async with http.ws_connect(
                "ws" + base.removeprefix("http") + "/ws",
                headers={"Origin": base},
                protocols=("chat",),
            ) as ws:
                hello = await ws.receive_json(timeout=5)
                assert hello["x-user-id"] == "alice"
                assert ACCESS not in (hello["cookie"] or "")
                await ws.send_str("through " + name)
                assert await ws.receive_str(timeout=5) == "echo:through " + name
                await ws.send_bytes(b"\x00\x01binary")
                assert await ws.receive_bytes(timeout=5) == b"\x00\x01binary"

                logout = await http.post(
                    base + "/logout", headers={"Origin": base}, allow_redirects=False
                )
                assert logout.status == 303
                closing = await ws.receive(timeout=15)
                assert closing.type == aiohttp.WSMsgType.CLOSE, closing
                assert closing.data == 1008  # "session ended", through the proxy
    except BaseException:
        print(s.failure_report())
        raise
    upgrade = wait_for_line(s.gateway.log, is_access("GET", "/ws"))
    assert (upgrade["status"], upgrade["decision"], upgrade["user"]) == (101, "allow", "alice")
    assert upgrade["client"] == CLIENT_A


# -- a browser ----------------------------------------------------------------------------


def _path(driver: webdriver.Chrome) -> str:
    return urlsplit(driver.current_url).path


def _wait(driver: webdriver.Chrome, what: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited 10s for {what}; at {driver.current_url}")
        time.sleep(0.05)


def _body(driver: webdriver.Chrome) -> str:
    elements = driver.find_elements(By.TAG_NAME, "body")
    return str(elements[0].text) if elements else ""


def browser_sign_in(driver: webdriver.Chrome, base: str) -> str:
    """Open a page, get the login form, submit it; the body of the page that follows."""
    driver.get(base + "/web/dashboard")
    _wait(driver, "the login form", lambda: _path(driver) == "/login")
    assert parse_qs(urlsplit(driver.current_url).query)["next"] == ["/web/dashboard"]
    driver.find_element(By.NAME, "username").send_keys("alice")
    driver.find_element(By.NAME, "password").send_keys("wonderland")
    form_page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    _wait(driver, "the page after the form", lambda: _stale(form_page))
    _wait(driver, "its body", lambda: bool(_body(driver)))
    return _body(driver)


def _stale(element: WebElement) -> bool:
    """The page the element was on is gone. Chromium says so as a stale element, or, when
    the new document is being built at that moment, as a node of another document."""
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        if "does not belong to the document" in str(exc):
            return True
        raise
    return False


@pytest.mark.parametrize("name", PROXIES)
async def test_a_browser_signs_in_through_the_proxy(stack: StackFactory, name: str) -> None:
    s = stack(name)
    with chromium() as driver:
        try:
            body = await asyncio.to_thread(browser_sign_in, driver, s.proxy.url)
            assert _path(driver) == "/web/dashboard", body
            cookies = {c["name"] for c in driver.get_cookies()}
        except BaseException:
            print(s.failure_report())
            raise
    seen = received(json.loads(body))  # the echo upstream's answer, as Chromium shows it
    assert seen["x-user-id"] == ["alice"]
    assert seen["host"] == [host_sent(s.proxy)]
    assert {ACCESS, REFRESH} <= cookies
    # the browser connects from 127.0.0.1, the proxy's address too: every hop is trusted,
    # and the client is the first one
    assert seen["x-real-ip"] == ["127.0.0.1"]
    login = wait_for_line(s.gateway.log, is_event("login"))
    assert login["client"] == "127.0.0.1"
    assert wait_for_line(s.gateway.log, is_access("POST", "/login"))["client"] == "127.0.0.1"


async def test_a_proxy_that_rewrites_host_gets_every_browser_sign_in_refused(
    stack: StackFactory,
) -> None:
    """docs/deployment.md's WRONG nginx site: the form is served, its POST is a 403 that says
    why, on the page and in the log."""
    s = stack(NGINX, block=doc_block(NGINX_WRONG))
    with chromium() as driver:
        try:
            body = await asyncio.to_thread(browser_sign_in, driver, s.proxy.url)
            path = _path(driver)
            form_again = bool(driver.find_elements(By.NAME, "password"))
            cookies = {c["name"] for c in driver.get_cookies()}
        except BaseException:
            print(s.failure_report())
            raise
    assert path == "/login"
    assert not cookies & {ACCESS, REFRESH}
    assert not [line for line in log_lines(s.gateway.log) if line.get("event") == "login"]
    refused = wait_for_line(s.gateway.log, is_access("POST", "/login"))
    assert (refused["status"], refused["decision"]) == (403, "cross_site")
    # the lines deployment.md shows for it are these lines
    example = docs_log_line("gateway.access", '"decision":"cross_site"')
    assert set(example) == set(refused)
    for key in ("method", "path", "status", "user", "route", "decision", "upstream_status"):
        assert example[key] == refused[key], key
    event = wait_for_line(s.gateway.log, is_event("cross_site"))
    assert (event["origin"], event["host"]) == (s.proxy.url, "gateway")
    assert (event["why"], event["level"]) == ("host_rewritten", "error")
    example = docs_log_line("gateway.security", '"event":"cross_site"')
    assert set(example) == set(event)
    browser_host = s.proxy.url.split("//")[1].split(":")[0]
    assert example["msg"].replace("app.example.com", browser_host) == event["msg"]
    # the page: the form again, saying what went wrong and whom to tell
    assert form_again
    assert "a proxy in front of the gateway changed the Host header" in body
    # a JSON sign-in from a page of the site (it sends Origin) is refused alike, in JSON
    async with client_from(CLIENT_A) as http:
        response = await http.post(
            s.proxy.url + "/login",
            json={"username": "alice", "password": "wonderland"},
            headers={"Origin": s.proxy.url},
            allow_redirects=False,
        )
        assert response.status == 403
        assert (await response.json())["error"] == "cross_site"
