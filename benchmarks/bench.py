"""Throughput of the gateway next to what it is measured against, all from one run.

Three targets, each loaded by wrk with the same settings and the same request
(the access cookie included, so every front server parses the same bytes):

  direct         the upstream itself: a small aiohttp app answering 200 bytes of JSON
  minimal-proxy  a few-line aiohttp pass-through proxy in front of that upstream
  gateway        `python -m gateway serve` in front of that upstream, route auth: required

Each runs as its own process, with uvloop when it is importable. The figure that
matters is the ratio gateway / minimal-proxy (target >= 0.80): both do the same
network work, so the ratio is what authentication, header hygiene and the access
log cost. A measurement, not a test: exits 0 whatever the ratio, 1 when the setup
fails or a target answered anything but 2xx.

Usage: ./benchmarks/run [--duration 10] [--connections 32] [--threads 1] [--warmup 2]
"""

from __future__ import annotations

import argparse
import asyncio
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
HOST = "127.0.0.1"
PATH = "/bench/x"
COOKIE_NAME = "access_token"


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
            await web.TCPSite(runner, HOST, port).start()
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


def mint_token(secret: str) -> str:
    import jwt

    return jwt.encode(access_claims(), secret, algorithm="HS256")


def gateway_config(port: int, admin_port: int, upstream_port: int) -> str:
    return f"""\
listen: {HOST}:{port}
admin_listen: {HOST}:{admin_port}
upstream: http://{HOST}:{upstream_port}
tokens:
  algorithm: HS256
  secret_env: JWT_SECRET
  issuer: gateway
  audience: upstream
cookies:
  access: {COOKIE_NAME}
routes:
  - path: /bench/:path*
    auth: required
    on_unauthenticated: status
default: deny
"""


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


# On a machine with 2+ CPUs the front process under test (minimal proxy or gateway) gets
# a CPU of its own, and wrk and the upstream share another: without this, the three
# compete for the same cores and the ratio swings by +-15% from run to run.
_FRONT_CPU, _LOAD_CPU = ({1}, {0}) if (os.cpu_count() or 1) >= 2 else (None, None)
_PIN_LOAD = ["taskset", "-c", "0"] if _LOAD_CPU and shutil.which("taskset") else []


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


def _run(args: argparse.Namespace, children: Processes, tmp: Path) -> int:
    up_port, proxy_port, gw_port, admin_port = free_ports(4)
    upstream = f"http://{HOST}:{up_port}"
    me = [sys.executable, str(Path(__file__).resolve())]
    loop_name = "uvloop" if _loop_factory() is not None else "asyncio"
    secret = secrets.token_urlsafe(48)  # 64 bytes
    token = mint_token(secret)
    cookie = f"{COOKIE_NAME}={token}"

    logs = {name: tmp / f"{name}.stderr" for name in ("upstream", "minimal-proxy", "gateway")}
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
    config = tmp / "gateway.yaml"
    config.write_text(gateway_config(gw_port, admin_port, up_port))
    gateway_proc = children.start(
        "gateway",
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        env={**os.environ, "JWT_SECRET": secret},
        stdout=subprocess.DEVNULL,  # the JSON access log: one line per request
        stderr=logs["gateway"],
    )
    pin(upstream_proc.pid, _LOAD_CPU)
    pin(proxy_proc.pid, _FRONT_CPU)
    pin(gateway_proc.pid, _FRONT_CPU)
    try:
        wait_ready(f"{upstream}/", upstream_proc, "upstream")
        wait_ready(f"http://{HOST}:{proxy_port}/", proxy_proc, "minimal proxy")
        wait_ready(f"http://{HOST}:{admin_port}/healthz", gateway_proc, "gateway (admin /healthz)")
        wait_ready(f"http://{HOST}:{admin_port}/readyz", gateway_proc, "gateway (admin /readyz)")
    except SetupFailed:
        for name, log in logs.items():
            if text := _tail(log):
                print(f"--- {name} stderr ---\n{text}", file=sys.stderr)
        raise

    targets = {
        "direct": (f"{upstream}{PATH}", upstream_proc),
        "minimal-proxy": (f"http://{HOST}:{proxy_port}{PATH}", proxy_proc),
        "gateway": (f"http://{HOST}:{gw_port}{PATH}", gateway_proc),
    }
    # One request each first, so the benchmark cannot silently measure error responses.
    for name, (url, _proc) in targets.items():
        status, body = fetch(url, {"Cookie": cookie})
        if status != 200 or body != BODY:
            raise SetupFailed(f"{name}: expected 200 and the upstream's body, got {status}")
    gw_url = targets["gateway"][0]
    status, _ = fetch(gw_url)
    if status != 401:
        raise SetupFailed(f"gateway without the cookie: expected 401, got {status}")
    status, _ = fetch(gw_url, {"Cookie": f"{COOKIE_NAME}={token[:-4]}AAAA"})
    if status != 401:
        raise SetupFailed(f"gateway with a forged signature: expected 401, got {status}")
    print(
        f"checked: gateway 200 with the cookie, 401 without it and with a bad signature;"
        f" event loop: {loop_name}; wrk -t{args.threads} -c{args.connections}"
        f" -d{args.duration}s (+{args.warmup}s warm-up each)",
        flush=True,
    )

    header = f"Cookie: {cookie}"

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
        output = wrk(
            url,
            duration=args.duration,
            connections=args.connections,
            threads=args.threads,
            header=header,
        )
        front1, up1 = cpu_seconds(proc.pid), cpu_seconds(upstream_proc.pid)
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
        )

    # Rounds interleave the targets, so a slow stretch of the machine hits all of them;
    # each ratio is taken within one round, and the median round is reported.
    rounds: list[dict[str, Measured]] = []
    for number in range(1, args.rounds + 1):
        current = {name: measure(name, url, proc) for name, (url, proc) in targets.items()}
        rounds.append(current)
        summary = ", ".join(f"{name} {m.requests_per_s:.0f}" for name, m in current.items())
        ratio = current["gateway"].requests_per_s / current["minimal-proxy"].requests_per_s
        print(f"  round {number}: {summary} req/s; gateway/minimal {ratio:.2f}", flush=True)
    rounds.sort(key=lambda r: r["gateway"].requests_per_s / r["minimal-proxy"].requests_per_s)
    median_round = rounds[len(rounds) // 2]
    results = list(median_round.values())
    round_ratios = sorted(
        round(r["gateway"].requests_per_s / r["minimal-proxy"].requests_per_s, 3) for r in rounds
    )

    by = {m.target: m for m in results}
    vs_minimal = by["gateway"].requests_per_s / by["minimal-proxy"].requests_per_s
    vs_direct = by["gateway"].requests_per_s / by["direct"].requests_per_s
    minimal_vs_direct = by["minimal-proxy"].requests_per_s / by["direct"].requests_per_s
    verdict = "PASS" if vs_minimal >= TARGET_RATIO else "BELOW TARGET"

    print()
    print(f"{'target':<14} {'req/s':>9} {'p50':>9} {'p99':>9} {'CPU/req (front)':>16}")
    for m in results:
        cpu = f"{m.front_cpu_us_per_req:.0f} us" if m.front_cpu_us_per_req is not None else "-"
        print(
            f"{m.target:<14} {m.requests_per_s:>9.0f} {m.p50_ms:>7.2f}ms {m.p99_ms:>7.2f}ms"
            f" {cpu:>16}"
        )
    print()
    print(f"gateway / minimal proxy: {vs_minimal:.2f}   (target >= {TARGET_RATIO:.2f}: {verdict})")
    print(f"  per round, sorted:     {', '.join(f'{r:.2f}' for r in round_ratios)}")
    print(f"gateway / direct:        {vs_direct:.2f}")
    print(f"minimal proxy / direct:  {minimal_vs_direct:.2f}")

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
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "aiohttp": _version("aiohttp"),
            "uvloop": _version("uvloop"),
            "wrk": _wrk_version(),
        },
        "results": [asdict(m) for m in results],
        "rounds": args.rounds,
        "gateway_over_minimal_proxy_per_round": round_ratios,
        "pinned": {"front_cpus": sorted(_FRONT_CPU or ()), "load_cpus": sorted(_LOAD_CPU or ())},
        "ratios": {
            "gateway_over_minimal_proxy": round(vs_minimal, 3),
            "gateway_over_direct": round(vs_direct, 3),
            "minimal_proxy_over_direct": round(minimal_vs_direct, 3),
        },
        "target": {"gateway_over_minimal_proxy": TARGET_RATIO, "verdict": verdict},
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
        description="wrk: upstream direct vs a minimal aiohttp proxy vs the gateway, one run",
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
    # SIGTERM to the benchmark still stops every child: it unwinds through the finally.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return run(args)
    except SetupFailed as exc:
        print(f"benchmark setup failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
