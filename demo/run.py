"""Start the demo app and the gateway in front of it; stop both on Ctrl-C."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

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


def _options() -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(description="The gateway in front of the demo app.")
    parser.add_argument("config", nargs="?", default=str(ROOT / "config.yaml"))
    parser.add_argument("--port", type=int, default=int(env.get("GATEWAY_PORT", 8080)))
    parser.add_argument("--admin-port", type=int, default=int(env.get("GATEWAY_ADMIN_PORT", 9090)))
    parser.add_argument("--app-port", type=int, default=int(env.get("DEMO_APP_PORT", 3000)))
    return parser.parse_args()


def _with_ports(config: Path, options: argparse.Namespace) -> Path:
    """The config with the demo's ports; a sibling file, so relative paths in it still work."""
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    wanted = {
        "listen": f"127.0.0.1:{options.port}",
        "admin_listen": f"127.0.0.1:{options.admin_port}",
        "upstream": f"http://127.0.0.1:{options.app_port}",
    }
    if all(data.get(key) == value for key, value in wanted.items()):
        return config
    data.update(wanted)
    ported = config.with_name(f".{config.stem}.demo-ports.yaml")
    ported.write_text(
        "# made by demo/run.py from "
        + config.name
        + " with the demo's ports; deleted on exit\n"
        + yaml.safe_dump(data, sort_keys=False),
        encoding="utf-8",
    )
    return ported


def main() -> int:
    options = _options()
    ports = (options.app_port, options.port, options.admin_port)
    taken = ports_in_use(ports)
    if taken:
        listed = ", ".join(str(p) for p in taken)
        print(
            f"port {listed} on 127.0.0.1 is already in use (another demo?); pick others with"
            " --port, --admin-port, --app-port (or GATEWAY_PORT, GATEWAY_ADMIN_PORT,"
            " DEMO_APP_PORT)",
            file=sys.stderr,
        )
        return 1
    config = _with_ports(Path(options.config).resolve(), options)
    # SIGTERM (not only Ctrl-C) must unwind through the finally below, or both children
    # outlive this script and keep the ports
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    app = subprocess.Popen(
        [sys.executable, str(ROOT / "demo" / "upstream.py"), "--port", str(options.app_port)]
    )
    gateway = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL if os.environ.get("DEMO_QUIET") else None,
    )
    secret_file = os.environ.get("DEMO_SECRET_FILE")
    base, admin = f"http://127.0.0.1:{options.port}", f"http://127.0.0.1:{options.admin_port}"
    try:
        if not wait_for(f"{admin}/healthz") or gateway.poll() is not None:
            print("the gateway did not start; see the message above", file=sys.stderr)
            return 1
        wait_for(f"http://127.0.0.1:{options.app_port}/")
        print(
            f"\n  open:     {base}/dashboard  (demo app behind it: 127.0.0.1:{options.app_port})\n"
            "  sign in:  alice / wonderland  (role admin)   or   bob / builder  (role viewer)\n"
            f"  admin:    {admin}/readyz\n"
            f"  API:      curl -i {base}/api/whoami   # 401 JSON without a session\n"
            + (
                f'  CLI:      export JWT_SECRET="$(cat {secret_file})"   # for gateway explain\n'
                if secret_file
                else ""
            )
            + "  Ctrl-C stops both.\n",
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
        if config.name.endswith(".demo-ports.yaml"):
            config.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
