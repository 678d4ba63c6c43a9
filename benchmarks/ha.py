"""The gateway on a single Redis, on Sentinel and on Cluster, in one run.

Three `gateway serve` processes (workers: 1) in front of one upstream, each on
its own store: a redis-server; one primary + one replica + three sentinels
(`redis+sentinel://`); three primaries + three replicas (`redis+cluster://`),
all started here from the redis-server binary the tests use. Sixteen users sign
in on each gateway, and wrk sends their access cookies in turn (a Lua script), so
every request's revocation check reads Redis and, in the cluster, the checks of
one loop turn spread over several slots and nodes. Rounds interleave the targets;
the figures that matter are the median per-round ratios sentinel / single and
cluster / single. Then each gateway answers 30 logouts one after the other: on
Sentinel and Cluster each waits for `WAIT 1` (a replica has it), which is what
the median logout time shows next to the single Redis.

Nothing is pinned: wrk, the gateways and eleven Redis processes share the
machine's cores, so absolute figures say little; compare within a run. A
measurement, not a test: exits 0 whatever it shows, 1 when the setup fails.

Usage: ./benchmarks/run ha [--duration 10] [--connections 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.client
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
    USERNAME,
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.redis_topologies import Cluster, Sentinels

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "ha.json"
BENCH = str(Path(__file__).resolve().parent / "bench.py")
USERS = 16
LOGOUTS = 30


def _users_file(path: Path, password: str) -> list[str]:
    """USERS users with one argon2id hash (one `gateway hash-password` run)."""
    write_users_file(path, password)
    one = path.read_text()
    names = [f"{USERNAME}{i}" for i in range(USERS)]
    path.write_text("".join(one.replace(f"{USERNAME}:", f"{name}:", 1) for name in names))
    return names


def _logout_ms(port: int, user: str, password: str) -> float:
    cookies = sign_in(port, password, user)
    header = "; ".join(f"{k}={v}" for k, v in cookies.items())
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        started = time.perf_counter()
        connection.request(
            "POST", "/logout", headers={"Cookie": header, "Origin": f"http://{HOST}:{port}"}
        )
        response = connection.getresponse()
        response.read()
        took = (time.perf_counter() - started) * 1000
    finally:
        connection.close()
    if response.status != 303:
        raise SetupFailed(f"POST /logout: {response.status}")
    return took


def _script(path: Path, cookies: list[str]) -> Path:
    """A wrk script sending the users' access cookies in turn."""
    items = ", ".join(json.dumps(f"{COOKIE_NAME}={c}") for c in cookies)
    path.write_text(
        f"local cookies = {{{items}}}\nlocal i = 0\n"
        "request = function()\n  i = i % #cookies + 1\n"
        '  return wrk.format("GET", nil, {Cookie = cookies[i]})\nend\n'
    )
    return path


def _wrk(url: str, script: Path, duration: int, connections: int) -> float:
    binary = shutil.which("wrk")
    if binary is None:
        raise SetupFailed("wrk not found on PATH; on Debian/Ubuntu: apt-get install wrk")
    args = [binary, "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script),
            url]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=duration + 30, check=False)
    parsed = parse_wrk(done.stdout)
    if done.returncode != 0 or parsed["non_2xx"] or any(parsed["socket_errors"].values()):
        raise SetupFailed(f"{url}: errors during the run:\n{done.stdout}{done.stderr}")
    return float(parsed["requests_per_s"])


def run(args: argparse.Namespace) -> int:
    children = Processes()
    topologies: list[Sentinels | Cluster] = []
    with tempfile.TemporaryDirectory(prefix="gateway-ha-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            return _run(args, children, topologies, tmp)
        finally:
            children.stop_all()
            for topology in topologies:
                topology.stop()


def _run(
    args: argparse.Namespace, children: Processes, topologies: list[Sentinels | Cluster], tmp: Path
) -> int:
    up_port, *ports = free_ports(7)
    children.start(
        "upstream",
        [sys.executable, BENCH, "--serve", "upstream", "--port", str(up_port)],
        stderr=tmp / "upstream.stderr",
    )
    single, _client = start_redis(children, tmp)
    sentinels, cluster = Sentinels(tmp / "sentinel"), Cluster(tmp / "cluster")
    topologies += [sentinels, cluster]
    try:
        sentinels.start()
        cluster.start()
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        raise SetupFailed(f"redis topologies: {exc}") from None
    password = secrets.token_urlsafe(16)
    users = _users_file(tmp / "users.yaml", password)
    env = {**os.environ, "JWT_SECRET": secrets.token_urlsafe(48)}
    stores = {"single": single.url, "sentinel": sentinels.url, "cluster": cluster.url}
    targets: dict[str, tuple[str, Path, int]] = {}
    for i, (name, store) in enumerate(stores.items()):
        port, admin = ports[2 * i], ports[2 * i + 1]
        config = tmp / f"{name}.yaml"
        config.write_text(
            gateway_config(port, admin, up_port, store=store, users_file=tmp / "users.yaml")
        )
        proc = children.start(
            name,
            [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=tmp / f"{name}.stderr",
        )
        wait_ready(f"http://{HOST}:{admin}/readyz", proc, name, seconds=30)
        cookies = [sign_in(port, password, user)[COOKIE_NAME] for user in users]
        url = f"http://{HOST}:{port}{PATH}"
        if fetch(url, {"Cookie": f"{COOKIE_NAME}={cookies[0]}"})[0] != 200:
            raise SetupFailed(f"{name}: the session cookie was not accepted")
        targets[name] = (url, _script(tmp / f"{name}.lua", cookies), port)
    print(
        f"wrk -t2 -c{args.connections} -d{args.duration}s, {args.rounds} interleaved rounds,"
        f" {os.cpu_count()} cores, nothing pinned, {USERS} users in turn",
        flush=True,
    )
    rounds: list[dict[str, float]] = []
    for number in range(1, args.rounds + 1):
        figures = {}
        for name, (url, script, _port) in targets.items():
            _wrk(url, script, 2, args.connections)  # warm-up
            figures[name] = _wrk(url, script, args.duration, args.connections)
        rounds.append(figures)
        print(
            f"round {number}: "
            + ", ".join(f"{name} {rps:,.0f} req/s" for name, rps in figures.items())
            + f"; sentinel/single {figures['sentinel'] / figures['single']:.2f},"
            f" cluster/single {figures['cluster'] / figures['single']:.2f}",
            flush=True,
        )
    sentinel = statistics.median(r["sentinel"] / r["single"] for r in rounds)
    cluster_ratio = statistics.median(r["cluster"] / r["single"] for r in rounds)
    logout = {
        name: statistics.median(_logout_ms(port, users[0], password) for _ in range(LOGOUTS))
        for name, (_url, _script_path, port) in targets.items()
    }
    print(f"median sentinel / single = {sentinel:.2f}; cluster / single = {cluster_ratio:.2f}")
    print(
        f"median logout ({LOGOUTS} one after the other): "
        + ", ".join(f"{name} {ms:.1f} ms" for name, ms in logout.items())
    )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "cores": os.cpu_count(),
                "duration_s": args.duration,
                "connections": args.connections,
                "users": USERS,
                "rounds": rounds,
                "median_sentinel_over_single": round(sentinel, 3),
                "median_cluster_over_single": round(cluster_ratio, 3),
                "median_logout_ms": {k: round(v, 2) for k, v in logout.items()},
            },
            indent=2,
        )
        + "\n"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
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
