"""How requests/s scale from `workers: 1` to `workers: 2`, in one run.

Both gateways run with `store: redis://` (workers > 1 needs a shared store) in
front of the same upstream, which runs as two SO_REUSEPORT processes so it is
not the single-core bottleneck itself. Nothing is pinned to a core: the point
is what a second worker buys on this machine, where wrk, the upstream and
Redis compete for the same two cores. The upstream alone (direct) is measured
too, as the ceiling this machine can reach at all.

Rounds interleave the targets; the figure that matters is the median per-round
ratio workers:2 / workers:1. A measurement, not a test: exits 0 whatever it
shows, 1 when the setup fails.

Usage: ./benchmarks/run workers [--duration 10] [--connections 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import (
    COOKIE_NAME,
    HOST,
    PATH,
    Processes,
    SetupFailed,
    fetch,
    free_ports,
    gateway_config,
    parse_wrk,
    sign_in,
    start_redis,
    wait_ready,
    write_users_file,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "workers.json"
BENCH = str(Path(__file__).resolve().parent / "bench.py")


def wrk(url: str, cookie: str, duration: int, connections: int) -> dict[str, object]:
    binary = shutil.which("wrk")
    if binary is None:
        raise SetupFailed("wrk not found on PATH; on Debian/Ubuntu: apt-get install wrk")
    args = [binary, "-t2", f"-c{connections}", f"-d{duration}s", "--latency",
            "-H", f"Cookie: {cookie}", url]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=duration + 30, check=False)
    if done.returncode != 0:
        raise SetupFailed(f"wrk failed: {done.stderr.strip()}")
    parsed = parse_wrk(done.stdout)
    if parsed["non_2xx"] or any(parsed["socket_errors"].values()):
        raise SetupFailed(f"{url}: errors during the run:\n{done.stdout}")
    return parsed


def run(args: argparse.Namespace) -> int:
    children = Processes()
    with tempfile.TemporaryDirectory(prefix="gateway-workers-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            return _run(args, children, tmp)
        finally:
            children.stop_all()


def _run(args: argparse.Namespace, children: Processes, tmp: Path) -> int:
    up_port, one_port, one_admin, two_port, two_admin = free_ports(5)
    for n in (1, 2):
        children.start(
            f"upstream-{n}",
            [sys.executable, BENCH, "--serve", "upstream", "--port", str(up_port)],
            stderr=tmp / f"upstream-{n}.stderr",
        )
    redis_server, _client = start_redis(children, tmp)
    password = secrets.token_urlsafe(16)
    users = tmp / "users.yaml"
    write_users_file(users, password)
    env = {**os.environ, "JWT_SECRET": secrets.token_urlsafe(48)}
    targets = {}
    for workers, port, admin in ((1, one_port, one_admin), (2, two_port, two_admin)):
        config = tmp / f"workers-{workers}.yaml"
        text = gateway_config(port, admin, up_port, store=redis_server.url, users_file=users)
        config.write_text(text + f"workers: {workers}\n")
        proc = children.start(
            f"workers-{workers}",
            [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=tmp / f"workers-{workers}.stderr",
        )
        wait_ready(f"http://{HOST}:{admin}/readyz", proc, f"workers: {workers}", seconds=30)
        targets[f"workers:{workers}"] = f"http://{HOST}:{port}{PATH}"
    targets["direct"] = f"http://{HOST}:{up_port}{PATH}"
    cookie = f"{COOKIE_NAME}={sign_in(one_port, password)[COOKIE_NAME]}"
    for name, url in targets.items():
        if fetch(url, {"Cookie": cookie})[0] != 200:
            raise SetupFailed(f"{name}: the session cookie was not accepted")
    print(
        f"wrk -t2 -c{args.connections} -d{args.duration}s, {args.rounds} interleaved rounds,"
        f" {os.cpu_count()} cores, nothing pinned; redis-server {redis_server.url}",
        flush=True,
    )
    rounds: list[dict[str, float]] = []
    for number in range(1, args.rounds + 1):
        figures = {}
        for name, url in targets.items():
            wrk(url, cookie, 2, args.connections)  # warm-up
            figures[name] = float(
                wrk(url, cookie, args.duration, args.connections)["requests_per_s"]
            )  # type: ignore[arg-type]
        rounds.append(figures)
        print(
            f"round {number}: "
            + ", ".join(f"{name} {rps:,.0f} req/s" for name, rps in figures.items())
            + f"; workers:2 / workers:1 = {figures['workers:2'] / figures['workers:1']:.2f}",
            flush=True,
        )
    scaling = statistics.median(r["workers:2"] / r["workers:1"] for r in rounds)
    ceiling = statistics.median(r["workers:2"] / r["direct"] for r in rounds)
    print(f"median workers:2 / workers:1 = {scaling:.2f}; workers:2 / direct = {ceiling:.2f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "cores": os.cpu_count(),
                "duration_s": args.duration,
                "connections": args.connections,
                "rounds": rounds,
                "median_workers2_over_workers1": round(scaling, 3),
                "median_workers2_over_direct": round(ceiling, 3),
            },
            indent=2,
        )
        + "\n"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except SetupFailed as exc:
        print(f"benchmark setup failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
