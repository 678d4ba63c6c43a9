"""The first run: ./scripts/run's demo on ports of the user's choosing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port
from tests.helpers import checkout_lock, locked


@pytest.fixture(autouse=True)
def one_demo_at_a_time() -> Iterator[None]:
    """The demo writes .config.demo-ports.yaml next to the checkout's config.yaml, and these
    tests check that it is gone afterwards: one at a time (xdist workers, other runs)."""
    with locked(checkout_lock("demo")):
        yield


def _start_demo(secret: str, port: int, admin: int, app: int) -> tuple[subprocess.Popen[str], str]:
    """The demo on those ports, and what it printed up to its banner (or its exit)."""
    env = {
        **os.environ,
        "JWT_SECRET": secret,
        "GATEWAY_PORT": str(port),
        "DEMO_QUIET": "1",
        "DEMO_SECRET_FILE": ".venv/demo-jwt-secret",
    }
    proc = subprocess.Popen(
        [sys.executable, "demo/run.py", "--admin-port", str(admin), "--app-port", str(app)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    banner = ""
    deadline = time.monotonic() + 30
    while "Ctrl-C stops both." not in banner and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        banner += line
    return proc, banner


def test_the_demo_runs_on_the_ports_it_is_given(secret: str) -> None:
    for _ in range(3):
        port, admin, app = free_port(), free_port(), free_port()
        proc, banner = _start_demo(secret, port, admin, app)
        if "already in use" not in banner:
            break
        # another test took one of the free ports meanwhile (the suite runs in parallel)
        proc.wait(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()
    ported = ROOT / ".config.demo-ports.yaml"
    try:
        assert f"open:     http://127.0.0.1:{port}/dashboard" in banner, banner
        assert f"admin:    http://127.0.0.1:{admin}/readyz" in banner
        assert f"(demo app behind it: 127.0.0.1:{app})" in banner
        assert 'export JWT_SECRET="$(cat .venv/demo-jwt-secret)"' in banner
        assert ported.exists()
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/whoami", timeout=5)
            raise AssertionError("expected 401")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as home:
            assert b"Anonymous" in home.read()  # the demo app answered through the gateway
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert not ported.exists()  # the generated config is removed on exit


def test_the_demo_says_which_port_is_taken(secret: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "demo/run.py", "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, "JWT_SECRET": secret},
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "--port" in result.stderr and "GATEWAY_PORT" in result.stderr
    assert not Path(ROOT / ".config.demo-ports.yaml").exists()
