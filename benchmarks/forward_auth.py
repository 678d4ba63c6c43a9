"""Forward-auth throughput: nginx carrying the traffic, the gateway deciding, in one run.

Four setups and a fifth for reference, each loaded by wrk with the same settings and the
same request (the same valid access cookie, a signed HS256 token as bench.py's, memory
store):

  nginx            nginx alone in front of the upstream: no auth, the ceiling
  gateway-proxy    `gateway serve` in proxy mode in front of the upstream (bench.py's config)
  nginx+decide     nginx `auth_request` to the gateway's /_gateway/auth (forward_auth: {},
                   trusted_proxies: [127.0.0.1]); the subrequest carries no body and
                   X-Forwarded-Method/Proto/Host/Uri from $request_method, $scheme, $host,
                   $request_uri; the identity headers come back through auth_request_set
                   and go to the upstream with the request
  nginx+cache1s    the same with nginx caching the gateway's 200 answers
                   (proxy_cache_valid 200 1s), keyed by the method, the URL, Cookie and
                   Authorization: a logout or a revocation takes longer to bite, by up to
                   2 s in fact, since nginx counts cache lifetimes in whole seconds
  decisions-only   (for reading the others) wrk sends nginx's subrequest straight to the
                   gateway's /_gateway/auth: what the decision alone costs on one core

One nginx (Debian's /usr/sbin/nginx, `worker_processes 1`, not a daemon, its config in a
temporary directory) serves the three nginx setups on three ports. The front (nginx and
both gateways, one process each) is pinned to one CPU, wrk and the upstream to the other,
as in bench.py; so nginx+decide gets the same one core that gateway-proxy gets.

Ratios within each round, median over rounds: nginx+decide / gateway-proxy (target >= 2),
nginx+cache1s / nginx (target >= 0.5), nginx+decide / nginx, and more. Before any load the harness
checks that every setup answers 200 with the cookie and, except nginx alone, 401 without
it or with a forged signature; that the identity header reaches the upstream (and a
client's forged copy does not); that nginx+decide asks the gateway once per request and
nginx+cache1s once per cookie until the entry expires (the time it really lived is
printed). A measurement, not a test: exits 0 whatever the ratios, 1 when the setup fails
or a setup answered anything but 2xx under load.

The machine is shared: each measurement records the share of the front CPU its own
processes used and the share other jobs took. A round in which others took more than
NOISE of it while gateway-proxy or nginx+decide ran is marked noisy, and the ratios of
the clean rounds are printed too; so is every ratio computed from the front's CPU time
per request, which other jobs disturb far less than requests/s.

Usage: ./benchmarks/run forward-auth [--duration 5] [--rounds 3] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import (
    _FRONT_CPU,
    _LOAD_CPU,
    _PIN_LOAD,
    BODY,
    COOKIE_NAME,
    HOST,
    PATH,
    Processes,
    SetupFailed,
    _loop_factory,
    _share,
    _tail,
    _version,
    _wrk_version,
    access_claims,
    code_version,
    cpu_busy,
    cpu_seconds,
    fetch,
    free_ports,
    gateway_config,
    parse_wrk,
    pin,
    run_guarded,
    wait_ready,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "forward_auth.json"
NGINX = "/usr/sbin/nginx"
AUTH_PATH = "/_gateway/auth"
ECHO = "/bench/echo"  # the upstream answers with the identity headers it received
CACHE_SECONDS = 1
SETUPS = ("nginx", "gateway-proxy", "nginx+decide", "nginx+cache1s", "decisions-only")
RATIOS = {  # name -> (numerator, denominator, target or None), each within one round
    "decide_over_proxy": ("nginx+decide", "gateway-proxy", 2.0),
    "cache_over_nginx": ("nginx+cache1s", "nginx", 0.5),
    "decide_over_nginx": ("nginx+decide", "nginx", None),
    "cache_over_decide": ("nginx+cache1s", "nginx+decide", None),
    "proxy_over_nginx": ("gateway-proxy", "nginx", None),
    "decisions_only_over_proxy": ("decisions-only", "gateway-proxy", None),
}
# A round is noisy when other jobs took more than this share of the front CPU while a
# setup that the front CPU bounds was measured: the scheduler gives a two-process front
# (nginx + gateway) a larger share against them than a one-process one, so req/s ratios
# of such a round favour nginx+decide; CPU per request is less affected.
NOISE = 0.10
FRONT_BOUND = ("gateway-proxy", "nginx+decide", "decisions-only")
# decisions-only: wrk sends the subrequest nginx would send, straight to the gateway
DESCRIPTION = (
    "X-Forwarded-Method: GET",
    "X-Forwarded-Proto: http",
    f"X-Forwarded-Host: {HOST}",
    f"X-Forwarded-Uri: {PATH}",
    f"X-Forwarded-For: {HOST}",
)
IDENTITY = ("X-User-Id", "X-User-Email", "X-User-Name", "X-User-Roles")


# --------------------------------------------------------------------------- the upstream


def serve_upstream(port: int) -> None:
    """bench.py's upstream (200 bytes of JSON for every path), plus ECHO: the identity
    headers as it received them, so the harness can see what reached the app."""
    from aiohttp import web

    async def answer(request: web.Request) -> web.Response:
        if request.path == ECHO:
            seen = {name: request.headers.get(name) for name in IDENTITY}
            return web.json_response(seen)
        return web.Response(body=BODY, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, HOST, port).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(main())


# --------------------------------------------------------------------------- configs


def decision_gateway_config(port: int, admin_port: int) -> str:
    """The gateway as a decision service only: no upstream, forward_auth for nginx."""
    return (
        f"listen: {HOST}:{port}\n"
        f"admin_listen: {HOST}:{admin_port}\n"
        "trusted_proxies: [127.0.0.1]\n"
        "forward_auth: {}\n"
        "tokens:\n"
        "  algorithm: HS256\n"
        "  secret_env: JWT_SECRET\n"
        "  issuer: gateway\n"
        "  audience: upstream\n"
        "cookies:\n"
        f"  access: {COOKIE_NAME}\n"
        "routes:\n"
        "  - path: /bench/:path*\n"
        "    auth: required\n"
        "    on_unauthenticated: status\n"
        "default: deny\n"
    )


_AUTH_LOCATION = """\
        location = {auth_path} {{
            internal;
            proxy_pass http://gateway;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Forwarded-Method $request_method;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Uri $request_uri;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Original-URL "";
            proxy_set_header X-Original-Method "";
{cache}        }}
"""

# Only 200s are cached, never an answer with Set-Cookie (a refresh's rotated cookies):
# nginx does not cache those unless told to ignore Set-Cookie, and here it is not. The
# gateway marks every answer Cache-Control: no-store, which the cache must ignore.
_CACHE = """\
            proxy_cache decisions;
            proxy_cache_key "$request_method $scheme://$host$request_uri|$http_cookie|$http_authorization";
            proxy_cache_valid 200 {seconds}s;
            proxy_ignore_headers Cache-Control Expires;
"""

_APP_LOCATION = """\
        location / {{
{auth}            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
{identity}        }}
"""

_AUTH_REQUEST = (
    "            auth_request {auth_path};\n"
    "            auth_request_set $gw_user_id $upstream_http_x_user_id;\n"
    "            auth_request_set $gw_user_email $upstream_http_x_user_email;\n"
    "            auth_request_set $gw_user_name $upstream_http_x_user_name;\n"
    "            auth_request_set $gw_user_roles $upstream_http_x_user_roles;\n"
    "            auth_request_set $gw_set_access $upstream_http_x_gateway_set_cookie_access;\n"
    "            auth_request_set $gw_set_refresh $upstream_http_x_gateway_set_cookie_refresh;\n"
    "            add_header Set-Cookie $gw_set_access always;\n"
    "            add_header Set-Cookie $gw_set_refresh always;\n"
)
_IDENTITY_HEADERS = (
    "            proxy_set_header X-User-Id $gw_user_id;\n"
    "            proxy_set_header X-User-Email $gw_user_email;\n"
    "            proxy_set_header X-User-Name $gw_user_name;\n"
    "            proxy_set_header X-User-Roles $gw_user_roles;\n"
)


def nginx_config(tmp: Path, ports: dict[str, int], upstream_port: int, gateway_port: int) -> str:
    """One nginx, one worker, a server per nginx setup."""

    def server(name: str, *, decide: bool, cache: bool) -> str:
        auth = _AUTH_REQUEST.format(auth_path=AUTH_PATH) if decide else ""
        app = _APP_LOCATION.format(auth=auth, identity=_IDENTITY_HEADERS if decide else "")
        locations = app
        if decide:
            cached = _CACHE.format(seconds=CACHE_SECONDS) if cache else ""
            locations += _AUTH_LOCATION.format(auth_path=AUTH_PATH, cache=cached)
        listen = f"        listen {HOST}:{ports[name]};\n"
        return f"    # {name}\n    server {{\n{listen}{locations}    }}\n"

    temp = "\n".join(
        f"    {kind}_temp_path {tmp / 'nginx' / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # as root, nginx would hand its worker to 'nobody', who cannot use the temp directory
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}worker_processes 1;\n"
        f"error_log {tmp / 'nginx' / 'error.log'} warn;\n"
        f"pid {tmp / 'nginx' / 'nginx.pid'};\n"
        "events {\n    worker_connections 1024;\n}\n"
        "http {\n"
        f"{temp}\n"
        # like the gateway's access log in bench.py: produced, thrown away
        "    access_log /dev/null combined buffer=64k;\n"
        f"    proxy_cache_path {tmp / 'nginx' / 'cache'} levels=1 keys_zone=decisions:1m"
        " max_size=16m inactive=10s use_temp_path=off;\n"
        f"    upstream app {{\n        server {HOST}:{upstream_port};\n"
        "        keepalive 64;\n    }\n"
        f"    upstream gateway {{\n        server {HOST}:{gateway_port};\n"
        "        keepalive 64;\n    }\n"
        + server("nginx", decide=False, cache=False)
        + server("nginx+decide", decide=True, cache=False)
        + server("nginx+cache1s", decide=True, cache=True)
        + "}\n"
    )


# --------------------------------------------------------------------------- helpers


def sign_token(secret: str) -> str:
    import jwt

    return jwt.encode(access_claims(), secret, algorithm="HS256")


def wrk(url: str, *, duration: int, connections: int, threads: int, headers: list[str]) -> str:
    """bench.py's wrk run (on the load CPU), with any number of headers."""
    wrk_bin = shutil.which("wrk")
    if wrk_bin is None:
        raise SetupFailed("wrk not found on PATH; on Debian/Ubuntu: apt-get install wrk")
    args = [*_PIN_LOAD, wrk_bin, f"-t{threads}", f"-c{connections}", f"-d{duration}s",
            "--timeout", "5s", "--latency"]  # fmt: skip
    for header in headers:
        args += ["-H", header]
    try:
        done = subprocess.run([*args, url], capture_output=True, text=True, timeout=duration + 30)
    except subprocess.TimeoutExpired:
        raise SetupFailed(f"wrk against {url} did not finish in time") from None
    if done.returncode != 0:
        raise SetupFailed(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def process_tree(pid: int) -> list[int]:
    """`pid` and its children (nginx's master and its worker, cache manager, cache loader)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid, *map(int, children)]


def cpu_times(pids: list[int]) -> dict[int, float]:
    """utime + stime of each of `pids` still running."""
    return {pid: t for pid in pids if (t := cpu_seconds(pid)) is not None}


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float | None:
    """CPU seconds used between two cpu_times() by the processes alive at both (nginx's
    cache loader exits a minute after the start)."""
    common = before.keys() & after.keys()
    return sum(after[pid] - before[pid] for pid in common) if common else None


def decisions_answered(admin_port: int) -> float:
    """Requests the decision gateway has answered (its /metrics: gateway_requests_total)."""
    url = f"http://{HOST}:{admin_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gateway_requests_total{")
    )


def echo(url: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    status, body = fetch(url, headers)
    try:
        return status, json.loads(body) if status == 200 else {}
    except ValueError:
        return status, {}


def start_nginx(children: Processes, tmp: Path, config_text: str) -> subprocess.Popen[bytes]:
    if not os.access(NGINX, os.X_OK):
        raise SetupFailed(f"{NGINX} not found; on Debian/Ubuntu: apt-get install nginx-light")
    directory = tmp / "nginx"
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi", "cache"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    config = directory / "nginx.conf"
    config.write_text(config_text)
    command = [NGINX, "-p", str(directory), "-e", str(directory / "error.log"),
               "-c", str(config), "-g", "daemon off;"]  # fmt: skip
    # started already pinned, so its worker (forked at start) inherits the front CPU
    if _FRONT_CPU and shutil.which("taskset"):
        command = ["taskset", "-c", ",".join(map(str, sorted(_FRONT_CPU))), *command]
    return children.start("nginx", command, stderr=directory / "stderr.txt")


# --------------------------------------------------------------------------- the run


@dataclass
class Measured:
    setup: str
    url: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    # CPU per request of the front's processes (the core they share), and of the upstream
    nginx_cpu_us_per_req: float | None
    gateway_cpu_us_per_req: float | None
    front_cpu_us_per_req: float | None
    upstream_cpu_us_per_req: float | None
    # the setups that ask the gateway: subrequests it answered, per request
    decisions_per_req: float | None
    # share of the front CPU (one core) used by the front's processes, and by anything else
    # (others' jobs the scheduler put there): near 1.0 and 0.0 when the figure is clean
    front_busy: float | None = None
    others_on_front_cpu: float | None = None


def run(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        raise SetupFailed("wrk not found on PATH; on Debian/Ubuntu: apt-get install wrk")
    children = Processes()
    with tempfile.TemporaryDirectory(prefix="gateway-fwdauth-") as tmp:
        try:
            return _run(args, children, Path(tmp))
        finally:
            children.stop_all()


def _run(args: argparse.Namespace, children: Processes, tmp: Path) -> int:
    (up_port, gw_port, gw_admin, dec_port, dec_admin,
     nginx_port, decide_port, cache_port) = free_ports(8)  # fmt: skip
    me = [sys.executable, str(Path(__file__).resolve())]
    loop_name = "uvloop" if _loop_factory() is not None else "asyncio"
    secret = secrets.token_urlsafe(48)
    env = {**os.environ, "JWT_SECRET": secret}

    upstream_proc = children.start(
        "upstream", [*me, "--serve-upstream", str(up_port)], stderr=tmp / "upstream.stderr"
    )
    gw_config = tmp / "gateway-proxy.yaml"
    gw_config.write_text(gateway_config(gw_port, gw_admin, up_port))
    dec_config = tmp / "gateway-decide.yaml"
    dec_config.write_text(decision_gateway_config(dec_port, dec_admin))
    gateways = {}
    for name, config in (("gateway-proxy", gw_config), ("gateway-decide", dec_config)):
        gateways[name] = children.start(
            name,
            [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,  # the JSON access log, produced and thrown away
            stderr=tmp / f"{name}.stderr",
        )
    ports = {"nginx": nginx_port, "nginx+decide": decide_port, "nginx+cache1s": cache_port}
    nginx_proc = start_nginx(children, tmp, nginx_config(tmp, ports, up_port, dec_port))
    pin(upstream_proc.pid, _LOAD_CPU)
    for proc in gateways.values():
        pin(proc.pid, _FRONT_CPU)
    try:
        wait_ready(f"http://{HOST}:{up_port}/", upstream_proc, "upstream")
        for name, admin in (("gateway-proxy", gw_admin), ("gateway-decide", dec_admin)):
            wait_ready(f"http://{HOST}:{admin}/readyz", gateways[name], f"{name} (/readyz)")
        wait_ready(f"http://{HOST}:{nginx_port}/", nginx_proc, "nginx")
    except SetupFailed:
        for log in [*sorted(tmp.glob("*.stderr")), tmp / "nginx" / "error.log"]:
            if text := _tail(log):
                print(f"--- {log.name} ---\n{text}", file=sys.stderr)
        raise
    nginx_pids = process_tree(nginx_proc.pid)
    for pid in nginx_pids:  # already so when taskset started it; without taskset, now
        pin(pid, _FRONT_CPU)
    if _FRONT_CPU and any(set(os.sched_getaffinity(pid)) != _FRONT_CPU for pid in nginx_pids):
        raise SetupFailed("nginx's processes are not all on the front CPU")
    if len(nginx_pids) < 2:
        raise SetupFailed("nginx's worker process not found")

    token = sign_token(secret)
    cookie = f"{COOKIE_NAME}={token}"
    forged = f"{COOKIE_NAME}={token[:-4]}AAAA"
    decide_proc = gateways["gateway-decide"]
    targets: dict[str, tuple[int, bool, int | None]] = {  # port, nginx?, gateway pid
        "nginx": (nginx_port, True, None),
        "gateway-proxy": (gw_port, False, gateways["gateway-proxy"].pid),
        "nginx+decide": (decide_port, True, decide_proc.pid),
        "nginx+cache1s": (cache_port, True, decide_proc.pid),
        "decisions-only": (dec_port, False, decide_proc.pid),
    }

    def url(name: str, path: str = PATH) -> str:
        path = AUTH_PATH if name == "decisions-only" else path
        return f"http://{HOST}:{targets[name][0]}{path}"

    # ---- checks, before any load
    described = dict(line.split(": ", 1) for line in DESCRIPTION)
    status, body = fetch(url("decisions-only"), {**described, "Cookie": cookie})
    if status != 200 or body:
        raise SetupFailed(f"decisions-only: expected 200 and no body, got {status}")
    if (status := fetch(url("decisions-only"), described)[0]) != 401:
        raise SetupFailed(f"decisions-only without the cookie: expected 401, got {status}")
    for name in SETUPS[:-1]:
        status, body = fetch(url(name), {"Cookie": cookie})
        if status != 200 or body != BODY:
            raise SetupFailed(f"{name}: expected 200 and the upstream's body, got {status}")
        if name == "nginx":
            continue  # no auth: the ceiling
        for what, headers in (("without the cookie", {}), ("forged", {"Cookie": forged})):
            status, _ = fetch(url(name), headers)
            if status not in (401, 302):
                raise SetupFailed(f"{name} {what}: expected 401 (or 302), got {status}")
        status, seen = echo(url(name, ECHO), {"Cookie": cookie, "X-User-Id": "forged"})
        if status != 200 or seen.get("X-User-Id") != "bench-user":
            raise SetupFailed(f"{name}: the upstream saw X-User-Id {seen.get('X-User-Id')!r}")
        if seen.get("X-User-Roles") != "user":
            raise SetupFailed(f"{name}: the upstream saw X-User-Roles {seen.get('X-User-Roles')!r}")
        if fetch(url(name, ECHO), {"X-User-Id": "forged"})[0] not in (401, 302):
            raise SetupFailed(f"{name}: a forged X-User-Id without a cookie was let through")
    for name in ("nginx+decide", "nginx+cache1s"):
        status, _ = fetch(url(name, AUTH_PATH), {"Cookie": cookie})
        if status != 404:
            raise SetupFailed(f"{name}: {AUTH_PATH} from a client answered {status}, not 404")
    # nginx+decide asks the gateway for every request; nginx+cache1s once per key per second
    before = decisions_answered(dec_admin)
    for _ in range(3):
        fetch(url("nginx+decide"), {"Cookie": cookie})
    if (asked := decisions_answered(dec_admin) - before) != 3:
        raise SetupFailed(f"nginx+decide: 3 requests made {asked:.0f} subrequests, not 3")
    fresh = f"{COOKIE_NAME}={sign_token(secret)}"  # a key not in nginx's cache yet
    before = decisions_answered(dec_admin)
    for _ in range(3):
        fetch(url("nginx+cache1s"), {"Cookie": fresh})
    first = decisions_answered(dec_admin) - before
    # how long the cached decision really lives: nginx keeps cache times in whole seconds
    cached_at = time.monotonic()
    later = 0.0
    while later == 0 and time.monotonic() - cached_at < CACHE_SECONDS + 2:
        time.sleep(0.02)
        fetch(url("nginx+cache1s"), {"Cookie": fresh})
        later = decisions_answered(dec_admin) - before - first
    lived = time.monotonic() - cached_at
    if first != 1 or later != 1 or not CACHE_SECONDS - 0.1 < lived <= CACHE_SECONDS + 1.1:
        raise SetupFailed(
            f"nginx+cache1s: 3 quick requests made {first:.0f} subrequests (expected 1), and"
            f" the next came after {lived:.2f} s ({later:.0f}; expected 1 after"
            f" {CACHE_SECONDS}..{CACHE_SECONDS + 1} s)"
        )
    version = code_version()
    print(
        "checked: every setup 200 with the cookie; all but nginx alone 401 without it and with"
        " a forged signature; X-User-Id reaches the upstream, a client's forged copy does not;"
        f" nginx+decide: one subrequest per request; nginx+cache1s: one per cookie, asked again"
        f" {lived:.2f} s later (proxy_cache_valid 200 {CACHE_SECONDS}s)."
        f" gateway at {version['commit']}"
        f"{' + uncommitted changes' if version['gateway_modified'] else ''};"
        f" {_nginx_version()}; event loop: {loop_name};"
        f" wrk -t{args.threads} -c{args.connections} -d{args.duration}s"
        f" (+{args.warmup}s warm-up each); front CPUs {sorted(_FRONT_CPU or ())},"
        f" wrk + upstream CPUs {sorted(_LOAD_CPU or ())}; load average {_loadavg()}",
        flush=True,
    )

    cookie_header = f"Cookie: {cookie}"

    def measure(name: str) -> Measured:
        _port, with_nginx, gateway_pid = targets[name]
        target = url(name)
        headers = [cookie_header, *(DESCRIPTION if name == "decisions-only" else ())]
        if args.warmup > 0:
            warm = parse_wrk(
                wrk(target, duration=args.warmup, connections=args.connections,
                    threads=args.threads, headers=headers)
            )  # fmt: skip
            if warm["non_2xx"]:
                raise SetupFailed(f"{name}: {warm['non_2xx']} non-2xx responses in the warm-up")
        nginx_part = process_tree(nginx_proc.pid) if with_nginx else []
        gateway_part = [gateway_pid] if gateway_pid is not None else []
        deciding = name in ("nginx+decide", "nginx+cache1s", "decisions-only")
        n0, g0, u0 = cpu_times(nginx_part), cpu_times(gateway_part), cpu_seconds(upstream_proc.pid)
        d0 = decisions_answered(dec_admin) if deciding else 0.0
        core0, wall0 = cpu_busy(_FRONT_CPU), time.monotonic()
        output = wrk(target, duration=args.duration, connections=args.connections,
                     threads=args.threads, headers=headers)  # fmt: skip
        core1, wall = cpu_busy(_FRONT_CPU), time.monotonic() - wall0
        n1, g1, u1 = cpu_times(nginx_part), cpu_times(gateway_part), cpu_seconds(upstream_proc.pid)
        d1 = decisions_answered(dec_admin) if deciding else 0.0
        parsed = parse_wrk(output)
        if parsed["non_2xx"] or any(parsed["socket_errors"].values()):
            raise SetupFailed(
                f"{name}: {parsed['non_2xx']} non-2xx responses, socket errors"
                f" {parsed['socket_errors']}; the figures would measure errors:\n{output}"
            )
        n = parsed["requests"]

        def per_req(seconds: float | None) -> float | None:
            return None if seconds is None or not n else round(seconds / n * 1e6, 1)

        nginx_s, gateway_s = cpu_used(n0, n1), cpu_used(g0, g1)
        nginx_cpu, gateway_cpu = per_req(nginx_s), per_req(gateway_s)
        parts = [c for c in (nginx_cpu, gateway_cpu) if c is not None]
        used = [t for t in (nginx_s, gateway_s) if t is not None]
        busy = sum(used) / wall / max(1, len(_FRONT_CPU or ()))
        others = None
        if core0 is not None and core1 is not None:
            others = round(max(0.0, (core1 - core0) / wall - busy), 3)
        return Measured(
            setup=name,
            url=target,
            requests_per_s=parsed["requests_per_s"],
            p50_ms=parsed["latency_ms"]["50"],
            p99_ms=parsed["latency_ms"]["99"],
            requests=n,
            nginx_cpu_us_per_req=nginx_cpu,
            gateway_cpu_us_per_req=gateway_cpu,
            front_cpu_us_per_req=round(sum(parts), 1) if parts else None,
            upstream_cpu_us_per_req=per_req(u1 - u0 if u0 is not None and u1 is not None else None),
            decisions_per_req=round((d1 - d0) / n, 4) if deciding and n else None,
            front_busy=round(busy, 3),
            others_on_front_cpu=others,
        )

    # Rounds interleave the setups, so a slow stretch of the machine hits all of them;
    # each ratio is taken within one round, and the median over rounds is reported.
    rounds: list[dict[str, Measured]] = []
    loads = [_loadavg()]
    for number in range(1, args.rounds + 1):
        current = {name: measure(name) for name in SETUPS}
        rounds.append(current)
        loads.append(_loadavg())
        summary = ", ".join(f"{name} {m.requests_per_s:,.0f}" for name, m in current.items())
        ratios = ", ".join(f"{name} {_ratio(current, name):.2f}" for name in RATIOS)
        busy = ", ".join(
            f"{_share(m.front_busy)}/{_share(m.others_on_front_cpu)}" for m in current.values()
        )
        noisy = _noisy(current)
        flag = f"; NOISY ({', '.join(noisy)})" if noisy else ""
        print(
            f"  round {number}: {summary} req/s; {ratios}; front CPU ours/others {busy};"
            f" load {loads[-1]}{flag}",
            flush=True,
        )

    per_round = {name: sorted(round(_ratio(r, name), 3) for r in rounds) for name in RATIOS}
    medians = {name: values[len(values) // 2] for name, values in per_round.items()}
    cpu_per_round = {
        name: sorted(round(c, 3) for r in rounds if (c := _cpu_ratio(r, name)) is not None)
        for name in RATIOS
    }
    cpu_medians = {name: v[len(v) // 2] if v else None for name, v in cpu_per_round.items()}
    all_rounds = [[asdict(m) for m in r.values()] for r in rounds]
    # The table shows one whole round: the one with the median nginx+decide / gateway ratio.
    ordered = sorted(rounds, key=lambda r: _ratio(r, "decide_over_proxy"))
    shown = ordered[len(ordered) // 2]

    print()
    print(
        f"{'setup':<14} {'req/s':>9} {'p50':>9} {'p99':>9} {'CPU/req nginx':>14}"
        f" {'gateway':>9} {'front':>9} {'decisions/req':>14} {'front busy':>11}"
        f" {'others there':>13}"
    )

    def us(value: float | None) -> str:
        return f"{value:.0f} us" if value is not None else "-"

    for m in shown.values():
        asked = f"{m.decisions_per_req:.4f}" if m.decisions_per_req is not None else "-"
        print(
            f"{m.setup:<14} {m.requests_per_s:>9.0f} {m.p50_ms:>7.2f}ms {m.p99_ms:>7.2f}ms"
            f" {us(m.nginx_cpu_us_per_req):>14} {us(m.gateway_cpu_us_per_req):>9}"
            f" {us(m.front_cpu_us_per_req):>9} {asked:>14} {_share(m.front_busy):>11}"
            f" {_share(m.others_on_front_cpu):>13}"
        )
    print()
    clean = [r for r in rounds if not _noisy(r)]
    clean_medians: dict[str, float] = {}
    if clean:
        for name in RATIOS:
            values = sorted(round(_ratio(r, name), 3) for r in clean)
            clean_medians[name] = values[len(values) // 2]
    verdicts = {}
    for name, (top, bottom, target) in RATIOS.items():
        label = f"{top} / {bottom}:"
        rounds_text = ", ".join(f"{r:.2f}" for r in per_round[name])
        verdict = ""
        if target is not None:
            verdicts[name] = "PASS" if medians[name] >= target else "BELOW TARGET"
            verdict = f"   target >= {target:.2f}: {verdicts[name]}"
            if (noisy_count := len(rounds) - len(clean)) and name in clean_medians:
                verdict += f" ({noisy_count} noisy rounds; clean only {clean_medians[name]:.2f})"
            elif noisy_count:
                verdict += " (every round noisy: read the CPU-per-request ratio)"
        print(f"{label:<32} {medians[name]:.2f}{verdict}   (rounds: {rounds_text})")
        if cpu_medians[name] is not None:
            values = ", ".join(f"{r:.2f}" for r in cpu_per_round[name])
            cpu_verdict = ""
            if target is not None:
                cpu_ok = cpu_medians[name] >= target
                cpu_verdict = f"   target >= {target:.2f}: {'PASS' if cpu_ok else 'BELOW TARGET'}"
            print(
                f"{'  from front CPU per request:':<32} {cpu_medians[name]:.2f}{cpu_verdict}"
                f"   ({values})"
            )

    print(
        f"{len(rounds) - len(clean)} of {len(rounds)} rounds noisy (other jobs took more than"
        f" {NOISE:.0%} of the front CPU during {' or '.join(FRONT_BOUND)})"
        + (
            "; clean rounds only: " + ", ".join(f"{n} {clean_medians[n]:.2f}" for n in RATIOS)
            if clean and len(clean) < len(rounds)
            else ""
        )
    )

    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "threads": args.threads,
            "rounds": args.rounds,
            "path": PATH,
            "body_bytes": len(BODY),
            "event_loop": loop_name,
            "store": "memory (default)",
            "cache_seconds": CACHE_SECONDS,
            "cached_decision_lived_s_in_the_check": round(lived, 3),
            "nginx_config": (tmp / "nginx" / "nginx.conf").read_text(),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "aiohttp": _version("aiohttp"),
            "uvloop": _version("uvloop"),
            "nginx": _nginx_version(),
            "wrk": _wrk_version(),
            "load_average_before_and_after_each_round": loads,
        },
        "code": version,
        "pinned": {
            "front_cpus": sorted(_FRONT_CPU or ()),
            "load_cpus": sorted(_LOAD_CPU or ()),
            "on_front_cpus": ["nginx (master, 1 worker)", "gateway-proxy", "gateway-decide"],
            "on_load_cpus": ["wrk", "upstream"],
        },
        "ratios": medians,
        "noisy_rounds": [i + 1 for i, r in enumerate(rounds) if _noisy(r)],
        "ratios_clean_rounds_only": clean_medians,
        "ratios_per_round": per_round,
        "cpu_per_request_ratios": cpu_medians,
        "cpu_per_request_ratios_per_round": cpu_per_round,
        "targets": {
            name: {"target": target, "verdict": verdicts[name]}
            for name, (_t, _b, target) in RATIOS.items()
            if target is not None
        },
        "median_round": [asdict(m) for m in shown.values()],
        "all_rounds": all_rounds,
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten: {out}")
    return 0


def _ratio(measured: dict[str, Measured], name: str) -> float:
    top, bottom, _ = RATIOS[name]
    return measured[top].requests_per_s / measured[bottom].requests_per_s


def _cpu_ratio(measured: dict[str, Measured], name: str) -> float | None:
    """The same ratio from the front's CPU per request (bottom's over top's): with the
    front saturated, throughput is 1 / CPU per request, whatever else the machine runs."""
    top, bottom, _ = RATIOS[name]
    cpu_top = measured[top].front_cpu_us_per_req
    cpu_bottom = measured[bottom].front_cpu_us_per_req
    return cpu_bottom / cpu_top if cpu_top and cpu_bottom else None


def _noisy(measured: dict[str, Measured]) -> list[str]:
    return [
        f"{name}: others {m.others_on_front_cpu:.0%}"
        for name in FRONT_BOUND
        if (m := measured[name]).others_on_front_cpu is not None and m.others_on_front_cpu > NOISE
    ]


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _nginx_version() -> str:
    try:
        done = subprocess.run([NGINX, "-v"], capture_output=True, text=True, timeout=5)
    except OSError:
        return "nginx ?"
    return (done.stderr or done.stdout).strip().removeprefix("nginx version: ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run forward-auth",
        description=(
            "wrk: nginx alone vs the gateway's proxy mode vs nginx + the gateway's decisions"
            " (auth_request), uncached and cached 1 s, one run"
        ),
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds per setup (5)")
    parser.add_argument("--connections", type=int, default=32, help="open connections (32)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds per setup (2)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; median (3)")
    parser.add_argument("--json", default=str(RESULTS), help=f"results file ({RESULTS})")
    parser.add_argument("--serve-upstream", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return 0
    if not 0 < args.duration <= 600 or not 0 <= args.warmup <= 60:
        parser.error("--duration takes 1..600 seconds, --warmup 0..60")
    if not 1 <= args.rounds <= 50:
        parser.error("--rounds takes 1..50")
    if args.connections < 1 or args.threads < 1:
        parser.error("--connections and --threads must be positive")
    if args.threads > args.connections:
        parser.error("--threads must not exceed --connections (wrk's rule)")
    return run_guarded(run, args)


if __name__ == "__main__":
    sys.exit(main())
