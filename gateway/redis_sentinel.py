"""Sentinel: the primary the sentinels name, followed through a failover (SPEC §7.6).

redis-py's Sentinel-managed client runs the scripts and admin commands; the
per-request MGET goes over one pipelined connection to the primary, looked up
again at every reconnect and checked with ROLE (redis_wire); a logout or
revocation is the script then WAIT on one pooled connection (redis_ha).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

import redis.asyncio as redis
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.exceptions import RedisError, ResponseError
from yarl import URL

from .redis_ha import NO_REPLICA, client_options, eval_and_wait
from .redis_topology import Topology
from .redis_wire import PipelinedConnection, WireError


class _AuthWhenAsked(Connection):
    """A sentinel connection that sends the password only to a sentinel that wants one.

    AUTH to a server without a password is an error, and sentinels are often left open
    while the data nodes are not (SPEC §7.6: the password goes to sentinels that ask)."""

    async def on_connect_check_health(self, check_health: bool = True) -> None:
        try:
            await super().on_connect_check_health(check_health)
        except ResponseError as exc:
            # Redis 6+: "...called without any password configured..."; 5: "...no password is set"
            said = str(exc).lower()
            asked_none = "without any password configured" in said or "no password is set" in said
            if not asked_none or self.password is None:
                raise
            self.username = self.password = None  # it asked for none: carry on without
            await super().on_connect_check_health(check_health)


class _AuthWhenAskedTLS(_AuthWhenAsked, SSLConnection):
    pass


class _Sentinel(Sentinel):
    """Asks every sentinel at once and takes the first valid answer.

    redis-py asks them in turn, each for up to its timeout: behind one sentinel whose
    address drops packets, every lookup would outlast store_timeout and the gateway
    would answer 503 for as long as that sentinel is gone. Connections opened together
    (a burst of sign-ins on a fresh pool, every connection after a failover) share one
    lookup in flight instead of asking every sentinel once each."""

    _asking: asyncio.Future[tuple[str, int]] | None = None

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        if self._asking is None or self._asking.done():
            self._asking = asyncio.ensure_future(self._discover(service_name))
            self._asking.add_done_callback(_retrieved)
        return await asyncio.shield(self._asking)

    async def _discover(self, service_name: str) -> tuple[str, int]:
        async def ask(sentinel: redis.Redis) -> tuple[str, int] | None:
            masters = cast(dict[str, dict[str, Any]], await sentinel.sentinel_masters())
            state = masters.get(service_name)
            if state and self.check_master_state(state, service_name):
                return str(state["ip"]), int(state["port"])
            return None

        asking = [asyncio.ensure_future(ask(s)) for s in self.sentinels]
        try:
            for answer in asyncio.as_completed(asking):
                try:
                    found = await answer
                except (RedisError, OSError):
                    continue
                if found is not None:
                    return found
        finally:
            for task in asking:
                task.cancel()
                task.add_done_callback(_retrieved)
        raise MasterNotFoundError(f"no sentinel names a primary for {service_name!r}")


class _BlockingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """At most 64 connections to the primary, and a call beyond them waits for one (up
    to store_timeout), as the single Redis's pool does, rather than failing at once."""


def _retrieved(task: asyncio.Future[Any]) -> None:
    """The answers not waited for: their errors are read, so asyncio does not log them."""
    if not task.cancelled():
        task.exception()


class SentinelTopology:
    def __init__(self, topology: Topology, timeout: float, password: str | None) -> None:
        common = client_options(topology, timeout, password)
        tls = {"ssl": True} if topology.tls else {}
        self._sentinel = _Sentinel([], **common, **tls, db=topology.db)  # type: ignore[no-untyped-call]
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
            connection_pool_class=_BlockingSentinelPool,
            max_connections=64,
            timeout=timeout,  # the wait for a free connection
        )
        scheme = "rediss" if topology.tls else "redis"
        url = URL.build(scheme=scheme, host="primary", path=f"/{topology.db}")
        url = url.with_user(topology.username) if topology.username else url
        self.hot = PipelinedConnection(url, password, locate=self._locate, primary_only=True)
        self._ms = max(1, int(timeout * 1000))
        self.admission = contextlib.nullcontext()  # the blocking pool waits by itself

    async def _locate(self) -> tuple[str, int]:
        try:
            host, port = await self._sentinel.discover_master(self._service)
        except RedisError as exc:
            raise WireError(type(exc).__name__) from None
        return str(host), int(port)

    async def ready(self) -> None:
        """Nothing to prepare: each connection asks the sentinels when it connects."""

    async def confirmed(self, script: str, keys: list[str], args: list[str | int]) -> Any:
        pool = self.client.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            return await eval_and_wait(connection, script, keys, args, self._ms)
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
