"""Headers that rewrite a request never reach the upstream (SPEC 7.1).

On every route, public ones included, a client's method overrides, URL
overrides, client-address headers and identity headers are removed in every
spelling (any letter case, `_` for `-`, as CGI-style servers read them the
same). The gateway sets X-Real-IP itself, also on WebSocket handshakes, and
forwards the client's Host unless `preserve_host: false`.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import (
    Client,
    GatewayFactory,
    config_text,
    gateway_client,
    mint,
    raw_request,
    received,
    write_config,
)

METHOD_OVERRIDES = ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"]
URL_OVERRIDES = [
    "X-Original-URL", "X-Original-URI", "X-Rewrite-URL", "X-Forwarded-Uri", "X-Forwarded-Path",
    "X-Forwarded-Prefix", "X-Envoy-Original-Path",
]  # fmt: skip
CLIENT_ADDRESS = [
    "X-Real-IP", "True-Client-IP", "X-Client-IP", "CF-Connecting-IP", "Fastly-Client-IP",
    "X-Cluster-Client-IP",
]  # fmt: skip
IDENTITY = ["X-User-Id", "X-User-Roles", "X-User-Email", "X-User-Anything", "Remote-User"]
STRIPPED = METHOD_OVERRIDES + URL_OVERRIDES + CLIENT_ADDRESS + IDENTITY
IDENTITY_CONFIG = "identity_headers:\n  X-User-Id: sub\n  X-User-Roles: roles\n  Remote-User: sub\n"
ROUTES = ["/public/x", "/maybe/x", "/api/x"]  # public, optional (anonymous), required


def canonical(name: str) -> str:
    return name.lower().replace("_", "-")


def forged_headers() -> dict[str, str]:
    return {name: f"forged-{i}" for i, name in enumerate(STRIPPED)}


def assert_clean(headers: list[list[str]] | list[tuple[str, str]], client_ip: str) -> None:
    """Nothing forged survived, and X-Real-IP is the gateway's one value."""
    assert "forged" not in json.dumps(headers), headers
    # the gateway sets these itself (the identity ones only for a signed-in user)
    own = {"x-real-ip", "x-user-id", "x-user-roles", "remote-user"}
    stripped = {canonical(n) for n in STRIPPED} - own
    survivors = [name for name, _ in headers if canonical(name) in stripped]
    assert survivors == [], survivors
    real_ip = [(name, value) for name, value in headers if canonical(name) == "x-real-ip"]
    assert [value for _, value in real_ip] == [client_ip], headers
    assert all("_" not in name for name, _ in real_ip), real_ip


def spelling(name: str) -> st.SearchStrategy[str]:
    """Any letter case per letter, `-` or `_` per separator."""
    choices = [
        st.sampled_from([ch.lower(), ch.upper()])
        if ch.isalpha()
        else st.sampled_from(["-", "_"])
        if ch == "-"
        else st.just(ch)
        for ch in name
    ]
    return st.tuples(*choices).map("".join)


async def test_rewriting_headers_never_reach_the_upstream_on_any_route(
    make_gateway: GatewayFactory, secret: str
) -> None:
    client = await make_gateway(extra=IDENTITY_CONFIG)
    token = mint(secret, roles=["viewer"])
    for path in ROUTES:
        headers = {**forged_headers(), "X-App-Header": "kept"}
        if path == "/api/x":
            headers["Cookie"] = f"access_token={token}"
        response = await raw_request(client, path, headers=headers)
        assert response.status == 200, (path, response.body)
        payload = json.loads(response.body)
        assert_clean(payload["headers"], "127.0.0.1")
        seen = received(payload)
        assert seen["x-app-header"] == ["kept"]  # an app's own header passes
        if path == "/api/x":
            assert seen["x-user-id"] == ["alice"] and seen["remote-user"] == ["alice"]
        else:
            assert "x-user-id" not in seen and "remote-user" not in seen


async def test_no_spelling_of_a_stripped_header_survives(
    make_gateway: GatewayFactory, secret: str
) -> None:
    client = await make_gateway(extra=IDENTITY_CONFIG)
    cookie = f"access_token={mint(secret)}"
    loop = asyncio.get_running_loop()

    @settings(max_examples=60, deadline=None, database=None)
    @given(st.tuples(*(spelling(name) for name in STRIPPED)), st.sampled_from(ROUTES))
    def check(spellings: tuple[str, ...], path: str) -> None:
        headers = {spelled: f"forged-{i}" for i, spelled in enumerate(spellings)}
        if path == "/api/x":
            headers["Cookie"] = cookie
        future = asyncio.run_coroutine_threadsafe(raw_request(client, path, headers=headers), loop)
        response = future.result(timeout=30)
        assert response.status == 200, (path, response.body)
        assert_clean(json.loads(response.body)["headers"], "127.0.0.1")

    # Hypothesis drives from a worker thread; the requests run on this loop, by the servers
    await loop.run_in_executor(None, check)


@pytest.mark.parametrize(
    ("forwarded_for", "real_ip"),
    [
        (None, "127.0.0.1"),
        ("203.0.113.9", "203.0.113.9"),
        ("203.0.113.9, 198.51.100.7", "198.51.100.7"),  # the left one is the client's word
        ("203.0.113.9, 10.1.2.3", "203.0.113.9"),  # 10/8 is a trusted hop
    ],
)
async def test_x_real_ip_is_the_client_behind_trusted_proxies(
    make_gateway: GatewayFactory, forwarded_for: str | None, real_ip: str
) -> None:
    client = await make_gateway(extra="trusted_proxies: [127.0.0.1/32, 10.0.0.0/8]\n")
    headers = {"X-Real-IP": "6.6.6.6", "True-Client-IP": "6.6.6.6", "X-Client-IP": "6.6.6.6"}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    for path in ("/public/x", "/maybe/x"):
        response = await client.get(path, headers=headers)
        seen = received(await response.json())
        assert seen["x-real-ip"] == [real_ip]
        assert "6.6.6.6" not in json.dumps(seen)


async def test_x_real_ip_ignores_forwarded_for_from_an_untrusted_peer(
    make_gateway: GatewayFactory,
) -> None:
    client = await make_gateway()
    response = await client.get(
        "/public/x", headers={"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9"}
    )
    assert received(await response.json())["x-real-ip"] == ["127.0.0.1"]


# -- WebSocket handshakes ------------------------------------------------------------------


async def _report_headers(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_json({"headers": [[k, v] for k, v in request.headers.items()]})
    await ws.close()
    return ws


@pytest.fixture
async def ws_upstream(aiohttp_server: Any) -> TestServer:
    """A WebSocket app that reports every header of the handshake it received."""
    app = web.Application()
    app.router.add_get("/{tail:.*}", _report_headers)
    server: TestServer = await aiohttp_server(app)
    return server


async def _handshake_headers(client: Client, path: str, headers: dict[str, str]) -> list[Any]:
    async with client.ws_connect(path, headers=headers) as ws:
        message = await ws.receive_json(timeout=10)
    headers_seen: list[Any] = message["headers"]
    return headers_seen


@pytest.mark.parametrize("path", ["/public/ws", "/api/ws"])
async def test_websocket_handshakes_are_cleaned_and_carry_x_real_ip(
    make_gateway: GatewayFactory, ws_upstream: TestServer, secret: str, path: str
) -> None:
    url = str(ws_upstream.make_url("")).rstrip("/")
    client = await make_gateway(extra=IDENTITY_CONFIG, upstream_url=url)
    headers = {**forged_headers(), "X_Real_IP": "forged-x", "Host": "app.example:8443"}
    if path == "/api/ws":
        headers["Cookie"] = f"access_token={mint(secret)}"
    seen = await _handshake_headers(client, path, headers)
    assert_clean(seen, "127.0.0.1")
    hosts = [value for name, value in seen if name.lower() == "host"]
    assert hosts == ["app.example:8443"]  # preserve_host applies to handshakes too


# -- Host ----------------------------------------------------------------------------------


async def test_the_client_host_reaches_the_upstream_by_default(
    make_gateway: GatewayFactory,
) -> None:
    client = await make_gateway()
    for path in ("/public/x", "/maybe/x"):
        response = await raw_request(client, path, headers={"X-Forwarded-Host": "evil.example"})
        seen = received(json.loads(response.body))
        own = f"127.0.0.1:{client.port}"  # the Host raw_request sends
        assert seen["host"] == [own]
        assert seen["x-forwarded-host"] == [own]
    answer = await client.get("/public/x", headers={"Host": "app.example:8443"})
    seen = received(await answer.json())
    assert seen["host"] == ["app.example:8443"]
    assert seen["x-forwarded-host"] == ["app.example:8443"]


async def test_preserve_host_false_sends_the_upstream_host(
    upstream: TestServer, tmp_path: Path, secret: str
) -> None:
    url = str(upstream.make_url("")).rstrip("/")
    config = write_config(tmp_path, config_text(url, extra="preserve_host: false\n"))
    client = await gateway_client(config)
    try:
        response = await client.get(
            "/public/x", headers={"Host": "app.example:8443", "X-Forwarded-Host": "evil.example"}
        )
        seen = received(await response.json())
        assert seen["host"] == [f"127.0.0.1:{upstream.port}"]
        assert seen["x-forwarded-host"] == ["app.example:8443"]
    finally:
        await client.close()


async def test_preserve_host_false_on_a_websocket_handshake(
    ws_upstream: TestServer, tmp_path: Path, secret: str
) -> None:
    url = str(ws_upstream.make_url("")).rstrip("/")
    config = write_config(tmp_path, config_text(url, extra="preserve_host: false\n"))
    client = await gateway_client(config)
    try:
        seen = await _handshake_headers(client, "/public/ws", {"Host": "app.example:8443"})
    finally:
        await client.close()
    hosts = [value for name, value in seen if name.lower() == "host"]
    assert hosts == [f"127.0.0.1:{ws_upstream.port}"]
    forwarded = [value for name, value in seen if name.lower() == "x-forwarded-host"]
    assert forwarded == ["app.example:8443"]


async def test_headers_that_only_look_alike_pass_through(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()
    kept = {"X-Original-Lang": "fr", "X-Real-IPv6-Pref": "1", "X-Forwarded-Uri-Note": "n"}
    response = await client.get("/public/x", headers=kept)
    seen = received(await response.json())
    for name, value in kept.items():
        assert seen[name.lower()] == [value], name
