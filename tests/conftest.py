"""Shared fixtures: a real upstream app on loopback, configs on disk, tokens, a real gateway."""

from __future__ import annotations

import asyncio
import functools
import gzip
import hashlib
import json
import os
import secrets
import socket
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestClient, TestServer

from gateway.app import create_server
from gateway.config import load
from gateway.runtime import Runtime
from tests.redis_server import RedisServer

SECRET_ENV = "GATEWAY_TEST_SECRET"
ROOT = Path(__file__).resolve().parent.parent


# -- the upstream: a real aiohttp app that reports what it received ---------------------


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.raw_path,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_length": len(body),
        }
    )


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("s", "5")))
    return web.Response(text="late")


async def _set_cookies(request: web.Request) -> web.Response:
    response = web.Response(text="cookies")
    response.headers.add("Set-Cookie", "a=1; Path=/")
    response.headers.add("Set-Cookie", "b=2; Path=/; HttpOnly")
    return response


async def _hop(request: web.Request) -> web.Response:
    return web.Response(
        text="hop",
        headers={"Connection": "X-Private-Hop", "X-Private-Hop": "1", "Keep-Alive": "timeout=5"},
    )


async def _stream(request: web.Request) -> web.StreamResponse:
    """`n` bytes, chunked, generated on the fly: nothing the size of the body is held."""
    remaining = int(request.match_info["n"])
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    chunk = b"x" * (1024 * 1024)
    while remaining > 0:
        piece = chunk[: min(remaining, len(chunk))]
        await response.write(piece)
        remaining -= len(piece)
    await response.write_eof()
    return response


async def _broken(request: web.Request) -> web.StreamResponse:
    """Promises a megabyte, sends a kilobyte, then drops the connection."""
    response = web.StreamResponse()
    if request.query.get("chunked"):
        response.enable_chunked_encoding()
    else:
        response.content_length = 1024 * 1024
    await response.prepare(request)
    await response.write(b"z" * 1024)
    await asyncio.sleep(0.05)
    assert request.transport is not None
    request.transport.abort()
    return response


async def _status(request: web.Request) -> web.Response:
    code = int(request.match_info["code"])
    if code in (204, 304):
        return web.Response(status=code, headers={"ETag": '"v1"'})
    return web.Response(status=code, text=f"status {code}", headers={"Location": "/elsewhere"})


async def _gzip(request: web.Request) -> web.Response:
    body = gzip.compress(b"hello " * 1000)
    return web.Response(body=body, headers={"Content-Encoding": "gzip"}, content_type="text/plain")


async def _upload(request: web.Request) -> web.Response:
    digest, total = hashlib.sha256(), 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        total += len(chunk)
    return web.json_response({"length": total, "sha256": digest.hexdigest()})


async def _ws(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=("chat",))
    await ws.prepare(request)
    await ws.send_json(
        {"x-user-id": request.headers.get("X-User-Id"), "cookie": request.headers.get("Cookie")}
    )
    async for message in ws:
        if message.type == web.WSMsgType.TEXT:
            await ws.send_str("echo:" + message.data)
        elif message.type == web.WSMsgType.BINARY:
            await ws.send_bytes(message.data)
    return ws


def upstream_app() -> web.Application:
    app = web.Application(client_max_size=1024**2)
    app.router.add_route("*", "/slow", _slow)
    app.router.add_get("/set-cookies", _set_cookies)
    app.router.add_get("/hop", _hop)
    app.router.add_get("/stream/{n:[0-9]+}", _stream)
    app.router.add_post("/upload", _upload)
    app.router.add_get("/broken", _broken)
    app.router.add_route("*", "/status/{code:[0-9]+}", _status)
    app.router.add_get("/gzip", _gzip)
    app.router.add_get("/ws", _ws)
    app.router.add_route("*", "/{tail:.*}", _echo)
    return app


@pytest.fixture
async def upstream(aiohttp_server: Any) -> TestServer:
    server: TestServer = await aiohttp_server(upstream_app())
    return server


# -- config files and tokens ------------------------------------------------------------


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    value = secrets.token_urlsafe(48)
    monkeypatch.setenv(SECRET_ENV, value)
    return value


BASE_ROUTES = """
routes:
  - path: /public/:path*
    auth: public
  - path: /admin/:path*
    roles: [admin]
  - path: /api/:path*
    on_unauthenticated: status
  - path: /web/:path*
    on_unauthenticated: redirect
  - path: /maybe/:path*
    auth: optional
  - path: /internal/:path*
    auth: deny
default: required
"""


def config_text(
    upstream_url: str, extra: str = "", routes: str = BASE_ROUTES, tokens: str = ""
) -> str:
    """A config in front of `upstream_url`; `tokens` holds `key: value` lines for tokens:."""
    token_lines = "".join(f"  {line.strip()}\n" for line in tokens.splitlines() if line.strip())
    return (
        textwrap.dedent(
            f"""
            listen: 127.0.0.1:0
            admin_listen: 127.0.0.1:1
            upstream: {upstream_url}
            upstream_timeout: 1s
            tokens:
              algorithm: HS256
              secret_env: {SECRET_ENV}
            """
        )
        + token_lines
        + "cookies:\n  secure: false\n"
        + textwrap.dedent(routes)
        + textwrap.dedent(extra)
    )


def write_config(directory: Path, text: str, name: str = "config.yaml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def mint(
    secret: str | bytes | Any,
    *,
    algorithm: str = "HS256",
    headers: dict[str, Any] | None = None,
    **overrides: Any,
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "alice",
        "email": "alice@example.com",
        "name": "Alice",
        "roles": ["admin"],
        "typ": "access",
        "iss": "gateway",
        "aud": "upstream",
        "iat": now,
        "nbf": now,
        "exp": now + 900,
        "jti": uuid.uuid4().hex,
    }
    claims.update(overrides)
    for key in [k for k, v in claims.items() if v is None]:
        del claims[key]
    return jwt.encode(claims, secret, algorithm=algorithm, headers=headers)


class GatewayTestServer(BaseTestServer):
    """The exact public server `gateway serve` runs, on a loopback test port."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime

    async def _make_runner(self, **kwargs: Any) -> web.ServerRunner:
        return web.ServerRunner(create_server(self.runtime), **kwargs)

    async def start_server(
        self, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any
    ) -> None:
        self.runtime.open_client()
        await super().start_server(loop, **kwargs)

    async def close(self) -> None:
        await super().close()
        await self.runtime.close()


Client = TestClient[web.BaseRequest, None]
GatewayFactory = Callable[..., Awaitable[Client]]


def runtime_of(client: Client) -> Runtime:
    """The runtime behind an in-process gateway's test client."""
    assert isinstance(client.server, GatewayTestServer)
    return client.server.runtime


async def gateway_client(config_path: Path) -> Client:
    # no cookie jar: every test says exactly which cookies it sends
    client: Client = TestClient(
        GatewayTestServer(Runtime(load(config_path))), cookie_jar=aiohttp.DummyCookieJar()
    )
    await client.start_server()
    return client


@pytest.fixture
async def make_gateway(
    upstream: TestServer, tmp_path: Path, secret: str
) -> AsyncIterator[GatewayFactory]:
    """Build an in-process gateway in front of `upstream` (or another URL) and a client for it."""
    clients: list[Client] = []

    async def factory(
        extra: str = "",
        routes: str = BASE_ROUTES,
        upstream_url: str | None = None,
        tokens: str = "",
    ) -> Client:
        url = upstream_url or str(upstream.make_url("")).rstrip("/")
        text = config_text(url, extra, routes, tokens)
        name = f"config-{len(clients)}.yaml" if clients else "config.yaml"
        client = await gateway_client(write_config(tmp_path, text, name))
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.close()


@pytest.fixture
def token(secret: str) -> str:
    return mint(secret)


def received(payload: dict[str, Any]) -> dict[str, list[str]]:
    """The echo upstream's header list -> lower-cased name: all values."""
    out: dict[str, list[str]] = {}
    for name, value in payload["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


# -- the real gateway process -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class GatewayProcess:
    proc: subprocess.Popen[bytes]
    url: str
    admin_url: str
    log: Path
    config: Path = Path()

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")


def _wait_http(url: str, proc: subprocess.Popen[bytes], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback only
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {seconds}s")


@pytest.fixture
def spawn_gateway(tmp_path: Path, secret: str) -> Iterator[Callable[..., GatewayProcess]]:
    """Start `python -m gateway serve` on free loopback ports; stopped at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(
        config_body: str, path: Path | None = None, env: dict[str, str] | None = None
    ) -> GatewayProcess:
        """`path`: where the config goes (default: a fresh file in tmp_path)."""
        for attempt in range(3):
            port, admin = free_port(), free_port()
            text = config_body.replace("127.0.0.1:0", f"127.0.0.1:{port}", 1).replace(
                "127.0.0.1:1", f"127.0.0.1:{admin}", 1
            )
            config = path or tmp_path / f"gw-{port}.yaml"
            config.write_text(text)
            log = tmp_path / f"gw-{port}.log"
            with log.open("wb") as sink:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, SECRET_ENV: secret, **(env or {})},
                    cwd=ROOT,
                )
            procs.append(proc)
            admin_url = f"http://127.0.0.1:{admin}"
            try:
                _wait_http(admin_url + "/healthz", proc)
            except RuntimeError:
                # a free port can be taken between free_port() and the gateway's bind (by a
                # test running beside this one): that, and only that, is worth another try
                if attempt < 2 and "cannot listen" in log.read_text(errors="replace"):
                    continue
                raise
            return GatewayProcess(proc, f"http://127.0.0.1:{port}", admin_url, log, config)
        raise AssertionError("unreachable")

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client for gateway processes, without a cookie jar: tests name the cookies they send."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


@pytest.fixture
async def upstream_url(upstream: TestServer) -> AsyncIterator[str]:
    yield str(upstream.make_url("")).rstrip("/")


def log_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


async def raw_request(
    client: Client,
    target: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> RawResponse:
    """Send a request line byte-for-byte: HTTP client libraries "fix" the paths under test."""
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{client.port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    if parsed.get("transfer-encoding") == "chunked":
        body = dechunk(body)
    return RawResponse(int(status_line.split()[1]), parsed, body)


def dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out


# -- Redis and sessions -----------------------------------------------------------------


def worker_database(url: str, worker: str | None) -> str:
    """`url` with its database number moved on by the xdist worker's index (gw0, gw1...)."""
    if not worker or not worker.removeprefix("gw").isdigit():
        return url
    parts = urllib.parse.urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    database = (base + int(worker.removeprefix("gw"))) % 16  # Redis has 16 by default
    return urllib.parse.urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis shared by the tests of one worker; each test uses its own key space by its own
    users. `$REDIS_URL` instead of a server of our own: each pytest-xdist worker gets a
    database of its own there, so that tests running at once do not see each other's users."""
    if os.environ.get("REDIS_URL"):
        yield worker_database(os.environ["REDIS_URL"], os.environ.get("PYTEST_XDIST_WORKER"))
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, to kill and restart."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


USERS = {"alice": ("wonderland", ["admin"]), "bob": ("builder", ["viewer"])}


@functools.cache
def hash_of(password: str) -> str:
    from gateway.credentials import hash_password

    return hash_password(password)


def users_yaml(users: dict[str, tuple[str, list[str]]] | None = None) -> str:
    lines = []
    for name, (password, roles) in (users or USERS).items():
        lines += [
            f"{name}:",
            f'  password_hash: "{hash_of(password)}"',
            f"  email: {name}@example.com",
            f"  roles: [{', '.join(roles)}]",
        ]
    return "\n".join(lines) + "\n"


def session_extra(
    directory: Path, store: str = "memory://", login: str = "", more: str = ""
) -> str:
    """Config lines for sign-in with the USERS file written into `directory`;
    `login` holds more `key: value` lines for the login: section."""
    (directory / "users.yaml").write_text(users_yaml())
    login_lines = "".join(f"  {line.strip()}\n" for line in login.splitlines() if line.strip())
    return (
        f"store: {store}\nstore_timeout: 300ms\n"
        f"login:\n  users_file: {directory / 'users.yaml'}\n{login_lines}" + textwrap.dedent(more)
    )


SAME_ORIGIN = "http://127.0.0.1"  # tests talk to 127.0.0.1; the port is not compared


# -- metrics ----------------------------------------------------------------------------


def scrape(admin_url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """/metrics parsed by prometheus-client's own parser: {(sample name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(admin_url + "/metrics", timeout=5) as answer:  # noqa: S310
        text = answer.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)
