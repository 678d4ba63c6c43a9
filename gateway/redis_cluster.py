"""Cluster: one user's keys in one slot (redis_keys), moved slots and failed nodes followed.

redis-py's RedisCluster runs the scripts and admin commands and keeps the slot
map; the per-request MGETs go over one pipelined connection per primary, the
keys grouped by slot and each slot's MGET sent at once; a logout or revocation
is the script then WAIT on a connection to the slot's primary (redis_ha).
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import MovedError, RedisError
from yarl import URL

from .redis_ha import NO_REPLICA, client_options, eval_and_wait
from .redis_topology import Topology
from .redis_wire import PipelinedConnection, ReplyError, WireError
from .store import StoreUnavailable


class ClusterTopology:
    def __init__(self, topology: Topology, timeout: float, password: str | None) -> None:
        self.client = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in topology.nodes],
            ssl=topology.tls,
            max_connections=64,
            **client_options(topology, timeout, password),
        )
        self.hot = ClusterWire(self.client, topology, password)
        self._ms = max(1, int(timeout * 1000))
        # RedisCluster fails a command at once when a node has 64 connections busy; calls
        # beyond that wait here instead (within store_timeout), as with a single Redis
        self.admission = asyncio.Semaphore(64)

    async def ready(self) -> None:
        """The slot map read once before any command: redis-py 8.1's RedisCluster, started by
        many concurrent first commands, hands some a connection another is closing."""
        await self.hot.refresh()

    async def confirmed(self, script: str, keys: list[str], args: list[str | int]) -> Any:
        """On the primary of the keys' slot; a MOVED answer (the script did not run) is
        followed once, with the slot map read again."""
        for attempt in (1, 2):
            await self.hot.refresh()
            node = self.client.get_node_from_key(keys[0])
            if node is None:
                raise StoreUnavailable("no node for the slot")
            connection = node.acquire_connection()
            try:
                return await eval_and_wait(connection, script, keys, args, self._ms)
            except MovedError:
                self.hot.reset()
                if attempt == 2:
                    raise
            except RedisError:
                self.hot.reset()  # a failed node: read the slot map again next time
                raise
            finally:
                node.release(connection)
        raise StoreUnavailable("no answer")  # not reached: the loop returns or raises

    async def note(self) -> str | None:
        await self.hot.refresh()
        infos = await self.client.info("replication", target_nodes=RedisCluster.PRIMARIES)
        alone = any(not int(i.get("connected_slaves", 0)) for i in infos.values())
        return NO_REPLICA if alone else None

    async def close(self) -> None:
        self.hot.close()
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
        by_node: dict[tuple[str, int], list[list[int]]] = {}
        for slot, where in slots.items():
            owners = cache.get(slot)
            if not owners:
                self._stale = True
                raise WireError("slot not covered")
            by_node.setdefault((owners[0].host, int(owners[0].port)), []).append(where)
        sent: list[tuple[PipelinedConnection, asyncio.Future[Any]]] = []
        for (host, port), groups in by_node.items():
            wire = self._node(host, port)
            commands = [("MGET", *(keys[i] for i in where)) for where in groups]
            sent.append((wire, asyncio.ensure_future(wire.execute_many(commands))))
        try:
            await asyncio.wait([reply for _, reply in sent])
        finally:  # cancelled (store_timeout): drop only the connections that did not answer
            self._drop_failed(sent)
        values: list[str | None] = [None] * len(keys)
        for groups, (_, reply) in zip(by_node.values(), sent, strict=True):
            for where, found in zip(groups, reply.result(), strict=True):
                for i, value in zip(where, found, strict=True):
                    values[i] = value
        return values

    def _drop_failed(self, sent: list[tuple[PipelinedConnection, asyncio.Future[Any]]]) -> None:
        """One failed node must not cost the others their in-flight requests: its connection
        alone is dropped (a reply error like MOVED keeps it), and the slot map is read again."""
        for wire, reply in sent:
            if not reply.done():
                reply.cancel()
                wire.reset()
            elif reply.cancelled() or reply.exception() is not None:
                self._stale = True
                if not isinstance(None if reply.cancelled() else reply.exception(), ReplyError):
                    wire.reset()

    def reset(self) -> None:
        """After a failure or a timeout: read the slot map again before the next command.
        The failed node's connection was dropped in `mget`; the healthy ones stay."""
        self._stale = True

    def close(self) -> None:
        for wire in self._nodes.values():
            wire.reset()
