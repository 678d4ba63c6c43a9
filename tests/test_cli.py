"""The commands as a user runs them: exit codes and what they print.

What a command prints and returns is checked in this process (`run_cli` calls
`gateway.cli.main`); that `python -m gateway` and the console script are that same
`main`, with its return value as the exit status, is checked by real processes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import (
    ROOT,
    SECRET_ENV,
    GatewayProcess,
    config_text,
    log_lines,
    mint,
    write_config,
)
from tests.helpers import gateway_process, run_cli


def test_check_config_accepts_the_shipped_config(
    secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    result = run_cli("check-config", "--config", "config.yaml", env={"JWT_SECRET": secret})
    assert result.returncode == 0, result.stderr
    assert "config.yaml: OK: 7 routes, default required" in result.stdout


def test_check_config_lists_every_error_and_exits_1(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, "upstream: nope\nlisten: x\ntokens: {secret_env: NOPE_X}\nbogus: 1\n"
    )
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert [line.split(": ")[1] for line in lines] == [
        "upstream",
        "listen",
        "tokens.secret_env",
        "bogus",
    ]
    assert all(line.startswith(f"{path}:") for line in lines)
    assert "Traceback" not in result.stderr


def test_check_config_uses_gateway_config_env(tmp_path: Path, secret: str) -> None:
    path = write_config(tmp_path, config_text("http://127.0.0.1:3000"))
    result = run_cli("check-config", env={"GATEWAY_CONFIG": str(path)})
    assert result.returncode == 0, result.stderr


def test_check_config_warns_about_shadowed_routes(tmp_path: Path, secret: str) -> None:
    routes = "routes:\n  - path: /:path*\n    auth: public\n  - path: /admin\n"
    path = write_config(tmp_path, config_text("http://127.0.0.1:3000", routes=routes))
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 0
    assert "routes[1] (/admin) can never match: routes[0] (/:path*)" in result.stderr


def test_serve_with_bad_config_exits_2_with_located_message(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, "upstream: http://127.0.0.1:3000\ntokens: {secret_env: UNSET_VAR_X}\n"
    )
    result = gateway_process("serve", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"gateway: invalid config: {path}:2:22: tokens.secret_env:"
        " environment variable UNSET_VAR_X is not set or empty"
    )


def test_serve_with_missing_config_exits_2(tmp_path: Path) -> None:
    result = run_cli("serve", "--config", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2
    assert "cannot read the config file" in result.stderr
    assert "Traceback" not in result.stderr


def test_explain_prints_route_and_decision(tmp_path: Path, secret: str) -> None:
    path = write_config(tmp_path, config_text("http://127.0.0.1:3000"))
    anonymous = run_cli("explain", "--config", str(path), "GET", "/public/../admin/x")
    assert anonymous.returncode == 0
    assert "GET /admin/x" in anonymous.stdout
    assert "route:    /admin/:path* (routes[1] line" in anonymous.stdout
    assert "roles:    any of admin" in anonymous.stdout
    assert (
        "decision: 401 JSON (a browser navigation gets 302 to /login?next=...: see --browser)"
        in anonymous.stdout
    )
    viewer = run_cli(
        "explain",
        "--config",
        str(path),
        "GET",
        "/admin/x",
        "--token",
        mint(secret, roles=["viewer"]),
    )
    assert "token:    valid, sub=alice, roles: viewer" in viewer.stdout
    assert "decision: 403 (authenticated, but lacks a required role)" in viewer.stdout
    expired = run_cli(
        "explain", "--config", str(path), "GET", "/admin/x", "--token", mint(secret, exp=1, iat=0)
    )
    assert "token:    rejected (expired)" in expired.stdout
    bad = run_cli("explain", "--config", str(path), "GET", "/admin%2fx")
    assert "decision: 400 bad request" in bad.stdout
    login = run_cli("explain", "--config", str(path), "GET", "/login")
    assert "answered by the gateway itself" in login.stdout
    other = run_cli("explain", "--config", str(path), "post", "/nowhere")
    assert "route:    (default) (no route matched)" in other.stdout


async def test_admin_endpoints_only_on_the_admin_listener(
    spawn_gateway: Callable[[str], GatewayProcess], upstream_url: str
) -> None:
    gw = spawn_gateway(config_text(upstream_url, routes="routes: []\ndefault: public\n"))
    async with aiohttp.ClientSession() as session:
        for path in ("/healthz", "/readyz"):
            async with session.get(gw.admin_url + path) as response:
                assert response.status == 200
            # on the public listener the same path is only a path of the app
            async with session.get(gw.url + path) as response:
                assert (await response.json())["method"] == "GET"  # the echo upstream answered


async def test_sigterm_exits_0_and_access_log_is_json_without_tokens(
    spawn_gateway: Callable[[str], GatewayProcess], upstream_url: str, secret: str
) -> None:
    gw = spawn_gateway(config_text(upstream_url))
    token = mint(secret)
    cookie = f"access_token={token}; refresh_token=rrr.sss.ttt"
    async with aiohttp.ClientSession() as session:
        async with session.get(
            gw.url + "/api/x?q=1", headers={"Cookie": cookie, "X-Request-Id": "rid-1"}
        ) as response:
            assert response.status == 200
        async with session.get(gw.url + "/api/y") as response:
            assert response.status == 401
    gw.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(gw.proc.wait, 30) == 0
    text = gw.log.read_text()
    assert token not in text and "rrr.sss.ttt" not in text
    for part in token.split("."):
        assert part not in text
    records = [r for r in log_lines(gw.log) if r.get("logger") == "gateway.access"]
    first = next(r for r in records if r["request_id"] == "rid-1")
    assert first["method"] == "GET"
    assert first["path"] == "/api/x"
    assert first["status"] == 200
    assert first["upstream_status"] == 200
    assert first["user"] == "alice"
    assert first["decision"] == "allow"
    assert first["route"] == "/api/:path*"
    assert isinstance(first["duration_ms"], float)
    second = next(r for r in records if r["path"] == "/api/y")
    assert (second["status"], second["decision"], second["user"]) == (401, "unauthorized", None)


def test_python_dash_m_and_console_script_agree(secret: str) -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "gateway"), "check-config", "--config", "config.yaml"],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "JWT_SECRET": secret},
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_no_secret_env_means_no_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
    path = write_config(tmp_path, config_text("http://127.0.0.1:3000"))
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(path)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"{SECRET_ENV} is not set" in result.stderr
