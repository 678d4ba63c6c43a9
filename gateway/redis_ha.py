"""Sentinel and Cluster behind RedisStore: redis-py's clients, the hot path, confirmed writes.

Each topology gives RedisStore three things. `client`: redis-py's Sentinel-managed
Redis or RedisCluster, for the Lua scripts and admin commands (both follow a
failover and, for the cluster, moved slots). `hot`: the per-request MGET on
pipelined connections, as for a single Redis (docs/performance.md): behind
Sentinel one connection to the primary the sentinels name; in a cluster one per
primary, the keys grouped by slot (a token's three keys share one through their
hash tag, redis_keys) and each slot's MGET sent at once. `confirmed`: a logout or
revocation as one script followed by `WAIT 1 <store_timeout>` on the same
connection, so an acknowledged change is on a replica before a failover can
promote one (SPEC §7.6); no replica in time is StoreUnconfirmed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.crc import key_slot
from redis.exceptions import RedisError, ResponseError
from yarl import URL

from .redis_topology import Topology, from_url
from .redis_wire import PipelinedConnection, WireError
from .store import StoreUnavailable, StoreUnconfirmed

NO_REPLICA = "the primary has no replica: a failover now would lose recent logouts"


class _AuthWhenAsked(Connection):
    """A sentinel connection that sends the password only to a sentinel that wants one.

    AUTH to a server without a password is an error, and sentinels are often left open
    while the data nodes are not (SPEC §7.6: the password goes to sentinels that ask)."""

    async def on_connect_check_health(self, check_health: bool = True) -> None:
        try:
            await super().on_connect_check_health(check_health)
        except ResponseError as exc:
            if "password" not in str(exc).lower() or self.password is None:
                raise
            self.username = self.password = None  # it asked for none: carry on without
            await super().on_connect_check_health(check_health)


class _AuthWhenAskedTLS(_AuthWhenAsked, SSLConnection):
    pass


def _common(topology: Topology, timeout: float, password: str | None) -> dict[str, Any]:
    return {
        "username": topology.username,
        "password": password,
        "socket_timeout": 2 * timeout,  # WAIT may hold a reply for store_timeout
        "socket_connect_timeout": timeout,
        "decode_responses": True,
    }


async def _eval_and_wait(
    connection: Connection, script: str, keys: list[str], args: list[str | int], ms: int
) -> Any:
    """The script, then WAIT on the same connection: WAIT counts this connection's writes."""
    try:
        await connection.send_packed_command(
            connection.pack_commands([("EVAL", script, len(keys), *keys, *args), ("WAIT", 1, ms)])
        )
        result = await connection.read_response()
        replicas = await connection.read_response()
    except BaseException:
        await connection.disconnect()  # a reply may be left unread: never reuse it
        raise
    if int(replicas) < 1:
        raise StoreUnconfirmed("written on the primary, not yet confirmed by a replica")
    return result


class SentinelTopology:
    def __init__(self, topology: Topology, timeout: float, password: str | None) -> None:
        common = _common(topology, timeout, password)
        tls = {"ssl": True} if topology.tls else {}
        self._sentinel = Sentinel([], **common, **tls, db=topology.db)  # type: ignore[no-untyped-call]
        self._sentinel.sentinels = [
            redis.Redis(
                connection_pool=redis.ConnectionPool(
                    connection_class=_AuthWhenAskedTLS if topology.tls else _AuthWhenAsked,
                    host=host,
                    port=port,
                    **common,
                )
            )
            for host, port in topology.nodes
        ]
        self._service = topology.service
        self.client: redis.Redis = self._sentinel.master_for(
            topology.service,
            connection_pool_class=SentinelConnectionPool,
            max_connections=64,
        )
        scheme = "rediss" if topology.tls else "redis"
        url = URL.build(scheme=scheme, host="primary", path=f"/{topology.db}")
        url = url.with_user(topology.username) if topology.username else url
        self.hot = PipelinedConnection(url, password, locate=self._locate, primary_only=True)
        self._ms = max(1, int(timeout * 1000))

    async def _locate(self) -> tuple[str, int]:
        try:
            host, port = await self._sentinel.discover_master(self._service)
        except RedisError as exc:
            raise WireError(type(exc).__name__) from None
        return str(host), int(port)

    async def confirmed(self, script: str, keys: list[str], args: list[str | int]) -> Any:
        pool = self.client.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            return await _eval_and_wait(connection, script, keys, args, self._ms)
        finally:
            await pool.release(connection)

    async def note(self) -> str | None:
        info = await self.client.info("replication")
        return None if int(info.get("connected_slaves", 0)) else NO_REPLICA

    async def close(self) -> None:
        self.hot.reset()
        await self.client.aclose()
        await self.client.connection_pool.disconnect()
        for sentinel in self._sentinel.sentinels:
            await sentinel.aclose()
            await sentinel.connection_pool.disconnect()  # a pool we gave it: ours to close


class ClusterTopology:
    def __init__(self, topology: Topology, timeout: float, password: str | None) -> None:
        self.client = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in topology.nodes],
            ssl=topology.tls,
            max_connections=64,
            **_common(topology, timeout, password),
        )
        self.hot = ClusterWire(self.client, topology, password)
        self._ms = max(1, int(timeout * 1000))

    async def confirmed(self, script: str, keys: list[str], args: list[str | int]) -> Any:
        await self.hot.refresh()
        node = self.client.get_node_from_key(keys[0])
        if node is None:
            raise StoreUnavailable("no node for the slot")
        connection = node.acquire_connection()
        try:
            return await _eval_and_wait(connection, script, keys, args, self._ms)
        except RedisError:
            self.hot.reset()  # a moved slot or a failed node: read the slot map again
            raise
        finally:
            node.release(connection)

    async def note(self) -> str | None:
        await self.hot.refresh()
        infos = await self.client.info("replication", target_nodes=RedisCluster.PRIMARIES)
        alone = any(not int(i.get("connected_slaves", 0)) for i in infos.values())
        return NO_REPLICA if alone else None

    async def close(self) -> None:
        self.hot.reset()
        await self.client.aclose()


class ClusterWire:
    """The per-request MGET across a cluster: one pipelined connection per primary."""

    def __init__(self, cluster: RedisCluster, topology: Topology, password: str | None) -> None:
        self._cluster = cluster
        self._password = password
        self._scheme = "rediss" if topology.tls else "redis"
        self._username = topology.username
        self._nodes: dict[tuple[str, int], PipelinedConnection] = {}
        self._stale = True
        self._started = False
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Reads the slot map at first use and again after any error (failover, moved slot)."""
        if not self._stale:
            return
        async with self._lock:
            if self._stale:
                try:
                    if self._started:
                        await self._cluster.nodes_manager.initialize()
                    else:  # the client's own first start, so that its aclose closes all
                        await self._cluster.initialize()
                        self._started = True
                except RedisError as exc:
                    raise WireError(type(exc).__name__) from None
                self._stale = False

    def _node(self, host: str, port: int) -> PipelinedConnection:
        wire = self._nodes.get((host, port))
        if wire is None:
            url = URL.build(scheme=self._scheme, host=host, port=port)
            url = url.with_user(self._username) if self._username else url
            wire = self._nodes[(host, port)] = PipelinedConnection(url, self._password)
        return wire

    async def mget(self, keys: list[str]) -> list[str | None]:
        await self.refresh()
        slots: dict[int, list[int]] = {}
        for i, name in enumerate(keys):
            slots.setdefault(key_slot(name.encode()), []).append(i)
        cache = self._cluster.nodes_manager.slots_cache
        sent = []
        for slot, where in slots.items():
            owners = cache.get(slot)
            if not owners:
                raise WireError("slot not covered")
            wire = self._node(owners[0].host, int(owners[0].port))
            sent.append(wire.execute("MGET", *(keys[i] for i in where)))
        replies = await asyncio.gather(*sent, return_exceptions=True)
        values: list[str | None] = [None] * len(keys)
        for where, reply in zip(slots.values(), replies, strict=True):
            if isinstance(reply, BaseException):
                raise reply
            for i, value in zip(where, reply, strict=True):
                values[i] = value
        return values

    def reset(self) -> None:
        for wire in self._nodes.values():
            wire.reset()
        self._stale = True


def open_topology(
    url: URL, timeout: float, password: str | None
) -> SentinelTopology | ClusterTopology:
    """The opaque config URL (redis_topology) as a connected-on-first-use topology."""
    topology = from_url(url)
    if topology.kind == "sentinel":
        return SentinelTopology(topology, timeout, password)
    return ClusterTopology(topology, timeout, password)
