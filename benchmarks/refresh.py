"""Refresh rotations per second through the gateway with Redis, next to valid-cookie requests.

A rotation consumes its refresh token (single use), so wrk cannot replay one request.
Instead a bounded asyncio client (aiohttp, uvloop when importable) runs --workers
concurrent workers against one `gateway serve` with `store: redis://` (a real
redis-server started for the run) and a users_file login:

  each worker signs in once (POST /login), then, per phase, for --duration seconds:
  valid    GET /bench/x carrying only its access cookie: the ordinary request path,
           verified-token cache hit plus the revocation check in Redis (an MGET, which
           the gateway may share among the requests of one loop turn), forwarded upstream
  rotate   GET /bench/x carrying ONLY its current refresh cookie: the gateway verifies
           it, rotates the family (one Redis Lua script), signs a new access and refresh
           token, sets both cookies and forwards the request; the worker takes the new
           refresh token from Set-Cookie and sends that one next time

A rotation counts when the upstream's 200 and body came back with a new refresh
cookie and an access cookie. Anything else stops that worker and fails the run
(exit 1), so the figure cannot count errors. Rounds interleave the two phases
(each after a warm-up); each round gives rotations/s over valid req/s, and the
median round is reported. The gateway is pinned to one CPU, the client, the upstream
and redis-server to the other, as in bench.py.

Usage: ./benchmarks/run refresh [--workers 32] [--duration 5] [--warmup 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
from bench import (
    _FRONT_CPU,
    _LOAD_CPU,
    BODY,
    COOKIE_NAME,
    HOST,
    PATH,
    REFRESH_COOKIE,
    ROOT,
    USERNAME,
    Processes,
    SetupFailed,
    _loop_factory,
    _tail,
    _version,
    code_version,
    cpu_seconds,
    free_ports,
    gateway_config,
    pin,
    redis_counts,
    run_guarded,
    set_cookies,
    start_redis,
    wait_ready,
    write_users_file,
)

RESULTS = ROOT / "benchmarks" / "results" / "refresh.json"
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=10)
SIGN_IN_TIMEOUT = aiohttp.ClientTimeout(total=60)  # argon2id: the gateway checks two at a time
MAX_PER_WORKER = 1_000_000  # a second bound besides the duration


class WorkerFailed(Exception):
    pass


class Worker:
    """One signed-in client: its access cookie and its current refresh token."""

    def __init__(self, base: str, password: str) -> None:
        self.base = base
        self.password = password
        self.access = ""
        self.refresh = ""
        self.failure: str | None = None

    async def sign_in(self, session: aiohttp.ClientSession) -> None:
        payload = {"username": USERNAME, "password": self.password}
        try:
            async with session.post(
                self.base + "/login", json=payload, allow_redirects=False, timeout=SIGN_IN_TIMEOUT
            ) as response:
                await response.read()
                cookies = set_cookies(response.headers.getall("Set-Cookie", []))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SetupFailed(f"POST /login: {type(exc).__name__} {exc}") from None
        if (
            response.status != 303
            or not cookies.get(COOKIE_NAME)
            or not cookies.get(REFRESH_COOKIE)
        ):
            raise SetupFailed(f"POST /login: expected 303 and both cookies, got {response.status}")
        self.access, self.refresh = cookies[COOKIE_NAME], cookies[REFRESH_COOKIE]

    async def run(
        self, session: aiohttp.ClientSession, mode: str, deadline: float, latencies: list[float]
    ) -> int:
        """Requests until the deadline; how many succeeded. Stops at the first failure."""
        done = 0
        url = self.base + PATH
        while time.monotonic() < deadline and done < MAX_PER_WORKER:
            cookie = (
                f"{COOKIE_NAME}={self.access}"
                if mode == "valid"
                else f"{REFRESH_COOKIE}={self.refresh}"
            )
            started = time.perf_counter()
            try:
                async with session.get(
                    url, headers={"Cookie": cookie}, allow_redirects=False, timeout=REQUEST_TIMEOUT
                ) as response:
                    body = await response.read()
                    status = response.status
                    cookies = set_cookies(response.headers.getall("Set-Cookie", []))
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.failure = f"{mode}: {type(exc).__name__} {exc}"
                return done
            latencies.append(time.perf_counter() - started)
            if status != 200 or body != BODY:
                self.failure = f"{mode}: status {status}, {len(body)} bytes"
                return done
            if mode == "rotate":
                new = cookies.get(REFRESH_COOKIE)
                if not new or new == self.refresh or not cookies.get(COOKIE_NAME):
                    self.failure = "rotate: 200 without a new refresh cookie and an access cookie"
                    return done
                self.refresh = new
            elif cookies:
                self.failure = "valid: the gateway set cookies on a valid-cookie request"
                return done
            done += 1
        return done


@dataclass
class Phase:
    mode: str
    per_s: float
    count: int
    seconds: float
    p50_ms: float
    p99_ms: float
    gateway_cpu_us: float | None  # per request
    gateway_busy: float | None  # gateway CPU seconds / wall seconds (1.0 = its core is full)
    client_cpu_us: float  # per request
    redis_cpu_us: float | None
    redis_mget_per_req: float
    redis_keys_read_per_req: float
    redis_evalsha_per_req: float


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1e3 if ordered else 0.0


async def phase(
    session: aiohttp.ClientSession,
    workers: list[Worker],
    mode: str,
    seconds: float,
    pids: dict[str, int],
    redis_client: Any,
) -> Phase:
    latencies: list[float] = []
    gw0, rd0 = cpu_seconds(pids["gateway"]), cpu_seconds(pids["redis"])
    me0 = sum(os.times()[:2])
    counts0 = redis_counts(redis_client)
    started = time.monotonic()
    deadline = started + seconds
    async with asyncio.timeout(seconds + 30):
        counts = await asyncio.gather(*(w.run(session, mode, deadline, latencies) for w in workers))
    elapsed = time.monotonic() - started
    gw1, rd1 = cpu_seconds(pids["gateway"]), cpu_seconds(pids["redis"])
    me1 = sum(os.times()[:2])
    counts1 = redis_counts(redis_client)
    failures = [w.failure for w in workers if w.failure]
    if failures:
        raise SetupFailed(f"{len(failures)} worker(s) failed; first: {failures[0]}")
    n = sum(counts)
    if not n:
        raise SetupFailed(f"{mode}: no request completed")

    def per(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round((b - a) / n * 1e6, 1)

    return Phase(
        mode=mode,
        per_s=round(n / elapsed, 1),
        count=n,
        seconds=round(elapsed, 3),
        p50_ms=round(_percentile(latencies, 0.50), 2),
        p99_ms=round(_percentile(latencies, 0.99), 2),
        gateway_cpu_us=per(gw0, gw1),
        gateway_busy=None if gw0 is None or gw1 is None else round((gw1 - gw0) / elapsed, 2),
        client_cpu_us=round((me1 - me0) / n * 1e6, 1),
        redis_cpu_us=per(rd0, rd1),
        redis_mget_per_req=round((counts1["mget"] - counts0["mget"]) / n, 3),
        redis_keys_read_per_req=round((counts1["keys_read"] - counts0["keys_read"]) / n, 3),
        redis_evalsha_per_req=round((counts1["evalsha"] - counts0["evalsha"]) / n, 3),
    )


async def drive(
    args: argparse.Namespace, base: str, password: str, pids: dict[str, int], redis_client: Any
) -> list[dict[str, Phase]]:
    connector = aiohttp.TCPConnector(limit=args.workers, keepalive_timeout=30)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        workers = [Worker(base, password) for _ in range(args.workers)]
        gate = asyncio.Semaphore(4)  # a few at a time: each login is an argon2id check

        async def sign_in(worker: Worker) -> None:
            async with gate:
                await worker.sign_in(session)

        try:
            async with asyncio.timeout(60 + 0.5 * len(workers)):
                await asyncio.gather(*(sign_in(w) for w in workers))
        except TimeoutError:
            raise SetupFailed("signing the workers in took too long") from None
        print(
            f"signed in {len(workers)} workers; phases of {args.duration}s"
            f" (+{args.warmup}s warm-up each), {args.rounds} round(s)",
            flush=True,
        )
        rounds: list[dict[str, Phase]] = []
        for number in range(1, args.rounds + 1):
            current = {}
            for mode in ("valid", "rotate"):
                if args.warmup > 0:
                    await phase(session, workers, mode, args.warmup, pids, redis_client)
                current[mode] = await phase(
                    session, workers, mode, args.duration, pids, redis_client
                )
            rounds.append(current)
            ratio = current["rotate"].per_s / current["valid"].per_s
            valid, rotate = current["valid"], current["rotate"]
            print(
                f"  round {number}: valid {valid.per_s:.0f} req/s"
                f" ({valid.redis_keys_read_per_req:.2f} keys, {valid.redis_mget_per_req:.2f} MGET"
                " per req),"
                f" rotate {rotate.per_s:.0f} rotations/s"
                f" ({rotate.redis_evalsha_per_req:.2f} EVALSHA/rotation); rotate/valid {ratio:.2f}",
                flush=True,
            )
        return rounds


def run(args: argparse.Namespace) -> int:
    # Pinned before any child starts: the upstream and redis-server inherit the load CPU,
    # and so does this process, which is the client.
    pin(0, _LOAD_CPU)
    children = Processes()
    with tempfile.TemporaryDirectory(prefix="gateway-refresh-") as tmp:
        try:
            return _run(args, children, Path(tmp))
        finally:
            children.stop_all()


def _run(args: argparse.Namespace, children: Processes, tmp: Path) -> int:
    up_port, gw_port, admin_port = free_ports(3)
    bench = [sys.executable, str(ROOT / "benchmarks" / "bench.py")]
    logs = {name: tmp / f"{name}.stderr" for name in ("upstream", "gateway+redis")}
    upstream_proc = children.start(
        "upstream", [*bench, "--serve", "upstream", "--port", str(up_port)], logs["upstream"]
    )
    redis_server, redis_client = start_redis(children, tmp)
    password = secrets.token_urlsafe(16)
    users = tmp / "users.yaml"
    write_users_file(users, password)
    config = tmp / "gateway.yaml"
    config.write_text(
        gateway_config(gw_port, admin_port, up_port, store=redis_server.url, users_file=users)
    )
    gateway_proc = children.start(
        "gateway+redis",
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        logs["gateway+redis"],
        env={**os.environ, "JWT_SECRET": secrets.token_urlsafe(48)},
        stdout=subprocess.DEVNULL,  # the JSON access log
    )
    pin(gateway_proc.pid, _FRONT_CPU)
    try:
        wait_ready(f"http://{HOST}:{up_port}/", upstream_proc, "upstream")
        wait_ready(f"http://{HOST}:{admin_port}/readyz", gateway_proc, "gateway (admin /readyz)")
    except SetupFailed:
        for name, log in logs.items():
            if text := _tail(log):
                print(f"--- {name} stderr ---\n{text}", file=sys.stderr)
        raise
    loop_name = "uvloop" if _loop_factory() is not None else "asyncio"
    version = code_version()
    print(
        f"gateway at {version['commit']}"
        f"{' + uncommitted changes' if version['gateway_modified'] else ''},"
        f" redis-server {redis_client.info('server')['redis_version']}, event loop {loop_name}",
        flush=True,
    )
    pids = {"gateway": gateway_proc.pid, "redis": redis_server.proc.pid}
    base = f"http://{HOST}:{gw_port}"
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        rounds = runner.run(drive(args, base, password, pids, redis_client))

    ratios = sorted(round(r["rotate"].per_s / r["valid"].per_s, 3) for r in rounds)
    rounds.sort(key=lambda r: r["rotate"].per_s / r["valid"].per_s)
    median = rounds[len(rounds) // 2]
    ratio = median["rotate"].per_s / median["valid"].per_s

    print()
    print(
        f"{'phase':<8} {'per s':>8} {'p50':>9} {'p99':>9} {'gw CPU/req':>11} {'gw busy':>8}"
        f" {'client CPU/req':>15} {'redis CPU/req':>14} {'keys':>5} {'MGET':>5} {'EVALSHA':>8}"
    )
    for p in median.values():
        gw = f"{p.gateway_cpu_us:.0f} us" if p.gateway_cpu_us is not None else "-"
        busy = f"{p.gateway_busy:.0%}" if p.gateway_busy is not None else "-"
        rd = f"{p.redis_cpu_us:.0f} us" if p.redis_cpu_us is not None else "-"
        print(
            f"{p.mode:<8} {p.per_s:>8.0f} {p.p50_ms:>7.2f}ms {p.p99_ms:>7.2f}ms {gw:>11}"
            f" {busy:>8} {f'{p.client_cpu_us:.0f} us':>15} {rd:>14}"
            f" {p.redis_keys_read_per_req:>5.2f} {p.redis_mget_per_req:>5.2f}"
            f" {p.redis_evalsha_per_req:>8.2f}"
        )
    print()
    print(
        f"rotations/s / valid-cookie req/s: {ratio:.2f}"
        f"   (rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
    )
    print(
        "(keys: keys Redis read, MGET and EVALSHA: calls Redis ran, per completed request;"
        " from INFO stats and commandstats)"
    )

    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {
            "workers": args.workers,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "path": PATH,
            "event_loop": loop_name,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "aiohttp": _version("aiohttp"),
            "redis_py": _version("redis"),
            "redis_server": redis_client.info("server")["redis_version"],
        },
        "code": version,
        "pinned": {
            "gateway_cpus": sorted(_FRONT_CPU or ()),
            "client_cpus": sorted(_LOAD_CPU or ()),
        },
        "median_round": {mode: asdict(p) for mode, p in median.items()},
        "rotate_over_valid": round(ratio, 3),
        "rotate_over_valid_per_round": ratios,
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run refresh",
        description="refresh rotations/s vs valid-cookie req/s, gateway with Redis, one run",
    )
    parser.add_argument("--workers", type=int, default=32, help="concurrent workers (32)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per phase (5)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up seconds per phase (1)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; median (3)")
    parser.add_argument("--json", default=str(RESULTS), help=f"results file ({RESULTS})")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 600 or not 0 <= args.warmup <= 60:
        parser.error("--duration takes 1..600 seconds, --warmup 0..60")
    if not 1 <= args.workers <= 1000 or not 1 <= args.rounds <= 50:
        parser.error("--workers takes 1..1000, --rounds 1..50")
    return run_guarded(run, args)


if __name__ == "__main__":
    sys.exit(main())
