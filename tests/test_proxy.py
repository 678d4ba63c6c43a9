"""What reaches the upstream and what comes back: header hygiene, cookies, errors, WebSocket."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import Client, GatewayFactory, free_port, mint, raw_request, received

FORGED = {
    "X-User-Id": "mallory",
    "x-user-roles": "admin",
    "X-USER-EMAIL": "mallory@evil",
    "X-User-Anything-Else": "forged",
}


@pytest.mark.parametrize("path", ["/public/x", "/api/x", "/maybe/x"])
async def test_forged_identity_headers_never_reach_the_upstream(
    make_gateway: GatewayFactory, secret: str, path: str
) -> None:
    client = await make_gateway()
    for cookies in ({}, {"access_token": mint(secret, roles=["viewer"])}):
        response = await client.get(path, headers=FORGED, cookies=cookies)
        if not cookies and path == "/api/x":
            assert response.status == 401
            continue
        seen = received(await response.json())
        assert "mallory" not in json.dumps(seen)
        assert "x-user-anything-else" not in seen
        if cookies and path != "/public/x":
            assert seen["x-user-id"] == ["alice"]
            assert seen["x-user-roles"] == ["viewer"]
        else:
            assert "x-user-id" not in seen


@pytest.mark.parametrize("path", ["/public/x", "/api/x"])
async def test_underscore_spellings_of_identity_headers_are_stripped(
    make_gateway: GatewayFactory, secret: str, path: str
) -> None:
    """PHP, WSGI and Rack map X_User_Id and X-User-Id to the same HTTP_X_USER_ID."""
    client = await make_gateway(extra="identity_headers:\n  Remote-User: sub\n")
    forged = {
        "X_User_Id": "mallory", "X_USER_ROLES": "admin", "Remote_User": "mallory",
        "X_Forwarded_For": "10.9.9.9", "X_Request_Id": "forged", "My_App_Header": "kept",
    }  # fmt: skip
    response = await client.get(path, headers=forged, cookies={"access_token": mint(secret)})
    seen = received(await response.json())
    assert "mallory" not in json.dumps(seen) and "10.9.9.9" not in json.dumps(seen)
    assert not {k for k in seen if "_" in k} - {"my_app_header"}
    assert seen["my_app_header"] == ["kept"]  # an app's own underscore header passes


async def test_custom_identity_header_names_are_stripped_too(
    make_gateway: GatewayFactory, secret: str
) -> None:
    client = await make_gateway(extra="identity_headers:\n  Remote-User: sub\n  X-Email: email\n")
    response = await client.get(
        "/public/x", headers={"Remote-User": "mallory", "X-Email": "m@evil", "X-User-Id": "m"}
    )
    seen = received(await response.json())
    assert not {"remote-user", "x-email", "x-user-id"} & seen.keys()
    response = await client.get("/api/x", cookies={"access_token": mint(secret)})
    seen = received(await response.json())
    assert seen["remote-user"] == ["alice"]
    assert seen["x-email"] == ["alice@example.com"]


async def test_claim_with_crlf_cannot_inject_a_header(
    make_gateway: GatewayFactory, secret: str
) -> None:
    client = await make_gateway()
    evil = mint(secret, sub="alice\r\nX-Injected: yes", name="Zoë\nX-Injected: 2")
    response = await client.get("/api/x", cookies={"access_token": evil})
    assert response.status == 200
    seen = received(await response.json())
    assert "x-injected" not in seen
    assert seen["x-user-id"] == ["alice%0D%0AX-Injected: yes"]
    assert seen["x-user-name"] == ["Zo%C3%AB%0AX-Injected: 2"]


async def test_non_ascii_claim_is_percent_encoded_utf8(
    make_gateway: GatewayFactory, secret: str
) -> None:
    client = await make_gateway()
    token = mint(secret, name="José Müller 100%", email="plain@example.com")
    seen = received(await (await client.get("/api/x", cookies={"access_token": token})).json())
    assert seen["x-user-name"] == ["Jos%C3%A9 M%C3%BCller 100%25"]
    assert seen["x-user-email"] == ["plain@example.com"]


async def test_gateway_cookies_removed_other_cookies_untouched(
    make_gateway: GatewayFactory, secret: str
) -> None:
    client = await make_gateway()
    token = mint(secret)
    cookie = f"theme=dark; access_token={token}; refresh_token=r.r.r; session=a=b=c; lang=en"
    response = await raw_request(client, "/api/x", headers={"Cookie": cookie})
    seen = received(json.loads(response.body))
    assert seen["cookie"] == ["theme=dark; session=a=b=c; lang=en"]
    assert token not in response.body.decode()


async def test_cookie_header_dropped_when_only_gateway_cookies(
    make_gateway: GatewayFactory, secret: str
) -> None:
    client = await make_gateway()
    response = await client.get("/api/x", cookies={"access_token": mint(secret)})
    assert "cookie" not in received(await response.json())


async def test_bearer_token_of_the_gateway_is_not_forwarded(
    make_gateway: GatewayFactory, secret: str
) -> None:
    client = await make_gateway()
    token = mint(secret)
    response = await client.get("/api/x", headers={"Authorization": f"Bearer {token}"})
    assert "authorization" not in received(await response.json())
    public = await client.get("/public/x", headers={"Authorization": "Bearer app-own-key"})
    assert received(await public.json())["authorization"] == ["Bearer app-own-key"]


async def test_forwarded_headers_and_request_id(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()
    response = await client.get(
        "/public/x",
        headers={
            "X-Forwarded-For": "203.0.113.7",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "evil.example",
            "Forwarded": "for=1.2.3.4",
            "X-Request-Id": "abc-123",
        },
    )
    seen = received(await response.json())
    assert seen["x-forwarded-for"] == ["203.0.113.7, 127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == [f"127.0.0.1:{client.port}"]
    assert "forwarded" not in seen
    assert seen["x-request-id"] == ["abc-123"]
    assert response.headers["X-Request-Id"] == "abc-123"


@pytest.mark.parametrize("body", [b"", b"hello"])
async def test_the_gateway_adds_no_client_headers_of_its_own(
    make_gateway: GatewayFactory, body: bytes
) -> None:
    """aiohttp's client would add User-Agent, Accept, Accept-Encoding and a body's
    Content-Type; the upstream must see only what the client sent (and the gateway's own
    forwarding headers)."""
    client = await make_gateway()
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    head = f"POST /public/x HTTP/1.1\r\nHost: 127.0.0.1:{client.port}\r\nConnection: close\r\n"
    writer.write((head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
    await writer.drain()
    data = await reader.read()
    writer.close()
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    seen = received(json.loads(data.partition(b"\r\n\r\n")[2]))
    for name in ("user-agent", "accept", "accept-encoding", "content-type"):
        assert name not in seen, (name, seen[name])


async def test_insane_request_id_is_replaced(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()
    response = await client.get("/public/x", headers={"X-Request-Id": "a b <script>" + "x" * 200})
    generated = received(await response.json())["x-request-id"][0]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert response.headers["X-Request-Id"] == generated


async def test_hop_by_hop_headers_removed_both_ways(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()
    response = await raw_request(
        client,
        "/public/x",
        headers={
            "Connection": "close, X-Client-Hop",
            "X-Client-Hop": "secret",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Authorization": "Basic abc",
            "Upgrade": "h2c",
        },
    )
    seen = received(json.loads(response.body))
    for name in ("x-client-hop", "keep-alive", "te", "proxy-authorization", "upgrade"):
        assert name not in seen, name
    back = await client.get("/public/hop")
    assert back.status == 200
    assert "X-Private-Hop" not in back.headers
    assert "Keep-Alive" not in back.headers


async def test_every_upstream_set_cookie_reaches_the_client(make_gateway: GatewayFactory) -> None:
    client = await make_gateway(routes="routes: []\ndefault: public\n")
    response = await client.get("/set-cookies")
    assert response.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly"]


async def test_upstream_cookies_are_not_shared_between_clients(
    make_gateway: GatewayFactory,
) -> None:
    client = await make_gateway(routes="routes: []\ndefault: public\n")
    await client.get("/set-cookies")
    client.session.cookie_jar.clear()
    response = await client.get("/x")
    assert "cookie" not in received(await response.json())


async def test_request_body_and_method_pass_through(make_gateway: GatewayFactory) -> None:
    client = await make_gateway(routes="routes: []\ndefault: public\n")
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        response = await client.request(method, "/x", data=b"y" * 100_000)
        payload = await response.json()
        assert payload["method"] == method
        assert payload["body_length"] == 100_000


async def test_upstream_down_gives_502(make_gateway: GatewayFactory) -> None:
    client = await make_gateway(upstream_url=f"http://127.0.0.1:{free_port()}")
    response = await client.get("/public/x")
    assert response.status == 502
    assert await response.json() == {
        "error": "bad_gateway",
        "message": "The application is not reachable.",
    }
    page = await client.get("/public/x", headers={"Accept": "text/html"})
    assert page.status == 502
    assert "Traceback" not in await page.text()


async def test_slow_upstream_gives_504(make_gateway: GatewayFactory) -> None:
    client = await make_gateway(routes="routes: []\ndefault: public\n")
    response = await client.get("/slow?s=3")
    assert response.status == 504
    assert (await response.json())["error"] == "gateway_timeout"


async def test_websocket_is_authenticated_then_proxied(
    make_gateway: GatewayFactory, secret: str
) -> None:
    routes = "routes:\n  - path: /ws\ndefault: public\n"
    client = await make_gateway(routes=routes)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/ws")
    assert refused.value.status == 401
    token = mint(secret)
    async with client.ws_connect(
        "/ws",
        headers={"Cookie": f"access_token={token}; other=1", "X-User-Id": "mallory"},
        protocols=("chat",),
    ) as ws:
        assert ws.protocol == "chat"
        hello = await ws.receive_json(timeout=5)
        assert hello == {"x-user-id": "alice", "cookie": "other=1"}
        await ws.send_str("hi")
        assert (await ws.receive(timeout=5)).data == "echo:hi"
        await ws.send_bytes(b"\x00\x01")
        assert (await ws.receive(timeout=5)).data == b"\x00\x01"


@pytest.mark.parametrize("query", ["", "?chunked=1"])
async def test_upstream_dying_mid_body_is_not_passed_off_as_complete(
    make_gateway: GatewayFactory, query: str
) -> None:
    client = await make_gateway(routes="routes: []\ndefault: public\n")
    response = await client.get("/broken" + query)
    assert response.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()
    # and the gateway keeps serving
    assert (await client.get("/x")).status == 200


async def test_websocket_handshake_to_a_silent_upstream_gives_504(
    make_gateway: GatewayFactory, secret: str
) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    silent = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        client = await make_gateway(
            routes="routes: []\ndefault: public\n", upstream_url=f"http://127.0.0.1:{port}"
        )
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect("/ws")
        assert refused.value.status == 504
    finally:
        for writer in accepted:
            writer.close()
        silent.close()
        await silent.wait_closed()


async def _expect_exchange(
    client: Client, path: str, body: bytes, expect: str = "100-continue", cookie: str = ""
) -> tuple[bytes, bytes]:
    """Send headers only, read the interim answer (or the final one), then the body."""
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        f"Expect: {expect}\r\nConnection: close\r\n{cookie}\r\n"
    )
    writer.write(head.encode())
    await writer.drain()
    first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    rest = b""
    if first.startswith(b"HTTP/1.1 100"):
        writer.write(body)
        await writer.drain()
        rest = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    await writer.wait_closed()
    return first, rest


async def test_expect_100_continue_is_answered_after_auth(
    make_gateway: GatewayFactory, secret: str
) -> None:
    client = await make_gateway()
    cookie = f"Cookie: access_token={mint(secret)}\r\n"
    first, rest = await _expect_exchange(client, "/api/x", b"b" * 5000, cookie=cookie)
    assert first.startswith(b"HTTP/1.1 100 Continue")
    assert rest.startswith(b"HTTP/1.1 200")
    payload = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert payload["body_length"] == 5000
    assert "expect" not in received(payload)
    # unauthenticated: the final answer comes first, the body is never asked for
    first, _ = await _expect_exchange(client, "/api/x", b"b" * 5000)
    assert first.startswith(b"HTTP/1.1 401")


async def test_unknown_expectation_gets_417(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()
    first, _ = await _expect_exchange(client, "/public/x", b"", expect="something-else")
    assert first.startswith(b"HTTP/1.1 417")


@pytest.mark.parametrize("code", [200, 201, 204, 301, 302, 304, 404, 418, 500, 503])
async def test_upstream_status_codes_pass_through(make_gateway: GatewayFactory, code: int) -> None:
    client = await make_gateway(routes="routes: []\ndefault: public\n")
    response = await client.get(f"/status/{code}", allow_redirects=False)
    assert response.status == code
    body = await response.read()
    if code in (204, 304):
        assert body == b""
        assert response.headers["ETag"] == '"v1"'
    else:
        assert body == f"status {code}".encode()


async def test_head_keeps_the_upstream_length_without_a_body(make_gateway: GatewayFactory) -> None:
    client = await make_gateway(routes="routes: []\ndefault: public\n")
    response = await raw_request(client, "/status/200", method="HEAD")
    assert response.status == 200
    assert response.headers["content-length"] == str(len("status 200"))
    assert response.body == b""


async def test_compressed_bodies_pass_through_untouched(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """Both ways: a request body's Content-Encoding is the upstream's to decode, never ours
    (a decoded body under the client's Content-Length desynchronizes the connection)."""
    client = await make_gateway(routes="routes: []\ndefault: public\n")
    response = await raw_request(client, "/gzip")
    assert response.headers["content-encoding"] == "gzip"
    assert gzip.decompress(response.body) == b"hello " * 1000

    async def record(request: web.Request) -> web.Response:
        return web.json_response(
            {"body": (await request.read()).hex(), "headers": dict(request.headers)}
        )

    app = web.Application()
    app.router.add_post("/{tail:.*}", record)
    raw_upstream = await aiohttp_server(app, auto_decompress=False)
    client = await make_gateway(
        routes="routes: []\ndefault: public\n",
        upstream_url=str(raw_upstream.make_url("")).rstrip("/"),
    )
    body = gzip.compress(b"x" * 100_000)
    for encoding in ("gzip", "deflate", "br", "zstd"):
        sent = await client.post(
            "/up", data=body, headers={"Content-Encoding": encoding, "Content-Type": "text/plain"}
        )
        seen = await sent.json()
        assert bytes.fromhex(seen["body"]) == body, encoding
        assert seen["headers"]["Content-Encoding"] == encoding
        assert seen["headers"]["Content-Length"] == str(len(body))
