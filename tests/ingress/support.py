"""Real proxies (nginx, Caddy, HAProxy) run from the configurations in docs/deployment.md,
the code blocks of a docs page, and headless Chromium.

The proxies' configurations are read out of the docs page, not kept here: what the page shows
is what runs. The test changes only addresses (listen on a free loopback port, the gateway on
its own port) and wraps them where the docs say the stock install does (nginx's main
`nginx.conf` includes the site file; Caddy's global options say: no admin endpoint, no
certificates, loopback only).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DEPLOYMENT = ROOT / "docs" / "deployment.md"

# the gateway's address in the docs' proxy configurations
DOCS_GATEWAY = "127.0.0.1:8080"

NGINX_SITE = "# /etc/nginx/conf.d/gateway.conf"
NGINX_WRONG = "# WRONG: a bare proxy_pass"
CADDYFILE = "# /etc/caddy/Caddyfile"
HAPROXY_CFG = "# /etc/haproxy/haproxy.cfg"
GATEWAY_BEHIND_PROXY = "# config.yaml: the gateway behind a proxy on the same host"

_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)


def nginx_command(executable: str, directory: Path, site: Path) -> list[str]:
    """Debian's nginx run from `directory` (nothing under /etc or /var), serving `site`."""
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (directory / sub).mkdir(exist_ok=True)
    config = directory / "nginx.conf"
    text = (HERE / "nginx.conf").read_text()
    for key, value in {
        "prefix": str(directory),
        "site": str(site),
        # as root, nginx would hand its workers to 'nobody', who cannot read tmp: keep ours
        "user": "user root;" if os.geteuid() == 0 else "",
    }.items():
        text = text.replace(f"@{key}@", value)
    config.write_text(text)
    return [
        executable, "-p", str(directory), "-e", str(directory / "error.log"),
        "-c", str(config), "-g", "daemon off;",
    ]  # fmt: skip


def code_blocks(page: Path) -> list[str]:
    return _FENCE.findall(page.read_text())


def doc_block(first_line: str, page: Path = DEPLOYMENT) -> str:
    """The one fenced code block of `page` whose first line is `first_line`."""
    found = [b for b in code_blocks(page) if b.splitlines()[:1] == [first_line]]
    assert len(found) == 1, f"{page.name}: {len(found)} code blocks start with {first_line!r}"
    return found[0]


def replace_once(text: str, old: str, new: str) -> str:
    """`old` must occur exactly once: a docs edit that moves it fails here, loudly."""
    assert text.count(old) == 1, f"expected {old!r} exactly once in:\n{text}"
    return text.replace(old, new)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- proxies ----------------------------------------------------------------------------


NGINX = "nginx"
CADDY = "caddy"
HAPROXY = "haproxy"

_INSTALL = {NGINX: "nginx-light", CADDY: "caddy", HAPROXY: "haproxy"}


def binary(name: str) -> str | None:
    found = shutil.which(name)
    if found is None and name in (NGINX, HAPROXY):
        path = f"/usr/sbin/{name}"
        found = path if os.access(path, os.X_OK) else None
    return found


def require(name: str) -> str:
    path = binary(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian: apt-get install {_INSTALL[name]})")
    return path


@dataclass
class Proxy:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    output: Path
    config: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.output.read_text(errors="replace")


def nginx_site(block: str, port: int, gateway_port: int) -> str:
    text = replace_once(block, f"server {DOCS_GATEWAY};", f"server 127.0.0.1:{gateway_port};")
    return replace_once(text, "listen 80;", f"listen 127.0.0.1:{port};")


def caddyfile(block: str, port: int, gateway_port: int) -> str:
    text = replace_once(block, "app.example.com {", f"http://127.0.0.1:{port} {{")
    gateway = f"127.0.0.1:{gateway_port}"
    text = replace_once(text, f"reverse_proxy {DOCS_GATEWAY}", f"reverse_proxy {gateway}")
    return (HERE / "Caddyfile.global").read_text() + text


def haproxy_cfg(block: str, port: int, gateway_port: int) -> str:
    text = replace_once(block, "bind :80\n", f"bind 127.0.0.1:{port}\n")
    gateway = f"127.0.0.1:{gateway_port}"
    return replace_once(text, f"server gateway {DOCS_GATEWAY}", f"server gateway {gateway}")


def start_proxy(name: str, directory: Path, gateway_port: int, block: str | None = None) -> Proxy:
    """`name` run from its docs configuration (or `block`) in front of the gateway's port."""
    executable = require(name)
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = dict(os.environ)
    if name == NGINX:
        site = directory / "gateway.conf"
        site.write_text(nginx_site(block or doc_block(NGINX_SITE), port, gateway_port))
        command = nginx_command(executable, directory, site)
        config = directory / "nginx.conf"
    elif name == CADDY:
        config = directory / "Caddyfile"
        config.write_text(caddyfile(block or doc_block(CADDYFILE), port, gateway_port))
        # Caddy keeps state under $HOME / XDG dirs: keep it in tmp
        for var in ("HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
            env[var] = str(directory / "home")
        command = [executable, "run", "--config", str(config), "--adapter", "caddyfile"]
    elif name == HAPROXY:
        config = directory / "haproxy.cfg"
        config.write_text(haproxy_cfg(block or doc_block(HAPROXY_CFG), port, gateway_port))
        command = [executable, "-f", str(config), "-db"]
    else:
        raise ValueError(name)
    output = directory / "output.txt"
    with output.open("wb") as sink:
        proc = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    proxy = Proxy(name, port, proc, output, config)
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{proxy.log()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proxy
        except OSError:
            late = time.monotonic() > deadline
        if late:
            proxy.stop()
            raise RuntimeError(f"{name} did not listen within 20s:\n{proxy.log()[-3000:]}")
        time.sleep(0.05)


@contextmanager
def running_proxy(
    name: str, directory: Path, gateway_port: int, block: str | None = None
) -> Iterator[Proxy]:
    proxy = start_proxy(name, directory, gateway_port, block)
    try:
        yield proxy
    finally:
        proxy.stop()


# -- headless Chromium ------------------------------------------------------------------


def _find(*names: str) -> str | None:
    return next((path for name in names if (path := shutil.which(name))), None)


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    """A headless Chromium driven by Selenium; skips when it is not installed."""
    browser = _find("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    driver = _find("chromedriver")
    if browser is None or driver is None:
        pytest.skip(
            "chromium or chromedriver not found on PATH"
            " (Debian: apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
    ):
        options.add_argument(argument)
    chrome = webdriver.Chrome(options=options, service=Service(driver))
    try:
        chrome.set_page_load_timeout(15)
        yield chrome
    finally:
        chrome.quit()
