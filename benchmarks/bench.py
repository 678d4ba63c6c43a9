"""Throughput of the gateway next to what it is measured against, all from one run.

Four targets, each loaded by wrk with the same settings and the same request
(the same valid access cookie, so every front server parses the same bytes):

  direct         the upstream itself: a small aiohttp app answering 200 bytes of JSON
  minimal-proxy  a few-line aiohttp pass-through proxy in front of that upstream
  gateway        `python -m gateway serve` in front of that upstream, route auth: required,
                 the default memory:// store
  gateway+redis  the same with `store: redis://` (a real redis-server started for the run)
                 and a users_file login: the cookie comes from a real POST /login, so every
                 request's revocation check (deny, cut-off and dead-family keys) is read from
                 Redis; the gateway may share one MGET among the requests of one loop turn

Each runs as its own process, with uvloop when it is importable. The figures that
matter are ratios within one round: gateway / minimal-proxy (target >= 0.80) and
gateway+redis / minimal-proxy (target >= 0.60). Both gateways and the minimal proxy do
the same network work, so the ratios are what authentication, header hygiene, the
access log and the store cost. A measurement, not a test: exits 0 whatever the ratios,
1 when the setup fails or a target answered anything but 2xx.

The machine may be shared (a VM's steal time included): each measurement records the
share of the front CPU that other jobs took, from /proc/stat. A round in which they took
more than NOISE of it while the minimal proxy or the gateway ran is marked noisy, and the
medians of the clean rounds are printed beside those of all rounds.

Usage: ./benchmarks/run [--duration 10] [--connections 32] [--threads 1] [--warmup 2]
See also benchmarks/refresh.py (./benchmarks/run refresh): refresh rotations per second.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "latest.json"
TARGET_RATIO = 0.80
REDIS_TARGET_RATIO = 0.60  # gateway+redis / minimal proxy
HOST = "127.0.0.1"
PATH = "/bench/x"
COOKIE_NAME = "access_token"
REFRESH_COOKIE = "refresh_token"
USERNAME = "bench"
# Long enough for any run the options allow; the figures do not depend on it (the
# verified-token cache is keyed by the token, and rotation does not look at it).
ACCESS_TTL = "24h"


def _fixed_body(size: int = 200) -> bytes:
    head = b'{"ok":true,"items":[1,2,3],"pad":"'
    tail = b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


BODY = _fixed_body()
HOP_BY_HOP = frozenset(
    (
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    )
)


class SetupFailed(Exception):
    """The benchmark could not measure what it claims to; the message says why."""


# --------------------------------------------------------------------------- child processes


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def serve(role: str, port: int, upstream: str) -> None:
    """Run the upstream or the minimal proxy until SIGTERM/SIGINT (a child process)."""
    import aiohttp
    from aiohttp import web

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="application/json")

    session_key = web.AppKey("session", aiohttp.ClientSession)

    async def client(app: web.Application) -> Any:
        app[session_key] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
        )
        yield
        await app[session_key].close()

    async def forward(request: web.Request) -> web.Response:
        # The minimal pass-through: same method, path and headers; status, headers and body back.
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        data = request.content if request.body_exists else None
        async with request.app[session_key].request(
            request.method,
            upstream + request.raw_path,
            headers=headers,
            data=data,
            allow_redirects=False,
        ) as response:
            body = await response.read()
            back = [
                (k, v)
                for k, v in response.headers.items()
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"
            ]
            return web.Response(status=response.status, headers=back, body=body)

    app = web.Application()
    if role == "upstream":
        app.router.add_route("*", "/{tail:.*}", answer)
    else:
        app.cleanup_ctx.append(client)
        app.router.add_route("*", "/{tail:.*}", forward)

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            # reuse_port: benchmarks/workers.py runs two upstream processes on one port
            await web.TCPSite(runner, HOST, port, reuse_port=role == "upstream").start()
            await stop.wait()
        finally:
            await runner.cleanup()

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(main())


# --------------------------------------------------------------------------- helpers


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together so they cannot repeat)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - loopback http
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ready(url: str, proc: subprocess.Popen[bytes], name: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SetupFailed(f"{name} exited with code {proc.returncode} while starting")
        try:
            if fetch(url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SetupFailed(f"{name} did not answer 200 at {url} within {seconds:.0f}s")


def access_claims() -> dict[str, Any]:
    """A valid access token's claims for the gateway's default issuer and audience."""
    now = int(time.time())
    return {
        "sub": "bench-user",
        "email": "bench@example.com",
        "roles": ["user"],
        "typ": "access",
        "iss": "gateway",
        "aud": "upstream",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "jti": uuid.uuid4().hex,
    }


def gateway_config(
    port: int,
    admin_port: int,
    upstream_port: int,
    *,
    store: str | None = None,
    users_file: Path | None = None,
) -> str:
    """The benchmark's gateway config; with `store` and `users_file`, sessions and a login."""
    sessions = users_file is not None
    lines = [
        f"listen: {HOST}:{port}",
        f"admin_listen: {HOST}:{admin_port}",
        f"upstream: http://{HOST}:{upstream_port}",
        "tokens:",
        "  algorithm: HS256",
        "  secret_env: JWT_SECRET",
        "  issuer: gateway",
        "  audience: upstream",
        *([f"  access_ttl: {ACCESS_TTL}"] if sessions else []),
        "cookies:",
        f"  access: {COOKIE_NAME}",
        *([f"  refresh: {REFRESH_COOKIE}", "  secure: false"] if sessions else []),
        *([f"store: {store}", "store_timeout: 500ms"] if store else []),
        *(["login:", f"  users_file: {users_file}"] if sessions else []),
        "routes:",
        "  - path: /bench/:path*",
        "    auth: required",
        "    on_unauthenticated: status",
        "default: deny",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- sessions


def write_users_file(path: Path, password: str) -> None:
    """One user, its argon2id hash made by `gateway hash-password` (password on stdin)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "hash-password"],
            input=password + "\n",
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        raise SetupFailed("gateway hash-password did not finish in 60 s") from None
    if done.returncode != 0 or not done.stdout.startswith("$argon2id$"):
        raise SetupFailed(f"gateway hash-password failed: {done.stderr.strip()}")
    path.write_text(
        f"{USERNAME}:\n"
        f'  password_hash: "{done.stdout.strip()}"\n'
        "  email: bench@example.com\n"
        "  roles: [user]\n"
    )


def set_cookies(values: list[str]) -> dict[str, str]:
    """name -> value of each Set-Cookie header (attributes dropped)."""
    found = {}
    for value in values:
        name, _, rest = value.partition("=")
        found[name.strip()] = rest.partition(";")[0].strip()
    return found


def sign_in(port: int, password: str, username: str = USERNAME) -> dict[str, str]:
    """POST /login (JSON) to a running gateway; the session cookies it sets."""
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        body = json.dumps({"username": username, "password": password})
        connection.request(
            "POST", "/login", body=body, headers={"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        response.read()
        cookies = set_cookies(response.headers.get_all("Set-Cookie") or [])
    finally:
        connection.close()
    if response.status != 303 or not cookies.get(COOKIE_NAME) or not cookies.get(REFRESH_COOKIE):
        raise SetupFailed(f"POST /login: expected 303 and both cookies, got {response.status}")
    return cookies


def post(port: int, path: str, cookie: str) -> int:
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        connection.request("POST", path, headers={"Cookie": cookie, "Content-Length": "0"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def start_redis(children: Processes, tmp: Path) -> tuple[Any, Any]:
    """A redis-server for the run (tests/redis_server.py) and a client to read its stats."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import redis

    from tests.redis_server import RedisServer

    directory = tmp / "redis"
    directory.mkdir()
    try:
        server = RedisServer(directory)
        server.start()
    except RuntimeError as exc:
        raise SetupFailed(f"redis: {exc}") from None
    assert server.proc is not None  # noqa: S101 - start() set it
    children.procs.append(("redis", server.proc))
    return server, redis.Redis(host=HOST, port=server.port, socket_timeout=5)


def redis_counts(client: Any) -> dict[str, int]:
    """Redis's counters: MGET and EVALSHA calls (INFO commandstats), and keys read.

    keys_read (keyspace hits + misses) counts every key a read command looked up, so
    it shows each request's revocation check even when one MGET serves several requests.
    """
    commands = client.info("commandstats")
    stats = client.info("stats")
    return {
        "mget": int(commands.get("cmdstat_mget", {}).get("calls", 0)),
        "evalsha": int(commands.get("cmdstat_evalsha", {}).get("calls", 0)),
        "keys_read": int(stats["keyspace_hits"]) + int(stats["keyspace_misses"]),
    }


def code_version() -> dict[str, Any]:
    """The commit measured, and whether gateway/ differed from it (others may be editing)."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    return {
        "commit": git("rev-parse", "--short", "HEAD") or None,
        "gateway_modified": bool(git("status", "--porcelain", "--", "gateway")),
    }


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process from /proc (Linux); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- wrk

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_LATENCY = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.M)
_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass
class Measured:
    target: str
    url: str
    requests_per_s: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: dict[str, int]
    front_cpu_us_per_req: float | None
    upstream_cpu_us_per_req: float | None
    # gateway+redis only, per request: Redis's own CPU, MGETs Redis ran, keys it read
    redis_cpu_us_per_req: float | None = None
    redis_mget_per_req: float | None = None
    redis_keys_read_per_req: float | None = None
    # the share of the front CPU that other jobs (or the hypervisor: steal) took meanwhile
    others_on_front_cpu: float | None = None


# A round is noisy when other jobs took more than this share of the front CPU while the
# minimal proxy or the gateway was measured: the two are then not compared on equal terms.
NOISE = 0.10
NOISE_BOUND = ("minimal-proxy", "gateway")


# On a machine with 2+ CPUs the front process under test (minimal proxy or gateway) gets
# a CPU of its own, and wrk and the upstream share another: without this, the three
# compete for the same cores and the ratio swings by +-15% from run to run.
_FRONT_CPU, _LOAD_CPU = ({1}, {0}) if (os.cpu_count() or 1) >= 2 else (None, None)
_PIN_LOAD = ["taskset", "-c", "0"] if _LOAD_CPU and shutil.which("taskset") else []


def cpu_busy(cpus: set[int] | None) -> float | None:
    """Seconds the given CPUs spent busy (not idle or iowait), from /proc/stat (Linux)."""
    if not cpus:
        return None
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    total = 0.0
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            ticks = list(map(int, fields[:8]))
            total += sum(ticks) - ticks[3] - ticks[4]  # less idle and iowait
    return total / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpus: set[int] | None) -> None:
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, cpus)


def wrk(url: str, *, duration: int, connections: int, threads: int, header: str) -> str:
    wrk_bin = shutil.which("wrk")
    if wrk_bin is None:
        raise SetupFailed("wrk not found on PATH; on Debian/Ubuntu: apt-get install wrk")
    args = [
        *_PIN_LOAD,
        wrk_bin,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "5s",
        "--latency",
        "-H",
        header,
        url,
    ]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=duration + 30)
    except subprocess.TimeoutExpired:
        raise SetupFailed(f"wrk against {url} did not finish in time") from None
    if done.returncode != 0:
        raise SetupFailed(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def parse_wrk(output: str) -> dict[str, Any]:
    rps = _RPS.search(output)
    total = _TOTAL.search(output)
    latencies = {p: float(v) * _UNITS[u] for p, v, u in _LATENCY.findall(output)}
    if rps is None or total is None or not {"50", "99"} <= latencies.keys():
        raise SetupFailed("could not parse wrk's output:\n" + output)
    non2xx = _NON2XX.search(output)
    sock = _SOCKET.search(output)
    errors = dict(
        zip(("connect", "read", "write", "timeout"), map(int, sock.groups()), strict=True)
        if sock
        else {}
    )
    return {
        "requests_per_s": float(rps.group(1)),
        "requests": int(total.group(1)),
        "latency_ms": latencies,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors,
    }


# --------------------------------------------------------------------------- the run


class Processes:
    """Every child started, stopped in reverse order however the run ends."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, args: list[str], stderr: Path, **kwargs: Any
    ) -> subprocess.Popen[bytes]:
        with stderr.open("wb") as err:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(args, cwd=ROOT, stderr=err, **kwargs)
        self.procs.append((name, proc))
        return proc

    def stop_all(self) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for _name, proc in reversed(self.procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def run(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        raise SetupFailed("wrk not found on PATH; on Debian/Ubuntu: apt-get install wrk")
    children = Processes()
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        try:
            return _run(args, children, Path(tmp))
        finally:
            children.stop_all()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


RATIOS = {  # name -> (numerator, denominator), each taken within one round
    "gateway_over_minimal_proxy": ("gateway", "minimal-proxy"),
    "gateway_redis_over_minimal_proxy": ("gateway+redis", "minimal-proxy"),
    "gateway_over_direct": ("gateway", "direct"),
    "gateway_redis_over_direct": ("gateway+redis", "direct"),
    "gateway_redis_over_gateway": ("gateway+redis", "gateway"),
    "minimal_proxy_over_direct": ("minimal-proxy", "direct"),
}


def _noisy(measured: dict[str, Measured]) -> list[str]:
    return [
        f"{name}: others {m.others_on_front_cpu:.0%}"
        for name in NOISE_BOUND
        if (m := measured[name]).others_on_front_cpu is not None and m.others_on_front_cpu > NOISE
    ]


def _share(value: float | None) -> str:
    return f"{value:.0%}" if value is not None else "-"


def _ratio(measured: dict[str, Measured], name: str) -> float:
    top, bottom = RATIOS[name]
    return measured[top].requests_per_s / measured[bottom].requests_per_s


def _cpu_ratio(measured: dict[str, Measured], name: str) -> float | None:
    """The same ratio from the front process's CPU per request (bottom's over top's).

    With the front process saturated, throughput is 1 / CPU per request; time the
    machine gives to other processes lowers req/s but not CPU per request.
    """
    top, bottom = RATIOS[name]
    cpu_top, cpu_bottom = measured[top].front_cpu_us_per_req, measured[bottom].front_cpu_us_per_req
    return cpu_bottom / cpu_top if cpu_top and cpu_bottom else None


def _run(args: argparse.Namespace, children: Processes, tmp: Path) -> int:
    up_port, proxy_port, gw_port, admin_port, rgw_port, radmin_port = free_ports(6)
    upstream = f"http://{HOST}:{up_port}"
    me = [sys.executable, str(Path(__file__).resolve())]
    loop_name = "uvloop" if _loop_factory() is not None else "asyncio"
    secret = secrets.token_urlsafe(48)  # 64 bytes; both gateways verify with it
    password = secrets.token_urlsafe(16)

    names = ("upstream", "minimal-proxy", "gateway", "gateway+redis")
    logs = {name: tmp / f"{name}.stderr" for name in names}
    upstream_proc = children.start(
        "upstream",
        [*me, "--serve", "upstream", "--port", str(up_port)],
        stderr=logs["upstream"],
    )
    proxy_proc = children.start(
        "minimal-proxy",
        [*me, "--serve", "proxy", "--port", str(proxy_port), "--upstream", upstream],
        stderr=logs["minimal-proxy"],
    )
    redis_server, redis_client = start_redis(children, tmp)
    users = tmp / "users.yaml"
    write_users_file(users, password)
    gateway_env = {**os.environ, "JWT_SECRET": secret}
    gateways = {}
    for name, port, admin, store in (
        ("gateway", gw_port, admin_port, None),
        ("gateway+redis", rgw_port, radmin_port, redis_server.url),
    ):
        config = tmp / f"{name}.yaml"
        config.write_text(
            gateway_config(port, admin, up_port, store=store, users_file=users if store else None)
        )
        gateways[name] = children.start(
            name,
            [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
            env=gateway_env,
            stdout=subprocess.DEVNULL,  # the JSON access log: one line per request
            stderr=logs[name],
        )
    gateway_proc, redis_gw_proc = gateways["gateway"], gateways["gateway+redis"]
    pin(upstream_proc.pid, _LOAD_CPU)
    pin(redis_server.proc.pid, _LOAD_CPU)
    pin(proxy_proc.pid, _FRONT_CPU)
    pin(gateway_proc.pid, _FRONT_CPU)
    pin(redis_gw_proc.pid, _FRONT_CPU)
    try:
        wait_ready(f"{upstream}/", upstream_proc, "upstream")
        wait_ready(f"http://{HOST}:{proxy_port}/", proxy_proc, "minimal proxy")
        for name, admin in (("gateway", admin_port), ("gateway+redis", radmin_port)):
            proc = gateways[name]
            wait_ready(f"http://{HOST}:{admin}/healthz", proc, f"{name} (admin /healthz)")
            wait_ready(f"http://{HOST}:{admin}/readyz", proc, f"{name} (admin /readyz)")
        # A real sign-in: the access token carries jti, fam and iat as every session's does.
        session = sign_in(rgw_port, password)
    except SetupFailed:
        for name, log in logs.items():
            if text := _tail(log):
                print(f"--- {name} stderr ---\n{text}", file=sys.stderr)
        raise
    token = session[COOKIE_NAME]
    cookie = f"{COOKIE_NAME}={token}"

    targets = {
        "direct": (f"{upstream}{PATH}", upstream_proc),
        "minimal-proxy": (f"http://{HOST}:{proxy_port}{PATH}", proxy_proc),
        "gateway": (f"http://{HOST}:{gw_port}{PATH}", gateway_proc),
        "gateway+redis": (f"http://{HOST}:{rgw_port}{PATH}", redis_gw_proc),
    }
    # One request each first, so the benchmark cannot silently measure error responses.
    for name, (url, _proc) in targets.items():
        status, body = fetch(url, {"Cookie": cookie})
        if status != 200 or body != BODY:
            raise SetupFailed(f"{name}: expected 200 and the upstream's body, got {status}")
    for name in ("gateway", "gateway+redis"):
        url = targets[name][0]
        status, _ = fetch(url)
        if status != 401:
            raise SetupFailed(f"{name} without the cookie: expected 401, got {status}")
        status, _ = fetch(url, {"Cookie": f"{COOKIE_NAME}={token[:-4]}AAAA"})
        if status != 401:
            raise SetupFailed(f"{name} with a forged signature: expected 401, got {status}")
    # The revocation check really asks Redis on every request: a second session, used
    # once (its claims now cached), logged out, must be refused on its next request.
    version = code_version()
    other = sign_in(rgw_port, password)
    other_cookie = f"{COOKIE_NAME}={other[COOKIE_NAME]}"
    redis_url = targets["gateway+redis"][0]
    before = redis_counts(redis_client)
    if fetch(redis_url, {"Cookie": other_cookie})[0] != 200:
        raise SetupFailed("gateway+redis: a fresh session's access cookie was not accepted")
    after = redis_counts(redis_client)
    # six keys: the user's three, and the previous release's three (CHANGELOG: upgrading)
    if (after["mget"] - before["mget"], after["keys_read"] - before["keys_read"]) != (1, 6):
        raise SetupFailed("gateway+redis: one request did not make one MGET of six keys")
    both = f"{other_cookie}; {REFRESH_COOKIE}={other[REFRESH_COOKIE]}"
    if (status := post(rgw_port, "/logout", both)) != 303:
        raise SetupFailed(f"gateway+redis: POST /logout answered {status}, expected 303")
    if (status := fetch(redis_url, {"Cookie": other_cookie})[0]) != 401:
        raise SetupFailed(f"gateway+redis: a logged-out access token got {status}, not 401")
    print(
        "checked: both gateways 200 with the cookie, 401 without it and with a bad signature;"
        " gateway+redis: a lone request makes one MGET of 6 keys, a logged-out token is refused"
        f" at once; gateway at {version['commit']}"
        f"{' + uncommitted changes' if version['gateway_modified'] else ''};"
        f" event loop: {loop_name}; redis-server {redis_client.info('server')['redis_version']};"
        f" wrk -t{args.threads} -c{args.connections}"
        f" -d{args.duration}s (+{args.warmup}s warm-up each)",
        flush=True,
    )

    header = f"Cookie: {cookie}"
    redis_pid = redis_server.proc.pid

    def measure(name: str, url: str, proc: subprocess.Popen[bytes]) -> Measured:
        if args.warmup > 0:
            warm = parse_wrk(
                wrk(
                    url,
                    duration=args.warmup,
                    connections=args.connections,
                    threads=args.threads,
                    header=header,
                )
            )
            if warm["non_2xx"]:
                raise SetupFailed(f"{name}: {warm['non_2xx']} non-2xx responses in the warm-up")
        front0, up0 = cpu_seconds(proc.pid), cpu_seconds(upstream_proc.pid)
        redis0, counts0 = cpu_seconds(redis_pid), redis_counts(redis_client)
        core0, wall0 = cpu_busy(_FRONT_CPU), time.monotonic()
        output = wrk(
            url,
            duration=args.duration,
            connections=args.connections,
            threads=args.threads,
            header=header,
        )
        core1, wall = cpu_busy(_FRONT_CPU), time.monotonic() - wall0
        front1, up1 = cpu_seconds(proc.pid), cpu_seconds(upstream_proc.pid)
        redis1, counts1 = cpu_seconds(redis_pid), redis_counts(redis_client)
        others = None
        if core0 is not None and core1 is not None and front0 is not None and front1 is not None:
            ours = (front1 - front0) / wall
            others = round(max(0.0, (core1 - core0) / wall - ours), 3)
        parsed = parse_wrk(output)
        if parsed["non_2xx"]:
            raise SetupFailed(
                f"{name}: wrk saw {parsed['non_2xx']} non-2xx or 3xx responses; the figures"
                f" would measure errors, not the proxy:\n{output}"
            )
        if any(parsed["socket_errors"].values()):
            raise SetupFailed(f"{name}: socket errors {parsed['socket_errors']}:\n{output}")
        n = parsed["requests"]

        def per_req(a: float | None, b: float | None, n: int = n) -> float | None:
            return None if a is None or b is None or not n else round((b - a) / n * 1e6, 1)

        lat = parsed["latency_ms"]
        with_redis = name == "gateway+redis"

        def count_per_req(key: str) -> float | None:
            return round((counts1[key] - counts0[key]) / n, 3) if with_redis and n else None

        return Measured(
            target=name,
            url=url,
            requests_per_s=parsed["requests_per_s"],
            p50_ms=lat["50"],
            p75_ms=lat.get("75", float("nan")),
            p90_ms=lat.get("90", float("nan")),
            p99_ms=lat["99"],
            requests=n,
            non_2xx=parsed["non_2xx"],
            socket_errors=parsed["socket_errors"],
            front_cpu_us_per_req=per_req(front0, front1),
            upstream_cpu_us_per_req=None if name == "direct" else per_req(up0, up1),
            redis_cpu_us_per_req=per_req(redis0, redis1) if with_redis else None,
            redis_mget_per_req=count_per_req("mget"),
            redis_keys_read_per_req=count_per_req("keys_read"),
            others_on_front_cpu=others,
        )

    # Rounds interleave the targets, so a slow stretch of the machine hits all of them;
    # each ratio is taken within one round, and the median over rounds is reported.
    rounds: list[dict[str, Measured]] = []
    for number in range(1, args.rounds + 1):
        current = {name: measure(name, url, proc) for name, (url, proc) in targets.items()}
        rounds.append(current)
        summary = ", ".join(f"{name} {m.requests_per_s:.0f}" for name, m in current.items())
        others = ", ".join(_share(m.others_on_front_cpu) for m in current.values())
        noisy = _noisy(current)
        print(
            f"  round {number}: {summary} req/s;"
            f" gateway/minimal {_ratio(current, 'gateway_over_minimal_proxy'):.2f},"
            f" gateway+redis/minimal {_ratio(current, 'gateway_redis_over_minimal_proxy'):.2f};"
            f" others on the front CPU {others}"
            + (f"; NOISY ({', '.join(noisy)})" if noisy else ""),
            flush=True,
        )
    per_round = {name: sorted(round(_ratio(r, name), 3) for r in rounds) for name in RATIOS}
    medians = {name: values[len(values) // 2] for name, values in per_round.items()}
    clean = [r for r in rounds if not _noisy(r)]
    clean_medians = {
        name: values[len(values) // 2]
        for name in RATIOS
        if (values := sorted(round(_ratio(r, name), 3) for r in clean))
    }
    noisy_rounds = [i + 1 for i, r in enumerate(rounds) if _noisy(r)]
    cpu_names = ("gateway_over_minimal_proxy", "gateway_redis_over_minimal_proxy")
    cpu_per_round = {
        name: sorted(round(c, 3) for r in rounds if (c := _cpu_ratio(r, name)) is not None)
        for name in cpu_names
    }
    cpu_medians = {name: v[len(v) // 2] if v else None for name, v in cpu_per_round.items()}
    all_rounds = [[asdict(m) for m in r.values()] for r in rounds]
    # The table shows one whole round: the one with the median gateway / minimal ratio.
    rounds.sort(key=lambda r: _ratio(r, "gateway_over_minimal_proxy"))
    results = list(rounds[len(rounds) // 2].values())

    verdict = "PASS" if medians["gateway_over_minimal_proxy"] >= TARGET_RATIO else "BELOW TARGET"
    redis_ok = medians["gateway_redis_over_minimal_proxy"] >= REDIS_TARGET_RATIO
    redis_verdict = "PASS" if redis_ok else "BELOW TARGET"

    print()
    print(
        f"{'target':<14} {'req/s':>9} {'p50':>9} {'p99':>9} {'CPU/req (front)':>16}"
        f" {'CPU/req (redis)':>16}"
    )
    for m in results:
        cpu = f"{m.front_cpu_us_per_req:.0f} us" if m.front_cpu_us_per_req is not None else "-"
        rcpu = f"{m.redis_cpu_us_per_req:.0f} us" if m.redis_cpu_us_per_req is not None else "-"
        print(
            f"{m.target:<14} {m.requests_per_s:>9.0f} {m.p50_ms:>7.2f}ms {m.p99_ms:>7.2f}ms"
            f" {cpu:>16} {rcpu:>16}"
        )
    redis_m = next(m for m in results if m.target == "gateway+redis")
    print(
        f"  gateway+redis, per request: {redis_m.redis_keys_read_per_req} keys read from Redis,"
        f" {redis_m.redis_mget_per_req} MGET (checks of one loop turn may share an MGET)"
    )
    print()

    def line(label: str, name: str, target: str = "") -> None:
        rounds_text = ", ".join(f"{r:.2f}" for r in per_round[name])
        print(f"{label:<30} {medians[name]:.2f}{target}   (rounds: {rounds_text})")
        if name in cpu_names and cpu_medians[name] is not None:
            values = ", ".join(f"{r:.2f}" for r in cpu_per_round[name])
            print(f"{'  from CPU per request:':<30} {cpu_medians[name]:.2f}   (rounds: {values})")

    line(
        "gateway / minimal proxy:",
        "gateway_over_minimal_proxy",
        f"   target >= {TARGET_RATIO:.2f}: {verdict}",
    )
    line(
        "gateway+redis / minimal proxy:",
        "gateway_redis_over_minimal_proxy",
        f"   target >= {REDIS_TARGET_RATIO:.2f}: {redis_verdict}",
    )
    if noisy_rounds:
        clean_text = ", ".join(
            f"{name} {clean_medians[name]:.2f}"
            for name in ("gateway_over_minimal_proxy", "gateway_redis_over_minimal_proxy")
            if name in clean_medians
        )
        print(
            f"  {len(noisy_rounds)} of {len(rounds)} rounds noisy (other jobs took more than"
            f" {NOISE:.0%} of the front CPU during {' or '.join(NOISE_BOUND)});"
            f" clean rounds only: {clean_text or 'none'}"
        )
    line("gateway+redis / gateway:", "gateway_redis_over_gateway")
    line("gateway / direct:", "gateway_over_direct")
    line("gateway+redis / direct:", "gateway_redis_over_direct")
    line("minimal proxy / direct:", "minimal_proxy_over_direct")

    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "threads": args.threads,
            "path": PATH,
            "body_bytes": len(BODY),
            "event_loop": loop_name,
            "cookie_sent_to_every_target": True,
            "cookie_from": "POST /login to gateway+redis (both gateways share the secret)",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "aiohttp": _version("aiohttp"),
            "uvloop": _version("uvloop"),
            "redis_py": _version("redis"),
            "hiredis": _version("hiredis"),
            "redis_server": redis_client.info("server")["redis_version"],
            "wrk": _wrk_version(),
        },
        "code": version,
        "results": [asdict(m) for m in results],
        "rounds": args.rounds,
        "ratios_per_round": per_round,
        "gateway_over_minimal_proxy_per_round": per_round["gateway_over_minimal_proxy"],
        "pinned": {
            "front_cpus": sorted(_FRONT_CPU or ()),
            "load_cpus": sorted(_LOAD_CPU or ()),
            "on_load_cpus": ["wrk", "upstream", "redis-server"],
        },
        "ratios": medians,
        "noise": {"threshold": NOISE, "bound": list(NOISE_BOUND), "noisy_rounds": noisy_rounds},
        "ratios_clean_rounds": clean_medians,
        "cpu_per_request_ratios": cpu_medians,
        "cpu_per_request_ratios_per_round": cpu_per_round,
        "all_rounds": all_rounds,
        "target": {
            "gateway_over_minimal_proxy": TARGET_RATIO,
            "verdict": verdict,
            "gateway_redis_over_minimal_proxy": REDIS_TARGET_RATIO,
            "redis_verdict": redis_verdict,
        },
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten: {out}")
    return 0


def _version(module: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return None


def _wrk_version() -> str | None:
    wrk_bin = shutil.which("wrk")
    if wrk_bin is None:
        return None
    done = subprocess.run([wrk_bin, "-v"], capture_output=True, text=True, timeout=5)
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0] if first else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run",
        description=(
            "wrk: upstream direct vs a minimal aiohttp proxy vs the gateway (memory store)"
            " vs the gateway with Redis sessions, one run"
        ),
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per target (10)")
    parser.add_argument("--connections", type=int, default=32, help="open connections (32)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds per target (2)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; median (3)")
    parser.add_argument("--json", default=str(RESULTS), help=f"results file ({RESULTS})")
    parser.add_argument("--serve", choices=("upstream", "proxy"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, args.upstream)
        return 0
    if not 0 < args.duration <= 600 or not 0 <= args.warmup <= 60:
        parser.error("--duration takes 1..600 seconds, --warmup 0..60")
    if args.connections < 1 or args.threads < 1:
        parser.error("--connections and --threads must be positive")
    if args.threads > args.connections:
        parser.error("--threads must not exceed --connections (wrk's rule)")
    return run_guarded(run, args)


def run_guarded(runner: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Exit codes for the ways a benchmark ends; children are stopped by the runner's finally."""
    # SIGTERM to the benchmark still stops every child: it unwinds through the finally.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return runner(args)
    except SetupFailed as exc:
        print(f"benchmark setup failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
