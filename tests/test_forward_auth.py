"""Forward-auth with real outer proxies, run from the configurations in docs/forward-auth.md.

nginx (`auth_request`, written the way ingress-nginx generates it), Caddy (`forward_auth`) and
HAProxy (the docs' Lua action) each run as a plain process on a loopback port, from the code
blocks of docs/forward-auth.md (only addresses changed), in front of an app that records what
reaches it; a real `gateway serve` configured as the page says (`forward_auth`,
`trusted_proxies`, no upstream) only decides, and serves /login and /logout through the proxy.
Through each: every kind of route, the browser's way to the login page and back, API 401s,
identity headers and a client's forged copy, a refresh's two cookies, logout and `gateway
revoke`, and path tricks compared with the proxy mode's own decisions.

Clients connect from 127.0.0.2 and the proxies from 127.0.0.1, the one address in
`trusted_proxies`; the subrequest rule (SPEC 7.5: only trusted peers are answered) is checked
directly against the gateway from both.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from selenium import webdriver
from selenium.webdriver.common.by import By

from gateway.paths import normalize
from tests.conftest import (
    GatewayFactory,
    GatewayProcess,
    config_text,
    raw_request,
    session_extra,
)
from tests.forward_auth.support import (
    DOCS_GATEWAY,
    GATEWAY_CONFIG,
    App,
    Seen,
    docs,
    raw_get,
    start_proxy,
)
from tests.helpers import run_cli, set_cookies
from tests.ingress.support import CADDY, HAPROXY, NGINX, Proxy, chromium, replace_once

PROXIES = [NGINX, CADDY, HAPROXY]
CLIENT = "127.0.0.2"  # not in trusted_proxies; the proxies connect from 127.0.0.1
ACCESS, REFRESH = "access_token", "refresh_token"
HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
# a client's own identity headers: none may reach the app
FORGED = {
    "X-User-Id": "mallory",
    "X-User-Email": "mallory@example.net",
    "X-User-Name": "Mallory",
    "X-User-Roles": "admin",
}
UNAUTHORIZED = {"error": "unauthorized", "login": "/login"}  # the proxy mode's 401 body


# -- the stack: app <- proxy -> gateway serve (decisions, /login, /logout) -------------------


@dataclass
class Stack:
    gateway: GatewayProcess
    proxy: Proxy
    app: App

    @property
    def url(self) -> str:
        return self.proxy.url

    def failure_report(self) -> str:
        return (
            f"--- gateway log\n{self.gateway.log.read_text()[-4000:]}\n"
            f"--- {self.proxy.name} output\n{self.proxy.log()[-3000:]}"
        )

    def reached(self) -> list[Seen]:
        return list(self.app.received)


def gateway_config(directory: Path, tokens: str = "") -> str:
    """conftest's config with sign-in and BASE_ROUTES, with no upstream, plus the docs'
    forward-auth lines but `listen` (the test puts the gateway on a free port)."""
    lines = docs(GATEWAY_CONFIG).splitlines()[1:]
    listen = [line for line in lines if line.startswith("listen:")]
    assert [line.split()[1] for line in listen] == [DOCS_GATEWAY]
    assert any(line.startswith("trusted_proxies: [127.0.0.1/32]") for line in lines)
    assert any(line.startswith("forward_auth:") for line in lines)
    more = "".join(line + "\n" for line in lines if not line.startswith("listen:"))
    unused = "http://127.0.0.1:9"
    text = config_text(unused, extra=session_extra(directory, more=more), tokens=tokens)
    return replace_once(text, f"upstream: {unused}\n", "")  # the proxy carries the traffic


StackFactory = Callable[..., Stack]


@pytest.fixture
async def app(aiohttp_server: Any) -> tuple[App, TestServer]:
    recorder = App()
    server: TestServer = await aiohttp_server(recorder.application())
    return recorder, server


@pytest.fixture
def stack(
    spawn_gateway: Callable[[str], GatewayProcess],
    app: tuple[App, TestServer],
    tmp_path: Path,
) -> Iterator[StackFactory]:
    proxies: list[Proxy] = []
    recorder, server = app

    def start(name: str, cached: bool = False, tokens: str = "") -> Stack:
        gateway = spawn_gateway(gateway_config(tmp_path, tokens))
        port = int(gateway.url.rsplit(":", 1)[1])
        assert server.port is not None
        proxy = start_proxy(name, tmp_path / name, port, server.port, cached=cached)
        proxies.append(proxy)
        return Stack(gateway, proxy, recorder)

    yield start
    for proxy in proxies:
        proxy.stop()


def client(source: str = CLIENT) -> aiohttp.ClientSession:
    """No cookie jar: each request says which cookies it sends."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(local_addr=(source, 0), force_close=True),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


@dataclass
class Answer:
    status: int
    headers: Any
    text: str
    cookies: dict[str, dict[str, Any]]

    def json(self) -> Any:
        return json.loads(self.text)


async def get(
    http: aiohttp.ClientSession,
    url: str,
    cookies: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    method: str = "GET",
) -> Answer:
    sent = dict(headers or {})
    if cookies:
        sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    async with http.request(method, url, headers=sent, allow_redirects=False) as response:
        return Answer(
            response.status, response.headers, await response.text(), set_cookies(response)
        )


async def sign_in(
    http: aiohttp.ClientSession, base: str, user: str = "alice", password: str = "wonderland"
) -> dict[str, str]:
    """Through the proxy, to the gateway's /login; the two cookies it set."""
    async with http.post(
        base + "/login",
        data={"username": user, "password": password, "next": "/web/home"},
        headers={"Origin": base},
        allow_redirects=False,
    ) as response:
        assert response.status == 303, await response.text()
        assert response.headers["Location"] == "/web/home"
        found = {name: c["value"] for name, c in set_cookies(response).items()}
    assert sorted(found) == [ACCESS, REFRESH]
    return found


IDENTITY_HEADERS = ("X-User-Id", "X-User-Email", "X-User-Name", "X-User-Roles")  # the defaults


def identity(seen: Seen) -> dict[str, list[str]]:
    """The identity headers the app received, empty values left out."""
    return {name: [v for v in seen.values(name) if v] for name in IDENTITY_HEADERS}


def app_cookie_names(seen: Seen) -> set[str]:
    return {
        part.split("=", 1)[0].strip()
        for value in seen.values("Cookie")
        for part in value.split(";")
        if part.strip()
    }


def nobody(seen: Seen) -> None:
    assert identity(seen) == {name: [] for name in IDENTITY_HEADERS}, seen.headers


def signed_in_as(seen: Seen, user: str, roles: str) -> None:
    assert identity(seen) == {
        "X-User-Id": [user],
        "X-User-Email": [f"{user}@example.com"],
        "X-User-Name": [],  # the users file has no name
        "X-User-Roles": [roles],
    }, seen.headers


# -- through each proxy -----------------------------------------------------------------------


@pytest.mark.parametrize("name", PROXIES)
async def test_every_kind_of_route_through_the_proxy(stack: StackFactory, name: str) -> None:
    s = stack(name)
    base = s.url
    try:
        async with client() as http:
            bob = await sign_in(http, base, "bob", "builder")  # a viewer
            alice = await sign_in(http, base)  # an admin
            bob["theme"] = alice["theme"] = "dark"  # the app's own cookie
            anonymous = {"theme": "dark"}

            async def reaches_app(path: str, cookies: dict[str, str], **kw: Any) -> Seen:
                before = len(s.app.received)
                answer = await get(http, base + path, cookies, {**FORGED, **kw})
                assert answer.status == 200, (path, answer.status, answer.text)
                assert answer.json()["app"] is True
                assert len(s.app.received) == before + 1
                seen = s.app.received[-1]
                assert seen.raw_path == path
                assert "mallory" not in json.dumps(seen.headers).lower()
                # the app's cookie reaches it, the gateway's never do
                assert app_cookie_names(seen) == {"theme"}, seen.values("Cookie")
                return seen

            async def refused(path: str, cookies: dict[str, str], status: int, **kw: str) -> Answer:
                before = len(s.app.received)
                answer = await get(http, base + path, cookies, {**FORGED, **kw})
                assert answer.status == status, (path, answer.status, answer.text)
                assert len(s.app.received) == before, f"{path} reached the app"
                return answer

            # anonymous
            nobody(await reaches_app("/public/page", anonymous))
            nobody(await reaches_app("/maybe/page", anonymous))
            await refused("/internal/x", anonymous, 403)
            await refused("/internal/x", alice, 403)
            api = await refused("/api/items?page=2", anonymous, 401)
            assert api.json() == UNAUTHORIZED
            assert api.headers.get("WWW-Authenticate") == "Bearer"
            assert "Location" not in api.headers
            # the same path, a browser navigation: to the login page, and back after it
            page = await refused("/web/report?year=2026&q=a%20b", anonymous, 302, **HTML)
            target = "/web/report?year=2026&q=a%20b"
            assert page.headers["Location"] == "/login?next=" + quote(target, safe="/")
            assert parse_qs(urlsplit(page.headers["Location"]).query)["next"] == [target]
            # a required route, not a browser: 401 (JSON), a browser: the login page
            assert (await refused("/admin/x", anonymous, 401)).json() == UNAUTHORIZED
            await refused("/admin/x", anonymous, 302, **HTML)
            # an expired or forged token is no identity
            await refused("/api/items", {ACCESS: "not.a.jwt"}, 401)

            # signed in: identity headers from the gateway, roles decided by it
            signed_in_as(await reaches_app("/api/items", bob), "bob", "viewer")
            signed_in_as(await reaches_app("/maybe/page", bob), "bob", "viewer")
            nobody(await reaches_app("/public/page", bob))  # public: no identity, ever
            await refused("/admin/x", bob, 403)
            signed_in_as(await reaches_app("/admin/x", alice), "alice", "admin")
            signed_in_as(await reaches_app("/web/report", alice, **HTML), "alice", "admin")
            # a client's own description of its request changes nothing
            sneaky = {"X-Original-URL": f"{base}/public/x", "X-Forwarded-Uri": "/public/x"}
            await refused("/admin/x", anonymous, 401, **sneaky)
            await refused("/admin/x", bob, 403, **sneaky)
            nobody(await reaches_app("/public/page", anonymous, **sneaky))
            # the decision endpoint is not the proxy's to serve: nginx's location is
            # internal (404), Caddy asks about the path like any other and the app gets it
            before = len(s.app.received)
            direct = await get(http, base + "/_gateway/auth", alice)
            if name == NGINX:
                assert direct.status == 404
                assert len(s.app.received) == before
            else:
                assert direct.status == 200
                assert direct.json()["path"] == "/_gateway/auth"
            assert "X-User-Id" not in direct.headers
    except BaseException:
        print(s.failure_report())
        raise
    assert not [seen for seen in s.reached() if seen.raw_path.startswith("/internal")]


@pytest.mark.parametrize("name", PROXIES)
async def test_a_refresh_gets_both_rotated_cookies_to_the_browser(
    stack: StackFactory, name: str
) -> None:
    s = stack(name)
    base = s.url
    try:
        async with client() as http:
            first = await sign_in(http, base)
            # the access cookie has expired (the browser dropped it): only the refresh one
            answer = await get(http, base + "/api/me", {REFRESH: first[REFRESH]})
            assert answer.status == 200, answer.text
            signed_in_as(s.app.received[-1], "alice", "admin")
            assert sorted(answer.cookies) == [ACCESS, REFRESH], answer.headers
            rotated = {k: c["value"] for k, c in answer.cookies.items()}
            assert rotated[REFRESH] != first[REFRESH]
            assert len(answer.headers.getall("Set-Cookie")) == 2  # one each, no empty ones
            for cookie in answer.cookies.values():
                assert cookie["httponly"] is True
                assert cookie["path"] == "/"
            # the new access cookie alone is a session
            again = await get(http, base + "/api/me", {ACCESS: rotated[ACCESS]})
            assert again.status == 200
            assert "Set-Cookie" not in again.headers
            # a refresh on a request the app answers with an error: the cookies still come
            answer = await get(http, base + "/status/404", {REFRESH: rotated[REFRESH]})
            assert answer.status == 404
            assert answer.text == "from the app"
            assert sorted(answer.cookies) == [ACCESS, REFRESH], answer.headers
            # the rotated-out refresh token is refused, as in proxy mode
            stale = await get(http, base + "/api/me", {REFRESH: first[REFRESH]})
            assert stale.status == 401
    except BaseException:
        print(s.failure_report())
        raise


@pytest.mark.parametrize("name", PROXIES)
async def test_logout_and_revoke_take_effect_on_the_next_request(
    stack: StackFactory, name: str, secret: str
) -> None:
    s = stack(name)
    base = s.url
    try:
        async with client() as http:
            # logout, through the proxy, on the gateway's page
            cookies = await sign_in(http, base)
            assert (await get(http, base + "/api/me", cookies)).status == 200
            out = await get(http, base + "/logout", cookies, {"Origin": base}, method="POST")
            assert out.status == 303
            assert out.headers["Location"] == "/login"
            assert sorted(out.cookies) == [ACCESS, REFRESH]  # cleared
            assert (await get(http, base + "/api/me", cookies)).status == 401
            assert (await get(http, base + "/api/me", {REFRESH: cookies[REFRESH]})).status == 401
            again = await get(http, base + "/web/home", cookies, HTML)
            assert again.status == 302
            assert again.headers["Location"] == "/login?next=/web/home"

            # gateway revoke --user, which asks the gateway's admin port (memory store)
            cookies = await sign_in(http, base)
            assert (await get(http, base + "/api/me", cookies)).status == 200
            result = await asyncio.to_thread(
                run_cli,
                "revoke", "--user", "alice", "--config", str(s.gateway.config),
                secret=secret,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
            assert (await get(http, base + "/api/me", cookies)).status == 401
            assert (await get(http, base + "/api/me", {REFRESH: cookies[REFRESH]})).status == 401
    except BaseException:
        print(s.failure_report())
        raise


# -- path tricks: decided as the proxy mode decides them ------------------------------------

TRICKS = [
    "/public/page",  # a control: allowed
    "/public/..%2f..",
    "/public/..%2f../admin/x",
    "/public/%2e%2e/admin/x",
    "/public/%2E%2E/internal/x",
    "/public/../admin/x",
    "/%61dmin/x",
    "/%69nternal/x",
    "//admin",
    "//admin/x",
    "/ADMIN",
    "/ADMIN/x",
    "/public/x;/../../admin/x",
    "/public/%2561dmin",
    "/internal/../public/page",
    "/maybe/%2e%2e/admin/x",
]
REFUSED_AS_MALFORMED = 400  # the proxy mode's answer; forward-auth answers it 403 (SPEC 7.5)


@pytest.mark.parametrize("name", PROXIES)
async def test_path_tricks_are_decided_as_in_proxy_mode(
    stack: StackFactory, make_gateway: GatewayFactory, name: str
) -> None:
    s = stack(name)
    proxy_mode = await make_gateway()  # the same routes, in proxy mode
    outcomes = []
    try:
        for accept in ({}, HTML):
            for path in TRICKS:
                expected = await raw_request(proxy_mode, path, headers=accept)
                before = len(s.app.received)
                got = await raw_get(s.proxy.port, path, accept)
                reached = s.app.received[before:]
                outcomes.append((path, accept != {}, expected.status, got.status))
                if expected.status == REFUSED_AS_MALFORMED:
                    # the gateway refuses the description (403); nginx may refuse first (400)
                    assert got.status in (400, 403), (path, got.status, got.body)
                    assert not reached, path
                elif expected.status in (302, 401, 403):
                    assert got.status == expected.status, (path, got.status, got.body)
                    assert not reached, path
                    if expected.status == 302:
                        assert got.header("Location") == expected.headers["location"]
                else:
                    assert expected.status == 200, (path, expected.status)
                    assert got.status == 200, (path, got.status, got.body)
                    resolved = json.loads(expected.body)["path"]  # what proxy mode forwards
                    if name == NGINX:  # proxy_pass with a URI: nginx's resolved path
                        assert [seen.raw_path for seen in reached] == [resolved], path
                    else:  # Caddy forwards the raw path, which resolves to the same
                        assert [seen.raw_path for seen in reached] == [path]
                        assert normalize(path) == resolved
    except BaseException:
        print("\n".join(map(str, outcomes)))
        print(s.failure_report())
        raise
    # an anonymous client never got an admin or internal page from the app: through nginx
    # however the app reads the path (as given, decoded, resolved); through Caddy, which
    # forwards the raw path, once the app resolves it (docs/forward-auth.md says so)
    for seen in s.reached():
        raw = seen.raw_path
        readings = [raw, unquote(raw), normalize(raw)] if name == NGINX else [normalize(raw)]
        for reading in readings:
            assert "admin" not in reading.lower() and "internal" not in reading.lower(), raw


# -- a browser ------------------------------------------------------------------------------


def _path(driver: webdriver.Chrome) -> str:
    return urlsplit(driver.current_url).path


def _wait(driver: webdriver.Chrome, what: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited 10s for {what}; at {driver.current_url}")
        time.sleep(0.05)


def _app_page(driver: webdriver.Chrome) -> dict[str, Any]:
    """The app's JSON echo, as Chromium shows it."""
    _wait(driver, "the app's page", lambda: '"app"' in driver.page_source)
    text = driver.find_element(By.TAG_NAME, "body").text
    return dict(json.loads(text))


def _who(page: dict[str, Any]) -> list[str]:
    return [v for k, v in page["headers"] if k.lower() == "x-user-id" and v]


def browser_session(driver: webdriver.Chrome, base: str) -> dict[str, Any]:
    """Sign in from a page, refresh with only the refresh cookie, log out; what happened."""
    out: dict[str, Any] = {}
    driver.get(base + "/web/dashboard?tab=1")
    _wait(driver, "the login form", lambda: _path(driver) == "/login")
    out["next"] = parse_qs(urlsplit(driver.current_url).query)["next"]
    driver.find_element(By.NAME, "username").send_keys("alice")
    driver.find_element(By.NAME, "password").send_keys("wonderland")
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    _wait(driver, "the page after the form", lambda: _path(driver) == "/web/dashboard")
    page = _app_page(driver)
    out["after_sign_in"] = (page["path"], _who(page))
    before = {c["name"]: c["value"] for c in driver.get_cookies()}
    out["cookies"] = sorted(before)
    # the access cookie is gone (expired): the next page refreshes, both cookies come back new
    driver.delete_cookie(ACCESS)
    driver.get(base + "/web/other")
    page = _app_page(driver)
    out["after_refresh"] = (page["path"], _who(page))
    after = {c["name"]: c["value"] for c in driver.get_cookies()}
    out["refreshed"] = sorted(n for n in (ACCESS, REFRESH) if after.get(n, before[n]) != before[n])
    out["refreshed_present"] = sorted(n for n in (ACCESS, REFRESH) if n in after)
    # logout, a link to the gateway's page: the next page is the login form again
    driver.get(base + "/logout")
    _wait(driver, "the login page after logout", lambda: _path(driver) == "/login")
    driver.get(base + "/web/dashboard")
    _wait(driver, "the login page", lambda: _path(driver) == "/login")
    out["after_logout"] = _path(driver)
    return out


@pytest.mark.parametrize("name", PROXIES)
async def test_a_browser_signs_in_refreshes_and_logs_out_through_the_proxy(
    stack: StackFactory, name: str
) -> None:
    s = stack(name)
    with chromium() as driver:
        try:
            out = await asyncio.to_thread(browser_session, driver, s.url)
        except BaseException:
            print(s.failure_report())
            raise
    assert out["next"] == ["/web/dashboard?tab=1"]
    assert out["after_sign_in"] == ("/web/dashboard?tab=1", ["alice"])
    assert {ACCESS, REFRESH} <= set(out["cookies"])
    assert out["after_refresh"] == ("/web/other", ["alice"])
    assert out["refreshed_present"] == [ACCESS, REFRESH]
    assert out["refreshed"] == [ACCESS, REFRESH]  # both new values reached the browser
    assert out["after_logout"] == "/login"


# -- only trusted proxies may ask ----------------------------------------------------------


async def test_a_subrequest_from_outside_trusted_proxies_is_403(
    spawn_gateway: Callable[[str], GatewayProcess], tmp_path: Path
) -> None:
    gateway = spawn_gateway(gateway_config(tmp_path))
    endpoint = gateway.url + "/_gateway/auth"
    host = "app.example.com"
    forwarded = {
        "X-Forwarded-Method": "GET",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": host,
        "X-Forwarded-Uri": "/api/items",
    }
    original = {"X-Original-Method": "GET", "X-Original-URL": f"https://{host}/api/items"}
    claims_to_be_the_proxy = {
        "X-Forwarded-For": "127.0.0.1",
        "X-Real-IP": "127.0.0.1",
        "Forwarded": "for=127.0.0.1;proto=https",
    }
    async with client("127.0.0.1") as proxy:  # the trusted proxy's address
        cookies = await sign_in_directly(proxy, gateway.url)
        # the trusted peer, with one description: decided (so the refusals below mean something)
        for description in (forwarded, original):
            answer = await get(proxy, endpoint, cookies, description)
            assert answer.status == 200, answer.text
            assert answer.headers["X-User-Id"] == "alice"
        # the trusted peer, with both descriptions: 403
        both = await get(proxy, endpoint, cookies, {**forwarded, **original})
        assert both.status == 403
        assert not both.headers.get("X-User-Id")
        # the two headers that each locate the request, alone together: 403 (SPEC 7.5)
        mixed = {"X-Forwarded-Uri": "/api/items", "X-Original-URL": original["X-Original-URL"]}
        assert (await get(proxy, endpoint, cookies, mixed)).status == 403

    async with client(CLIENT) as outsider:
        for description in (
            {},
            forwarded,
            original,
            {**forwarded, **original},
            {**forwarded, "X-Forwarded-Uri": "/public/page"},
            {**original, "X-Original-URL": f"https://{host}/public/page"},
        ):
            for extra in ({}, claims_to_be_the_proxy):
                for query in ("", "?redirect=1"):
                    answer = await get(
                        outsider, endpoint + query, cookies, {**description, **extra, **HTML}
                    )
                    assert answer.status == 403, (description, extra, answer.status)
                    assert answer.json()["error"] == "forbidden"
                    assert not answer.headers.get("X-User-Id")
                    assert "Location" not in answer.headers
                    assert "Set-Cookie" not in answer.headers
        # and a refresh is not performed for an outsider either
        answer = await get(outsider, endpoint, {REFRESH: cookies[REFRESH]}, forwarded)
        assert answer.status == 403
        assert "Set-Cookie" not in answer.headers


async def sign_in_directly(http: aiohttp.ClientSession, base: str) -> dict[str, str]:
    async with http.post(
        base + "/login",
        data={"username": "alice", "password": "wonderland"},
        headers={"Origin": base},
        allow_redirects=False,
    ) as response:
        assert response.status == 303, await response.text()
        return {name: c["value"] for name, c in set_cookies(response).items()}


# -- a cached decision: the documented trade-off ------------------------------------------


async def test_nginx_caching_the_decision_delays_logout_by_the_cache_time(
    stack: StackFactory,
) -> None:
    # no grace: presenting a replaced refresh token again is always a reuse, refused
    s = stack(NGINX, cached=True, tokens="refresh_reuse_grace: 0s")
    base = s.url
    try:
        async with client() as http:
            cookies = await sign_in(http, base)
            cached_at = time.monotonic()
            assert (await get(http, base + "/api/me", cookies)).status == 200
            out = await get(http, base + "/logout", cookies, {"Origin": base}, method="POST")
            assert out.status == 303
            # within the cache time: the cached 200 still lets the ended session through
            late = await get(http, base + "/api/me", cookies)
            assert late.status == 200
            assert s.app.received[-1].raw_path == "/api/me"
            # another path was never asked about: not in the cache, refused
            assert (await get(http, base + "/api/other", cookies)).status == 401
            # nginx counts whole seconds: "1s" keeps an answer until the end of the next second
            await asyncio.sleep(max(0.0, cached_at + 2.1 - time.monotonic()))
            assert (await get(http, base + "/api/me", cookies)).status == 401

            # a refresh is never cached: the same refresh cookie twice is a reuse, refused
            cookies = await sign_in(http, base)
            first = await get(http, base + "/api/me", {REFRESH: cookies[REFRESH]})
            assert first.status == 200
            assert sorted(first.cookies) == [ACCESS, REFRESH]
            second = await get(http, base + "/api/me", {REFRESH: cookies[REFRESH]})
            assert second.status == 401
            assert not second.cookies.get(ACCESS, {}).get("value")
    except BaseException:
        print(s.failure_report())
        raise
