"""The admin listener against browsers (SPEC 7.1 "Admin listener").

A page on any site can make the browser talk to a loopback port: through DNS
rebinding (its own name, resolving to 127.0.0.1) or a plain cross-site POST.
So the admin listener answers only a Host that is an IP literal or
`localhost`, and a state change (revoking a user) needs a JSON POST that no
browser marks as coming from a page. `gateway revoke` keeps working.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import GatewayProcess, config_text, session_extra, write_config
from tests.helpers import run_cli, status
from tests.helpers import sign_in_over_http as sign_in

Spawn = Callable[[str], GatewayProcess]
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def gateway(spawn_gateway: Spawn, upstream_url: str, tmp_path: Path) -> GatewayProcess:
    return spawn_gateway(config_text(upstream_url, session_extra(tmp_path)))


def admin_port(gateway: GatewayProcess) -> int:
    return int(gateway.admin_url.rsplit(":", 1)[1])


async def admin(
    gateway: GatewayProcess,
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    host: str | None = "",
) -> tuple[int, bytes]:
    """One request to the admin port, byte for byte (clients rewrite Host).

    `host` "" means the port's own address; None sends no Host at all.
    """
    port = admin_port(gateway)
    lines = [f"{method} {target} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host or f'127.0.0.1:{port}'}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        async with asyncio.timeout(10):
            answer = await reader.read()
    finally:
        writer.close()
    head, _, payload = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), payload


def revoke_body(user: str) -> tuple[str, bytes]:
    """The user both ways, in the query as `gateway revoke` sends it and in a JSON body."""
    return f"/sessions/revoke?user={user}", f'{{"user": "{user}"}}'.encode()


async def test_hosts_that_are_ip_literals_or_localhost_are_answered(
    gateway: GatewayProcess,
) -> None:
    port = admin_port(gateway)
    for host in (
        "127.0.0.1",
        f"127.0.0.1:{port}",
        "localhost",
        f"localhost:{port}",
        "[::1]",
        f"[::1]:{port}",
        "10.0.0.7:9090",  # a kubelet probing the pod IP
        "[2001:db8::1]:9090",
    ):
        code, body = await admin(gateway, "GET", "/healthz", host=host)
        assert code == 200, host
        assert b"ok" in body


REFUSED_HOSTS = [
    "evil.example",
    "attacker.com:9090",
    "localhost.evil.example",
    "127.0.0.1.nip.io",
    "127.0.0.1.evil.example:9090",
    "intranet",
    "xn--80ak6aa92e.com",
]


async def test_any_other_host_is_refused_on_every_admin_path(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    cookies = await sign_in(http, gateway)
    target, body = revoke_body("alice")
    for host in REFUSED_HOSTS:
        for path in ("/healthz", "/readyz", "/metrics", "/sessions?user=alice"):
            code, payload = await admin(gateway, "GET", path, host=host)
            assert code == 403, (host, path)
            assert b"gateway_" not in payload and b"family" not in payload
        code, _ = await admin(gateway, "POST", target, JSON, body, host=host)
        assert code == 403, host
    assert await status(http, gateway.url + "/api/x", cookies) == 200  # nothing was revoked
    for odd_host in (None, "", " "):
        code, _ = await admin(gateway, "GET", "/metrics", host=odd_host)
        if odd_host == "":
            assert code == 200  # the sanity check: the port's own address
        else:
            assert code in (400, 403), repr(odd_host)


async def test_a_rebound_page_cannot_revoke_even_with_a_json_post(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    """What a DNS-rebinding page can send: its own name as Host, no Origin (same-origin
    as far as the browser knows, after the rebind)."""
    cookies = await sign_in(http, gateway)
    target, body = revoke_body("alice")
    code, _ = await admin(gateway, "POST", target, JSON, body, host="rebind.evil.example:9090")
    assert code == 403
    assert await status(http, gateway.url + "/api/x", cookies) == 200


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        pytest.param("POST", {"Content-Type": "text/plain"}, (415,), id="text/plain"),
        pytest.param(
            "POST", {"Content-Type": "text/plain;charset=UTF-8"}, (415,), id="text/plain-charset"
        ),
        pytest.param(
            "POST", {"Content-Type": "application/x-www-form-urlencoded"}, (415,), id="form"
        ),
        pytest.param(
            "POST", {"Content-Type": "multipart/form-data; boundary=x"}, (415,), id="multipart"
        ),
        pytest.param("POST", {}, (400, 415), id="no-content-type"),
        pytest.param("POST", {**JSON, "Origin": "https://evil.example"}, (403,), id="origin"),
        pytest.param("POST", {**JSON, "Origin": "null"}, (403,), id="origin-null"),
        # even its own origin: no page of ours ever posts here
        pytest.param("POST", {**JSON, "Origin": "http://127.0.0.1"}, (403,), id="origin-own"),
        pytest.param("POST", {**JSON, "Sec-Fetch-Site": "cross-site"}, (403,), id="cross-site"),
        pytest.param("POST", {**JSON, "Sec-Fetch-Site": "same-site"}, (403,), id="same-site"),
        pytest.param("POST", {**JSON, "Sec-Fetch-Site": "same-origin"}, (403,), id="same-origin"),
        pytest.param("GET", {}, (405,), id="GET"),
        pytest.param("GET", JSON, (405,), id="GET-json"),
        pytest.param("PUT", JSON, (405,), id="PUT-json"),
    ],
)
async def test_revoking_needs_a_json_post_no_page_could_have_sent(
    gateway: GatewayProcess,
    http: aiohttp.ClientSession,
    method: str,
    headers: dict[str, str],
    expected: tuple[int, ...],
) -> None:
    cookies = await sign_in(http, gateway)
    target, body = revoke_body("alice")
    code, _ = await admin(gateway, method, target, headers, body)
    assert code in expected
    assert await status(http, gateway.url + "/api/x", cookies) == 200  # still signed in


async def test_a_json_post_from_no_page_revokes(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    cookies = await sign_in(http, gateway)
    target, body = revoke_body("nobody")
    code, payload = await admin(
        gateway, "POST", target, {"Content-Type": "application/json; charset=utf-8"}, body
    )
    assert code == 200, payload
    assert b'"revoked_sessions": 0' in payload
    assert await status(http, gateway.url + "/api/x", cookies) == 200
    target, body = revoke_body("alice")
    code, payload = await admin(gateway, "POST", target, {**JSON, "Sec-Fetch-Site": "none"}, body)
    assert code == 200, payload
    assert b'"revoked_sessions": 1' in payload
    assert await status(http, gateway.url + "/api/x", cookies) == 401


async def test_the_revoke_and_sessions_commands_still_work_on_a_memory_store(
    gateway: GatewayProcess, http: aiohttp.ClientSession, tmp_path: Path, secret: str
) -> None:
    cookies = await sign_in(http, gateway)
    cli_config = write_config(
        tmp_path,
        gateway.config.read_text(),  # the spawned config: its real admin port
        "cli.yaml",
    )
    listed = run_cli("sessions", "--user", "alice", "--config", str(cli_config), secret=secret)
    assert listed.returncode == 0 and "signed in" in listed.stdout, listed.stderr
    revoked = run_cli("revoke", "--user", "alice", "--config", str(cli_config), secret=secret)
    assert revoked.returncode == 0, revoked.stderr
    assert "1 session ended" in revoked.stdout
    assert await status(http, gateway.url + "/api/x", cookies) == 401
    assert (
        await status(http, gateway.url + "/api/x", {"refresh_token": cookies["refresh_token"]})
        == 401
    )
