"""Slow, abusive and malformed clients (SPEC 7.1 "Slow and abusive clients").

Slow or idle connections are closed after `client_header_timeout` while
everyone else is served; a compressed body bomb passes through undecoded; the
bodies the gateway reads itself are never decompressed and never crash it;
WebSocket handshakes and CONNECT are judged before the upstream is contacted;
and no malformed input ever ends in a 500 or a traceback.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import gzip
import hashlib
import io
import json
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import (
    SAME_ORIGIN,
    Client,
    GatewayFactory,
    GatewayProcess,
    config_text,
    gateway_client,
    session_extra,
    write_config,
)

PUBLIC = "routes: []\ndefault: public\n"
VALID_KEY = base64.b64encode(b"0123456789abcdef").decode()


# -- raw HTTP over loopback ----------------------------------------------------------------


async def exchange(
    port: int, data: bytes, *, answer_within: float = 5, close_within: float = 10
) -> bytes:
    """Send bytes exactly as given; return the gateway's first answer.

    The answer is read by its framing (Content-Length, chunked, or until close). When none
    has come within `answer_within` (the input may be incomplete on purpose), the client
    half-closes (no more is coming) and waits `close_within` for an answer or the close;
    a gateway that does neither gets b"<timeout>" appended, so a hang shows.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = bytearray()
    try:
        writer.write(data)
        await writer.drain()
        try:
            async with asyncio.timeout(answer_within):
                await _read_answer(reader, answer)
            return bytes(answer)
        except TimeoutError:
            if answer:
                return bytes(answer) + b"<timeout>"
        writer.write_eof()
        try:
            async with asyncio.timeout(close_within):
                await _read_answer(reader, answer)
        except TimeoutError:
            answer += b"<timeout>"
    except (ConnectionError, asyncio.IncompleteReadError):
        pass  # reset after (or instead of) an answer: what arrived is the answer
    finally:
        writer.close()
    return bytes(answer)


async def _read_answer(reader: asyncio.StreamReader, answer: bytearray) -> None:
    try:
        answer += await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        answer += exc.partial  # closed without a whole head
        return
    _, headers, _ = split(bytes(answer))
    if "content-length" in headers:
        answer += await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size_line = await reader.readuntil(b"\r\n")
            answer += size_line
            size = int(size_line.split(b";")[0], 16)
            answer += await reader.readexactly(size + 2)
            if size == 0:
                return
    elif not answer.startswith(b"HTTP/1.1 101"):
        answer += await reader.read()


def status_of(answer: bytes) -> int | None:
    if not answer.startswith(b"HTTP/1."):
        return None
    return int(answer.split(b" ", 2)[1])


def split(answer: bytes) -> tuple[int | None, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    headers = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status_of(answer), headers, body


def handshake(path: str = "/ws", **headers: str) -> bytes:
    """A WebSocket upgrade; a header given as "" is left out."""
    fields = {
        "Host": "127.0.0.1",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": VALID_KEY,
    }
    fields.update({k.replace("_", "-"): v for k, v in headers.items()})
    lines = [f"GET {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in fields.items() if v != ""]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# -- an upstream that counts what it got, and says who asked -------------------------------


class Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")


async def _count(request: web.Request) -> web.Response:
    """The body's exact bytes: length and digest. Stops early past `limit` (a test failing
    on an inflated bomb should not wait for a gigabyte)."""
    digest, total = hashlib.sha256(), 0
    limit = int(request.query.get("limit", "0"))
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        total += len(chunk)
        if limit and total > limit:
            break
    return web.json_response(
        {
            "length": total,
            "sha256": digest.hexdigest(),
            "content_encoding": request.headers.get("Content-Encoding"),
            "content_length": request.headers.get("Content-Length"),
        }
    )


async def _ws_echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        if message.type == web.WSMsgType.TEXT:
            await ws.send_str("echo:" + message.data)
    return ws


async def _ws_refuse(request: web.Request) -> web.Response:
    return web.Response(status=403, text="no sockets for you", headers={"X-App": "said-no"})


async def _echo(request: web.Request) -> web.Response:
    return web.json_response({"method": request.method, "path": request.raw_path})


@pytest.fixture
async def recorder(aiohttp_server: Any) -> Recorder:
    """Never decodes bodies itself, so it sees the bytes the gateway sent."""
    found = Recorder()

    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        found.requests.append((request.method, request.raw_path))
        return await handler(request)

    app = web.Application(middlewares=[record])
    app.router.add_post("/count", _count)
    app.router.add_get("/ws", _ws_echo)
    app.router.add_get("/ws-refuse", _ws_refuse)
    app.router.add_route("*", "/{tail:.*}", _echo)
    found.server = await aiohttp_server(app, auto_decompress=False)
    return found


@pytest.fixture
async def gateway_in_front(
    recorder: Recorder, tmp_path: Path, secret: str
) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """An in-process gateway in front of the recorder, with time for streamed bodies."""
    clients: list[Client] = []

    async def start(routes: str = PUBLIC, extra: str = "") -> Client:
        text = config_text(recorder.url, extra, routes).replace(
            "upstream_timeout: 1s", "upstream_timeout: 30s"
        )
        client = await gateway_client(write_config(tmp_path, text, f"abuse-{len(clients)}.yaml"))
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


def port_of(client: Client) -> int:
    assert client.port is not None
    return client.port


# -- slow and idle connections -------------------------------------------------------------

HEAD = b"GET /public/x HTTP/1.1\r\nHost: x\r\n"
OPENINGS = {
    "silent": b"",
    "partial_line": b"GET /publ",
    "partial_head": HEAD + b"X-Slow: 1\r\n",
    "trickle": HEAD,  # then one more header line every 0.3 s, forever
    "after_a_request": HEAD + b"\r\n",  # a whole request, then a next head started late
}


async def _slow_client(port: int, kind: str) -> tuple[bool, bytes]:
    """(closed by the gateway within the bound, bytes the gateway sent)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(OPENINGS[kind])
    got = bytearray()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15  # generous: the timeout under test is 1 s
    started_next = False
    try:
        while loop.time() < deadline:
            if kind == "trickle":
                writer.write(b"X-Slow: 1\r\n")
            if kind == "after_a_request" and got.startswith(b"HTTP/1.1 200") and not started_next:
                writer.write(b"GET /public/y HTTP/1.1\r\n")  # and never finished
                started_next = True
            try:
                chunk = await asyncio.wait_for(reader.read(65536), timeout=0.3)
            except TimeoutError:
                continue
            if not chunk:
                return True, bytes(got)
            got += chunk
    except ConnectionError:
        return True, bytes(got)
    finally:
        writer.close()
    return False, bytes(got)


async def test_slow_and_idle_connections_are_closed_while_others_are_served(
    spawn_gateway: Callable[[str], GatewayProcess], upstream_url: str
) -> None:
    gateway = spawn_gateway(config_text(upstream_url, "client_header_timeout: 1s\n"))
    port = int(gateway.url.rsplit(":", 1)[1])
    kinds = [kind for kind in OPENINGS for _ in range(60)]  # 300 connections
    slow = [asyncio.create_task(_slow_client(port, kind)) for kind in kinds]
    await asyncio.sleep(0.2)  # they are connected and have sent what they send

    connector = aiohttp.TCPConnector(force_close=True)  # every request on a new connection
    async with aiohttp.ClientSession(connector=connector) as http:

        async def ordinary(i: int) -> int:
            timeout = aiohttp.ClientTimeout(total=15)
            async with http.get(f"{gateway.url}/public/{i}", timeout=timeout) as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(ordinary(i) for i in range(30)))
    assert statuses == [200] * 30

    outcomes = await asyncio.gather(*slow)
    still_open = [kind for kind, (closed, _) in zip(kinds, outcomes, strict=True) if not closed]
    assert still_open == [], f"{len(still_open)} slow connections left open: {set(still_open)}"
    for kind, (_, got) in zip(kinds, outcomes, strict=True):
        if kind == "after_a_request":
            first, _, rest = got.partition(b"\r\n\r\n")
            assert first.startswith(b"HTTP/1.1 200"), got[:200]
            assert b"HTTP/1.1 200" not in rest  # the unfinished head was never answered
            continue
        assert got == b"" or got.startswith(b"HTTP/1.1 408"), (kind, got[:200])


async def test_a_pipelined_unfinished_head_is_closed_too(
    spawn_gateway: Callable[[str], GatewayProcess], upstream_url: str
) -> None:
    """A whole request and the start of the next in one packet: the second head is
    unfinished, whether or not the first was still being answered when it arrived."""
    gateway = spawn_gateway(config_text(upstream_url, "client_header_timeout: 1s\n"))
    port = int(gateway.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HEAD + b"\r\nGET /public/y HTTP/1.1\r\nHost: x\r\n")
    got = bytearray()
    try:
        async with asyncio.timeout(15):  # generous: the timeout under test is 1 s
            while chunk := await reader.read(65536):
                got += chunk
        closed = True
    except TimeoutError:
        closed = False
    except ConnectionError:
        closed = True
    finally:
        writer.close()
    assert got.startswith(b"HTTP/1.1 200"), bytes(got[:200])
    assert closed, "the connection with an unfinished second head was left open"


# -- bodies: bombs pass through undecoded; bodies the gateway reads are never decoded --------


def gzip_bomb(mebibytes: int) -> bytes:
    """A valid gzip stream of `mebibytes` MiB of zeros, about 1 KiB per MiB, built in a
    blink: after a full flush each MiB of zeros compresses to the same bytes."""
    zeros = bytes(1 << 20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    repeat = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    end = deflate.flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(mebibytes):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = struct.pack("<II", crc, (mebibytes << 20) & 0xFFFFFFFF)
    return header + first + repeat * (mebibytes - 1) + end + trailer


@functools.cache
def bomb() -> bytes:
    return gzip_bomb(1024)  # ~1 MiB on the wire, 1 GiB inflated


def test_the_bomb_is_what_it_claims() -> None:
    assert gzip.decompress(gzip_bomb(8)) == bytes(8 << 20)  # the same recipe, smaller
    assert len(bomb()) < 1_100_000
    assert struct.unpack("<I", bomb()[-4:])[0] == (1 << 30) & 0xFFFFFFFF


async def test_a_compressed_body_bomb_reaches_the_upstream_undecoded(
    gateway_in_front: Callable[..., Awaitable[Client]],
) -> None:
    client = await gateway_in_front()
    payload = bomb()
    response = await client.post(
        f"/count?limit={len(payload)}",
        data=io.BytesIO(payload),  # raw bytes this large make aiohttp warn
        headers={"Content-Encoding": "gzip", "Content-Type": "application/octet-stream"},
    )
    assert response.status == 200
    report = await response.json()
    assert report["length"] == len(payload)
    assert report["sha256"] == hashlib.sha256(payload).hexdigest()
    assert report["content_encoding"] == "gzip"
    assert report["content_length"] in (None, str(len(payload)))


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        pytest.param("gzip", b"this is not gzip at all", id="not-gzip"),
        pytest.param("deflate", b"\x00\x01 nor deflate", id="not-deflate"),
        pytest.param("br", b"\xff\xfe nor brotli", id="not-br"),
        pytest.param("gzip", gzip.compress(b"hello")[:-6], id="truncated-gzip"),
    ],
)
async def test_undecodable_bodies_pass_through_byte_for_byte(
    gateway_in_front: Callable[..., Awaitable[Client]], encoding: str, body: bytes
) -> None:
    client = await gateway_in_front()
    response = await client.post(
        "/count", data=body, headers={"Content-Encoding": encoding, "Content-Type": "x/y"}
    )
    assert response.status == 200
    report = await response.json()
    assert report["sha256"] == hashlib.sha256(body).hexdigest()
    assert report["content_encoding"] == encoding


async def test_other_clients_are_answered_while_a_bomb_body_streams(
    spawn_gateway: Callable[[str], GatewayProcess], recorder: Recorder
) -> None:
    text = config_text(recorder.url, routes=PUBLIC).replace(
        "upstream_timeout: 1s", "upstream_timeout: 30s"
    )
    gateway = spawn_gateway(text)
    port = int(gateway.url.rsplit(":", 1)[1])
    payload = bomb()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    half = len(payload) // 2
    writer.write(
        f"POST /count?limit={len(payload)} HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
        + payload[:half]
    )
    await writer.drain()
    bomb_answer = asyncio.create_task(reader.read())  # the whole answer, at close
    try:
        async with aiohttp.ClientSession() as http:
            timeout = aiohttp.ClientTimeout(total=20)
            async with http.get(gateway.url + "/other", timeout=timeout) as response:
                assert response.status == 200
                assert (await response.json())["path"] == "/other"
        assert not bomb_answer.done()  # answered while the bomb was still on its way
        writer.write(payload[half:])
        await writer.drain()
        answer = await asyncio.wait_for(bomb_answer, timeout=30)
    finally:
        writer.close()
    status, _, body = split(answer)
    assert status == 200, answer[:300]
    report = json.loads(body)
    assert report["length"] == len(payload)
    assert report["sha256"] == hashlib.sha256(payload).hexdigest()


@pytest.fixture
async def sign_in_gateway(make_gateway: GatewayFactory, tmp_path: Path) -> Client:
    return await make_gateway(session_extra(tmp_path))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("[" * 100_000, id="100k-brackets"),
        pytest.param("[" * 60_000, id="60k-brackets-under-the-size-limit"),
        # valid JSON, deeper than any parser's stack
        pytest.param('{"a":' * 12_000 + "1" + "}" * 12_000, id="12k-nested-objects"),
        pytest.param("[" * 30_000 + "]" * 30_000, id="30k-nested-arrays"),
    ],
)
async def test_deeply_nested_json_sign_in_is_a_bad_request(
    sign_in_gateway: Client, body: str
) -> None:
    response = await sign_in_gateway.post(
        "/login",
        data=body,
        headers={"Content-Type": "application/json", "Origin": SAME_ORIGIN},
    )
    assert response.status == 400
    assert "Traceback" not in await response.text()
    assert (await sign_in_gateway.get("/login")).status == 200


async def test_deeply_nested_json_sent_chunked_is_a_bad_request(sign_in_gateway: Client) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(60):
            yield b"[" * 1000

    response = await sign_in_gateway.post(
        "/login",
        data=chunks(),
        headers={"Content-Type": "application/json", "Origin": SAME_ORIGIN},
    )
    assert response.status == 400


@pytest.mark.parametrize(
    ("content_type", "plain", "encoding"),
    [
        pytest.param(
            "application/json",
            b'{"username": "alice", "password": "wonderland"}',
            "gzip",
            id="json-gzip",
        ),
        pytest.param(
            "application/x-www-form-urlencoded",
            b"username=alice&password=wonderland",
            "gzip",
            id="form-gzip",
        ),
        pytest.param(
            "application/json",
            b'{"username": "alice", "password": "wonderland"}',
            "deflate",
            id="json-deflate",
        ),
    ],
)
async def test_a_compressed_sign_in_is_refused_not_decompressed(
    sign_in_gateway: Client, content_type: str, plain: bytes, encoding: str
) -> None:
    body = gzip.compress(plain) if encoding == "gzip" else zlib.compress(plain)
    response = await sign_in_gateway.post(
        "/login",
        data=body,
        headers={
            "Content-Type": content_type,
            "Content-Encoding": encoding,
            "Origin": SAME_ORIGIN,
        },
        allow_redirects=False,
    )
    assert response.status == 400
    assert "Set-Cookie" not in response.headers
    # the same credentials, not compressed, do sign in: the refusal is the encoding's
    response = await sign_in_gateway.post(
        "/login",
        data=plain,
        headers={"Content-Type": content_type, "Origin": SAME_ORIGIN},
        allow_redirects=False,
    )
    assert response.status == 303


# -- WebSocket handshakes and CONNECT: judged before the upstream is asked ------------------


@pytest.mark.parametrize(
    "key",
    [
        "",  # missing
        "not base64 at all!",
        base64.b64encode(b"fifteen bytes!!").decode(),
        base64.b64encode(b"seventeen bytes!!").decode(),
        "AAAAAAAAAAAAAAAAAAAAAA",  # 16 bytes without the padding
    ],
)
async def test_an_upgrade_without_a_valid_key_is_400_before_the_upstream(
    gateway_in_front: Callable[..., Awaitable[Client]], recorder: Recorder, key: str
) -> None:
    client = await gateway_in_front()
    answer = await exchange(port_of(client), handshake(Sec_WebSocket_Key=key))
    assert status_of(answer) == 400, answer[:300]
    assert recorder.requests == []


@pytest.mark.parametrize("version", ["8", "14"])
async def test_an_unsupported_websocket_version_is_426_naming_13(
    gateway_in_front: Callable[..., Awaitable[Client]], recorder: Recorder, version: str
) -> None:
    client = await gateway_in_front()
    answer = await exchange(port_of(client), handshake(Sec_WebSocket_Version=version))
    status, headers, _ = split(answer)
    assert status == 426, answer[:300]
    assert headers.get("sec-websocket-version") == "13"
    assert recorder.requests == []


async def test_an_upstream_refusing_the_handshake_is_passed_through(
    gateway_in_front: Callable[..., Awaitable[Client]], recorder: Recorder
) -> None:
    client = await gateway_in_front()
    answer = await exchange(port_of(client), handshake("/ws-refuse"))
    status, headers, body = split(answer)
    assert status == 403, answer[:300]
    assert b"no sockets for you" in body
    assert headers.get("x-app") == "said-no"
    assert recorder.requests == [("GET", "/ws-refuse")]


async def test_a_valid_handshake_still_opens_a_socket(
    gateway_in_front: Callable[..., Awaitable[Client]],
) -> None:
    client = await gateway_in_front()
    async with client.ws_connect("/ws") as ws:
        await ws.send_str("hi")
        assert (await ws.receive(timeout=10)).data == "echo:hi"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"CONNECT /x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"CONNECT /public/x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"CONNECT host:443 HTTP/1.1\r\nHost: host:443\r\n\r\n",
        b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n",
    ],
)
async def test_connect_is_400_and_never_forwarded(
    gateway_in_front: Callable[..., Awaitable[Client]], recorder: Recorder, request_bytes: bytes
) -> None:
    client = await gateway_in_front()
    answer = await exchange(port_of(client), request_bytes)
    assert status_of(answer) == 400, answer[:300]
    assert recorder.requests == []


# -- malformed input: never a 500, never a traceback ---------------------------------------

GET = b"GET /public/x HTTP/1.1\r\nHost: x\r\n"
POST = b"POST /public/x HTTP/1.1\r\nHost: x\r\n"


def sign_in(content_type: bytes, body: bytes, length: int | None = None) -> bytes:
    """A sign-in POST; `length` other than the body's makes a lying Content-Length."""
    declared = len(body) if length is None else length
    return (
        b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://127.0.0.1\r\n"
        b"Content-Type: " + content_type + b"\r\nContent-Length: %d\r\n\r\n" % declared + body
    )


JSON, FORM = b"application/json", b"application/x-www-form-urlencoded"
MALFORMED = {
    "space in a header name": GET + b"Bad Header: v\r\n\r\n",
    "NUL in a header value": GET + b"X-A: a\x00b\r\n\r\n",
    "bare CR in a header value": GET + b"X-A: a\rb\r\n\r\n",
    "bytes above 0x7f in a header name": GET + b"X-\xff\xfe: 1\r\n\r\n",
    "bytes above 0x7f in a header value": GET + b"X-A: \xff\xfe\r\n\r\n",
    "a header line without a colon": GET + b"X-A\r\n\r\n",
    "obsolete line folding": GET + b"X-A: a\r\n b\r\n\r\n",
    "bare LF line ends": b"GET /public/x HTTP/1.1\nHost: x\n\n",
    "a huge header": GET + b"X-Big: " + b"a" * 100_000 + b"\r\n\r\n",
    "a huge cookie": GET + b"Cookie: access_token=" + b"a" * 70_000 + b"\r\n\r\n",
    "a thousand headers": GET + b"".join(b"X-%d: v\r\n" % i for i in range(1000)) + b"\r\n",
    "a huge request line": b"GET /public/" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "Content-Length not a number": POST + b"Content-Length: abc\r\n\r\nabc",
    "Content-Length negative": POST + b"Content-Length: -1\r\n\r\n",
    "Content-Length with a sign": POST + b"Content-Length: +3\r\n\r\nabc",
    "Content-Length a list": POST + b"Content-Length: 1, 2\r\n\r\nab",
    "Content-Length twice, different": POST + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "Content-Length too big to parse": POST + b"Content-Length: 99999999999999999999999999\r\n\r\n",
    "Content-Length and Transfer-Encoding": POST
    + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "Transfer-Encoding not chunked": POST + b"Transfer-Encoding: gzip\r\n\r\nabc",
    "Transfer-Encoding chunked twice": POST
    + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "Transfer-Encoding chunked, then identity": POST
    + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "Transfer-Encoding xchunked": POST + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "a chunk size not in hex": POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
    "a negative chunk size": POST + b"Transfer-Encoding: chunked\r\n\r\n-1\r\nab\r\n0\r\n\r\n",
    "a chunk size too big to parse": POST
    + b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffffffff\r\nab\r\n",
    "a chunk without its CRLF": POST + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    "a chunk extension with a NUL": POST
    + b"Transfer-Encoding: chunked\r\n\r\n5;\x00\r\nhello\r\n0\r\n\r\n",
    "a chunked body cut short": POST + b"Transfer-Encoding: chunked\r\n\r\n10\r\nabc",
    "a method with a bad character": b"G@T /public/x HTTP/1.1\r\nHost: x\r\n\r\n",
    "a method with a NUL": b"GE\x00T /public/x HTTP/1.1\r\nHost: x\r\n\r\n",
    "no method": b" /public/x HTTP/1.1\r\nHost: x\r\n\r\n",
    "a huge method": b"A" * 10_000 + b" /public/x HTTP/1.1\r\nHost: x\r\n\r\n",
    "an unknown HTTP version": b"GET /public/x HTTP/9.9\r\nHost: x\r\n\r\n",
    "a malformed HTTP version": b"GET /public/x HTTP/1.1x\r\nHost: x\r\n\r\n",
    "no HTTP version": b"GET /public/x\r\nHost: x\r\n\r\n",
    "absolute-form target": b"GET http://evil.example/admin HTTP/1.1\r\nHost: x\r\n\r\n",
    "asterisk-form target": b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    "a target without a slash": b"GET public/x HTTP/1.1\r\nHost: x\r\n\r\n",
    "a target with a raw NUL": b"GET /public/\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    "two Host headers": b"GET /public/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "a Host with a space": b"GET /public/x HTTP/1.1\r\nHost: a b\r\n\r\n",
    "an upgrade on a POST": POST + b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    "an upgrade to something else": GET + b"Upgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
    "two WebSocket keys": GET
    + b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    + f"Sec-WebSocket-Key: {VALID_KEY}\r\nSec-WebSocket-Key: {VALID_KEY}\r\n\r\n".encode(),
    "sign-in JSON cut short": sign_in(JSON, b'{"username":', length=20),
    "sign-in JSON not an object": sign_in(JSON, b"[1, 2, 3]"),
    "sign-in JSON with bad UTF-8": sign_in(JSON, b'{"username": "\xff\xfe", "password": "\xfe"}'),
    "sign-in JSON with lone surrogates": sign_in(
        JSON, b'{"username": "alice", "password": "\\ud800"}'
    ),
    "sign-in JSON with huge numbers": sign_in(
        JSON, b'{"username": 1e999999, "password": 9' + b"9" * 5000 + b"}"
    ),
    "sign-in JSON fields of the wrong type": sign_in(JSON, b'{"username": {}, "password": [null]}'),
    "sign-in form with bad UTF-8": sign_in(FORM, b"username=%ff\xff&password=\xfe\xfe"),
    "sign-in form with a field a thousand times": sign_in(FORM, b"username=a&" * 1000),
    "sign-in multipart without a boundary": sign_in(b"multipart/form-data", b"hello"),
    "sign-in multipart that never closes": sign_in(
        b"multipart/form-data; boundary=zz",
        b'--zz\r\nContent-Disposition: form-data; name="username"\r\n\r\nalice',
    ),
    "sign-in claiming a terabyte": sign_in(JSON, b"{}", length=10**12),
    "sign-in with a charset that does not exist": sign_in(FORM + b"; charset=nope", b"username=a"),
    "sign-in JSON with a charset that does not exist": sign_in(
        JSON + b"; charset=nope", b'{"username": "a", "password": "b"}'
    ),
    "an access cookie that is not a token": GET.replace(b"/public/x", b"/api/x")
    + b"Cookie: access_token=\xff\xfe.\x00.x; refresh_token=..\r\n\r\n",
    "a bearer token that is not a token": GET.replace(b"/public/x", b"/maybe/x")
    + b"Authorization: Bearer "
    + b"a." * 5000
    + b"\r\n\r\n",
    "an Expect that is not 100-continue": POST + b"Expect: \xff\r\nContent-Length: 1\r\n\r\na",
}


async def test_malformed_input_never_ends_in_a_500_or_a_traceback(
    make_gateway: GatewayFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Anything 5xx here is a fault of the gateway's (the upstream answers 200 to all);
    a fault it caught and answered 502 still logs its traceback, which is looked for too."""
    client = await make_gateway(session_extra(tmp_path))
    port = port_of(client)

    async def one(name: str, data: bytes) -> tuple[str, bytes]:
        return name, await exchange(port, data, answer_within=1.5)

    answers = await asyncio.gather(*(one(name, data) for name, data in MALFORMED.items()))
    problems = {}
    for name, answer in answers:
        status = status_of(answer)
        if b"<timeout>" in answer:
            problems[name] = "no answer and the connection left open after the client finished"
        elif status is not None and status >= 500:
            problems[name] = answer[:300].decode("latin-1")
        elif b"Traceback" in answer or b'File "' in answer:
            problems[name] = "a traceback: " + answer[:300].decode("latin-1")
    assert problems == {}
    faults = [r.getMessage() for r in caplog.records if r.exc_info and r.name.startswith("gateway")]
    assert faults == []
    assert (await client.get("/public/still-here")).status == 200


# -- framing headers a proxy must not reinterpret (found by the differential harness) -------


async def test_a_transfer_coding_other_than_chunked_is_400_and_never_forwarded(
    gateway_in_front: Callable[..., Awaitable[Client]], recorder: Recorder
) -> None:
    """Dechunked and re-chunked, the gzip coding would reach the upstream undecoded and
    unlabelled: refused instead of guessed."""
    client = await gateway_in_front()
    body = gzip.compress(b"x" * 100)
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    for coding in (b"gzip, chunked", b"chunked, chunked", b"identity, chunked"):
        answer = await exchange(
            port_of(client),
            b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + coding + b"\r\n\r\n"
            + chunked,
        )  # fmt: skip
        assert status_of(answer) == 400, (coding, answer[:200])
    assert recorder.requests == []
    answer = await exchange(
        port_of(client),
        b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked,
    )
    assert status_of(answer) == 200
    assert json.loads(split(answer)[2])["length"] == len(body)


async def test_connection_cannot_strip_the_body_s_content_encoding(
    gateway_in_front: Callable[..., Awaitable[Client]],
) -> None:
    client = await gateway_in_front()
    body = gzip.compress(b"y" * 1000)
    answer = await exchange(
        port_of(client),
        b"POST /count HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Content-Encoding\r\n"
        b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
    )
    seen = json.loads(split(answer)[2])
    assert seen["content_encoding"] == "gzip"
    assert seen["length"] == len(body)


async def test_a_request_asking_for_h2c_is_answered_and_its_connection_closed(
    gateway_in_front: Callable[..., Awaitable[Client]], recorder: Recorder
) -> None:
    """curl --http2 on http:// asks to upgrade to h2c. The gateway answers in HTTP/1.1 and
    closes, since aiohttp's parser reads nothing more on such a connection: the pipelined
    request after it must not hang (the client sends it again on a new connection)."""
    client = await gateway_in_front()
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(client))
    writer.write(
        b"GET /public/a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n"
        b"GET /public/b HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    await writer.drain()
    async with asyncio.timeout(10):
        everything = await reader.read()  # ends only when the gateway closes
    writer.close()
    status, headers, _ = split(everything)
    assert status == 200
    assert headers.get("connection", "").lower() == "close"
    assert recorder.requests == [("GET", "/public/a")]
