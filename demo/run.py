"""Start the demo app and the gateway in front of it; stop both on Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def wait_for(url: str, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback, fixed scheme
                return True
        except OSError:
            time.sleep(0.1)
    return False


def ports_in_use(ports: tuple[int, ...]) -> list[int]:
    """Ports something already listens on: another demo answering would fool the health check."""
    taken = []
    for port in ports:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                taken.append(port)
    return taken


def main() -> int:
    config = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "config.yaml")
    taken = ports_in_use((3000, 8080, 9090))
    if taken:
        ports = ", ".join(str(p) for p in taken)
        print(f"port {ports} on 127.0.0.1 is already in use (another demo?)", file=sys.stderr)
        return 1
    # SIGTERM (not only Ctrl-C) must unwind through the finally below, or both children
    # outlive this script and keep the ports
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    app = subprocess.Popen([sys.executable, str(ROOT / "demo" / "upstream.py")])
    gateway = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", config],
        stdout=subprocess.DEVNULL if os.environ.get("DEMO_QUIET") else None,
    )
    try:
        if not wait_for("http://127.0.0.1:9090/healthz") or gateway.poll() is not None:
            print("the gateway did not start; see the message above", file=sys.stderr)
            return 1
        wait_for("http://127.0.0.1:3000/")
        print(
            "\n  open:     http://127.0.0.1:8080/dashboard  (demo app behind it: 127.0.0.1:3000)\n"
            "  sign in:  alice / wonderland  (role admin)   or   bob / builder  (role viewer)\n"
            "  admin:    http://127.0.0.1:9090/readyz\n"
            "  API:      curl -i http://127.0.0.1:8080/api/whoami   # 401 JSON without a session\n"
            "  Ctrl-C stops both.\n",
            flush=True,
        )
        gateway.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for proc in (gateway, app):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (gateway, app):
            try:
                proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
