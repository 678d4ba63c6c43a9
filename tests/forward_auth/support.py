"""nginx, Caddy and HAProxy run from the configurations of docs/forward-auth.md, an app that
records what it receives, and a raw HTTP/1.1 client, for tests/test_forward_auth.py.

The proxies' configurations are read out of the docs page, not kept here: what the page shows
is what runs. The test changes only addresses (the proxy on a free loopback port, the app and
the gateway on theirs, the cache directory in tmp) and wraps them where the docs say the stock
install does (tests/ingress: nginx's main `nginx.conf` includes the site file; Caddy's global
options say: no admin endpoint, no certificates, loopback only).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.conftest import dechunk
from tests.ingress.support import (
    CADDY,
    HAPROXY,
    NGINX,
    ROOT,
    Proxy,
    code_blocks,
    doc_block,
    free_port,
    nginx_command,
    replace_once,
    require,
)
from tests.ingress.support import (
    HERE as INGRESS,
)

FORWARD_AUTH = ROOT / "docs" / "forward-auth.md"

# first lines of the docs' code blocks
GATEWAY_CONFIG = "# config.yaml: the gateway deciding for an outer proxy on the same host"
NGINX_SITE = "# /etc/nginx/conf.d/app.conf: nginx carries the traffic, the gateway decides"
NGINX_CACHED = "# nginx: the subrequest's location, with the gateway's 200s kept for 1 s"
CADDYFILE = "# /etc/caddy/Caddyfile: Caddy carries the traffic, the gateway decides"
HAPROXY_LUA = "-- /etc/haproxy/gateway-auth.lua: HAProxy asks the gateway about each request"
HAPROXY_CFG = "# /etc/haproxy/haproxy.cfg: HAProxy carries the traffic, the gateway decides"

# the addresses in the docs' configurations
DOCS_GATEWAY = "127.0.0.1:8080"
DOCS_APP = "127.0.0.1:3000"
DOCS_CACHE_DIR = "/run/nginx-gateway-decisions"


def docs(first_line: str) -> str:
    return doc_block(first_line, FORWARD_AUTH)


def cache_path_line() -> str:
    """The docs' `proxy_cache_path` line: the one-line nginx block that starts with it."""
    found = [
        b
        for b in code_blocks(FORWARD_AUTH)
        if b.startswith("proxy_cache_path ") and len(b.splitlines()) == 1
    ]
    assert len(found) == 1, f"{len(found)} proxy_cache_path blocks in forward-auth.md"
    return found[0].strip()


def nginx_site(gateway_port: int, app_port: int, port: int, cached: Path | None = None) -> str:
    """The docs' site; with `cached` (a directory), its subrequest location replaced by the
    docs' cached one and the docs' `proxy_cache_path` pointed at that directory."""
    text = docs(NGINX_SITE)
    if cached is not None:
        start = text.index("    location = /_gateway/auth {")
        end = text.index("\n    }\n", start) + len("\n    }\n")
        location = "".join(
            "    " + line + "\n" if line else "\n" for line in docs(NGINX_CACHED).splitlines()[1:]
        )
        text = text[:start] + location + text[end:]
        path_line = replace_once(cache_path_line(), DOCS_CACHE_DIR, str(cached))
        text = path_line + "\n" + text
    text = replace_once(text, f"server {DOCS_GATEWAY};", f"server 127.0.0.1:{gateway_port};")
    text = replace_once(text, f"server {DOCS_APP};", f"server 127.0.0.1:{app_port};")
    return replace_once(text, "listen 80;", f"listen 127.0.0.1:{port};")


def caddyfile(gateway_port: int, app_port: int, port: int) -> str:
    text = replace_once(docs(CADDYFILE), "app.example.com {", f"http://127.0.0.1:{port} {{")
    assert text.count(DOCS_GATEWAY) == 3, text  # /login, /logout, forward_auth
    text = text.replace(DOCS_GATEWAY, f"127.0.0.1:{gateway_port}")
    text = replace_once(text, f"reverse_proxy {DOCS_APP}", f"reverse_proxy 127.0.0.1:{app_port}")
    return (INGRESS / "Caddyfile.global").read_text() + text


def haproxy_files(directory: Path, gateway_port: int, app_port: int, port: int) -> Path:
    """The docs' Lua action and haproxy.cfg, written to `directory`; the config's path."""
    lua = directory / "gateway-auth.lua"
    decide = f"http://{DOCS_GATEWAY}/_gateway/auth?redirect=1"
    lua.write_text(
        replace_once(
            docs(HAPROXY_LUA), decide, decide.replace(DOCS_GATEWAY, f"127.0.0.1:{gateway_port}")
        )
    )
    text = replace_once(
        docs(HAPROXY_CFG), "lua-load /etc/haproxy/gateway-auth.lua", f"lua-load {lua}"
    )
    text = replace_once(text, "bind :80\n", f"bind 127.0.0.1:{port}\n")
    text = replace_once(text, f"server app {DOCS_APP}", f"server app 127.0.0.1:{app_port}")
    text = replace_once(
        text, f"server gateway {DOCS_GATEWAY}", f"server gateway 127.0.0.1:{gateway_port}"
    )
    config = directory / "haproxy.cfg"
    config.write_text(text)
    return config


def start_proxy(
    name: str,
    directory: Path,
    gateway_port: int,
    app_port: int,
    cached: bool = False,
    site: str | None = None,
) -> Proxy:
    """`name` run from its forward-auth docs configuration (or `site`, already addressed)."""
    executable = require(name)
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = dict(os.environ)
    if name == NGINX:
        site_file = directory / "app.conf"
        cache = directory / "decisions" if cached else None
        site_file.write_text(site or nginx_site(gateway_port, app_port, port, cache))
        command = nginx_command(executable, directory, site_file)
        config = directory / "nginx.conf"
    elif name == CADDY:
        config = directory / "Caddyfile"
        config.write_text(site or caddyfile(gateway_port, app_port, port))
        for var in ("HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
            env[var] = str(directory / "home")
        command = [executable, "run", "--config", str(config), "--adapter", "caddyfile"]
    elif name == HAPROXY:
        config = haproxy_files(directory, gateway_port, app_port, port)
        command = [executable, "-f", str(config), "-db"]
    else:
        raise ValueError(name)
    output = directory / "output.txt"
    with output.open("wb") as sink:
        proc = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    proxy = Proxy(name, port, proc, output, config)
    _wait_listening(proxy)
    return proxy


def _wait_listening(proxy: Proxy) -> None:
    deadline = time.monotonic() + 20
    while True:
        if proxy.proc.poll() is not None:
            raise RuntimeError(
                f"{proxy.name} exited with {proxy.proc.returncode}:\n{proxy.log()[-3000:]}"
            )
        try:
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=0.5):
                return
        except OSError:
            late = time.monotonic() > deadline
        if late:
            proxy.stop()
            raise RuntimeError(f"{proxy.name} did not listen within 20s:\n{proxy.log()[-3000:]}")
        time.sleep(0.05)


# -- the app: an echo upstream that remembers what reached it ---------------------------


@dataclass
class Seen:
    method: str
    raw_path: str
    headers: list[tuple[str, str]]

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass
class App:
    received: list[Seen] = field(default_factory=list)

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/status/{code:[0-9]+}", self._status)
        app.router.add_route("*", "/{tail:.*}", self._echo)
        return app

    def _record(self, request: web.Request) -> Seen:
        seen = Seen(request.method, request.raw_path, list(request.headers.items()))
        self.received.append(seen)
        return seen

    async def _echo(self, request: web.Request) -> web.Response:
        seen = self._record(request)
        payload: dict[str, Any] = {
            "app": True,
            "method": seen.method,
            "path": seen.raw_path,
            "headers": [list(h) for h in seen.headers],
        }
        return web.json_response(payload)

    async def _status(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.Response(status=int(request.match_info["code"]), text="from the app")


# -- a raw HTTP/1.1 request: client libraries "fix" the paths under test ----------------


@dataclass
class Raw:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        found = [v for k, v in self.headers if k.lower() == name.lower()]
        return found[0] if found else None


async def raw_get(
    port: int, target: str, headers: dict[str, str] | None = None, source: str = "127.0.0.2"
) -> Raw:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    lines = [f"GET {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = []
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed.append((name.strip(), value.strip()))
    if any(k.lower() == "transfer-encoding" and "chunked" in v for k, v in parsed):
        body = dechunk(body)
    return Raw(int(status_line.split()[1]), parsed, body)
