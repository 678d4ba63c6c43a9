"""Sentinel and Cluster behind RedisStore: what both topologies share.

Each topology (redis_sentinel, redis_cluster) gives RedisStore four things.
`client`: redis-py's Sentinel-managed Redis or RedisCluster, for the Lua scripts
and admin commands (both follow a failover, the cluster also moved slots). `hot`:
the per-request MGET on pipelined connections, as for a single Redis
(docs/performance.md). `confirmed`: a logout or revocation as one script followed
by `WAIT 1 <store_timeout>` on the same connection, so an acknowledged change is
on a replica before a failover can promote one (SPEC §7.6); no replica in time
is StoreUnconfirmed. `note`: /readyz's warning when a primary has no replica.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis.asyncio.connection import Connection
from yarl import URL

from .redis_topology import Topology, from_url
from .store import StoreUnconfirmed

if TYPE_CHECKING:
    from .redis_cluster import ClusterTopology
    from .redis_sentinel import SentinelTopology

NO_REPLICA = "the primary has no replica: a failover now would lose recent logouts"


def client_options(topology: Topology, timeout: float, password: str | None) -> dict[str, Any]:
    return {
        "username": topology.username,
        "password": password,
        "socket_timeout": 2 * timeout,  # WAIT may hold a reply for store_timeout
        "socket_connect_timeout": timeout,
        "decode_responses": True,
    }


async def eval_and_wait(
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


def open_topology(
    url: URL, timeout: float, password: str | None
) -> SentinelTopology | ClusterTopology:
    """The opaque config URL (redis_topology) as a connected-on-first-use topology."""
    from .redis_cluster import ClusterTopology
    from .redis_sentinel import SentinelTopology

    topology = from_url(url)
    if topology.kind == "sentinel":
        return SentinelTopology(topology, timeout, password)
    return ClusterTopology(topology, timeout, password)
