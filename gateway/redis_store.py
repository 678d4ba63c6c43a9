"""`redis://` and `rediss://`: the store replicas share.

One bounded connection pool, one timeout on every call (`store_timeout`,
covering connect, the one retry after a dropped connection, and the reply),
and every multi-key change a Lua script, so two replicas racing the same
rotation cannot both win. Any failure surfaces as StoreUnavailable: the
caller answers 503 rather than guess, which is what keeps a revoked token out
while Redis is down. Keys live under `gw:`, one user's in one Cluster slot
(redis_keys). Sentinel and Cluster (redis+sentinel://, redis+cluster://) bring
their own clients, hot path and confirmed writes: redis_ha.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from yarl import URL

from . import redis_scripts as lua
from .redis_cluster import ClusterTopology, ClusterWire
from .redis_ha import open_topology
from .redis_keys import key, legacy_keys, prefix, throttle_key
from .redis_sentinel import SentinelTopology
from .redis_topology import HA_SCHEMES
from .redis_wire import PipelinedConnection, WireError
from .store import AccessCheck, Limits, Rotation, Session, StoreUnavailable

T = TypeVar("T")


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _single(
    url: URL, timeout: float, password: str | None
) -> tuple[redis.Redis, PipelinedConnection]:
    pool = redis.BlockingConnectionPool.from_url(
        str(url),
        max_connections=64,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        # one quick retry: after a Redis restart every pooled connection is dead once
        retry=Retry(NoBackoff(), 1),
        password=password,
        decode_responses=True,
    )
    return redis.Redis(connection_pool=pool), PipelinedConnection(url, password)


class RedisStore:
    def __init__(self, url: URL, timeout: float, password: str | None = None) -> None:
        self._timeout = timeout
        self._ha: SentinelTopology | ClusterTopology | None = None
        self._hot: PipelinedConnection | ClusterWire
        if url.scheme in HA_SCHEMES:
            self._ha = open_topology(url, timeout, password)
            # RedisCluster is no Redis subclass, but has every command and script used here
            self._redis: redis.Redis = self._ha.client  # type: ignore[assignment]
            self._hot = self._ha.hot
        else:
            self._redis, self._hot = _single(url, timeout, password)
        # the previous release's markers, still read where it could have written them
        self._legacy = not isinstance(self._ha, ClusterTopology)
        self._pending: list[tuple[AccessCheck, asyncio.Future[bool]]] = []
        self._batches: set[asyncio.Future[None]] = set()
        self._create = self._redis.register_script(lua.CREATE)
        self._rotate = self._redis.register_script(lua.ROTATE)
        self._end = self._redis.register_script(lua.END)
        self._revoke_user = self._redis.register_script(lua.REVOKE_USER)
        self._attempt = self._redis.register_script(lua.ATTEMPT)
        self._take_back = self._redis.register_script(lua.TAKE_BACK)
        self._take = self._redis.register_script(lua.TAKE)
        self._index = self._redis.register_script(lua.INDEX)
        self._bump = self._redis.register_script(lua.BUMP)

    async def _call(self, operation: Awaitable[T], budget: float = 1) -> T:
        try:
            async with asyncio.timeout(self._timeout * budget):
                if self._ha is None:
                    return await operation
                async with self._ha.admission:  # waits for a free connection, like the pool
                    await self._ha.ready()
                    return await operation
        except (redis.RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(type(exc).__name__) from None

    async def access_revoked(self, check: AccessCheck) -> bool:
        """Joins the checks of every request that arrives in the same loop turn into one MGET.

        A client call costs far more CPU than Redis's work for it; under load, requests
        share that cost instead of each paying it, and each still waits one round trip.
        """
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((check, future))
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(self._send_checks)
        return await future

    def _send_checks(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.ensure_future(self._check_batch(batch))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _check_batch(self, batch: list[tuple[AccessCheck, asyncio.Future[bool]]]) -> None:
        keys = []
        for check, _ in batch:
            keys += [
                key(check.subject, "deny", check.jti),
                key(check.subject, "cut"),
                key(check.subject, "dead", check.family),
            ]
            if self._legacy:
                keys += legacy_keys(check.subject, check.jti, check.family)
        width = 6 if self._legacy else 3
        why = "no answer"
        try:
            values = await self._mget(keys)
            for i, (check, future) in enumerate(batch):
                row = values[width * i : width * i + width]  # deny, cut, dead (and legacy)
                denied = any(v is not None for v in row[0::3])
                dead = check.family != "" and any(v is not None for v in row[2::3])
                revoked = denied or dead
                cutoffs = [float(c) for c in row[1::3] if c is not None]
                if not revoked and cutoffs:
                    revoked = check.issued_at < max(cutoffs)
                if not future.done():  # its request may have been cancelled meanwhile
                    future.set_result(revoked)
        except (StoreUnavailable, ValueError, TypeError) as exc:
            why = str(exc)
        finally:
            # every waiting request gets an answer, whatever happened: never a hang
            for _, future in batch:
                if not future.done():
                    future.set_exception(StoreUnavailable(why))

    async def _mget(self, keys: list[str]) -> list[str | None]:
        """On the pipelined connection; one quick retry when it was found dropped."""
        try:
            async with asyncio.timeout(self._timeout):
                for attempt in (1, 2):
                    try:
                        return await self._hot.mget(keys)
                    except (WireError, OSError):
                        self._hot.reset()
                        if attempt == 2:
                            raise
        except TimeoutError:
            self._hot.reset()
            raise StoreUnavailable("TimeoutError") from None
        except (WireError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from None
        raise StoreUnavailable("no answer")  # not reached: the loop returns or raises

    async def create_family(self, session: Session, token_digest: str, ttl: float) -> None:
        keys = [key(session.subject, "fam", session.family), key(session.subject, "user")]
        args: list[str | int] = [
            session.subject,
            token_digest,
            repr(session.created),
            session.client,
            session.user_agent,
            _ms(ttl),
            session.family,
        ]
        await self._call(self._create(keys=keys, args=args))

    async def rotate(
        self,
        family: str,
        subject: str,
        presented: str,
        successor: str,
        *,
        now: float,
        grace: float,
        ttl: float,
        client: str,
        user_agent: str,
        revoked_for: float,
    ) -> Rotation:
        keys = [key(subject, "fam", family), key(subject, "dead", family), key(subject, "user")]
        args: list[str | int] = [
            presented,
            successor,
            repr(now),
            repr(grace),
            _ms(ttl),
            client,
            user_agent,
            _ms(revoked_for),
            family,
        ]
        outcome, rotated_at = await self._call(self._rotate(keys=keys, args=args))
        return Rotation(outcome, float(rotated_at))

    async def end_family(self, family: str, subject: str, jti: str | None, deny_for: float) -> None:
        keys = [key(subject, "fam", family), key(subject, "dead", family), key(subject, "user")]
        if jti:
            keys.append(key(subject, "deny", jti))
        await self._confirmed(self._end, keys, [_ms(deny_for), family])

    async def revoke_user(self, subject: str, now: float, keep_for: float) -> int:
        keys = [key(subject, "user"), key(subject, "cut")]
        args: list[str | int] = [repr(now), _ms(keep_for), prefix(subject)]
        count = await self._confirmed(self._revoke_user, keys, args)
        return int(count)

    async def _confirmed(self, script: AsyncScript, keys: list[str], args: list[str | int]) -> Any:
        """With Sentinel or Cluster, acknowledged only once a replica has it (SPEC §7.6)."""
        if self._ha is None:
            return await self._call(script(keys=keys, args=args))
        # the write, then WAIT for up to store_timeout: twice the budget of one call
        return await self._call(self._ha.confirmed(str(script.script), keys, args), 2)

    async def sessions(self, subject: str) -> list[Session]:
        found = await self._call(self._redis.zrange(key(subject, "user"), 0, -1))
        families = [str(f) for f in found]
        if not families:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for family in families:
            pipe.hgetall(key(subject, "fam", family))
        rows = await self._call(pipe.execute())
        return [
            Session(
                family=family,
                subject=row.get("sub", subject),
                created=float(row.get("created", 0)),
                last_refresh=float(row.get("last", 0)),
                client=row.get("client", ""),
                user_agent=row.get("ua", ""),
            )
            for family, row in zip(families, rows, strict=True)
            if row
        ]

    async def attempt(self, username: str, client: str, limits: Limits) -> float:
        keys, limits_list = _failure_keys(username, client, limits)
        args = [*limits_list, _ms(limits.window)]
        wait_ms = await self._call(self._attempt(keys=keys, args=args))
        return int(wait_ms) / 1000

    async def take_back(self, username: str, client: str, *, success: bool) -> None:
        keys, _ = _failure_keys(username, client, Limits(pair=0, single=0, window=0))
        await self._call(self._take_back(keys=keys, args=["1" if success else "0"]))

    # OpenID Connect: login states and index entries are keyed (hash-tagged) by their own
    # random or provider-given name, so they spread over the cluster; a session's provider
    # link lives in its user's slot, beside the family.

    async def put_login_state(self, key_: str, value: str, ttl: float) -> None:
        await self._call(self._redis.set(key(key_, "oidc-state"), value, px=_ms(ttl)))

    async def take_login_state(self, key_: str) -> str | None:
        value = await self._call(self._take(keys=[key(key_, "oidc-state")], args=[]))
        return None if value is None else str(value)

    async def bump(self, key_: str, window: float) -> int:
        count = await self._call(self._bump(keys=[key(key_, "bump")], args=[_ms(window)]))
        return int(count)

    async def mark_once(self, key_: str, ttl: float) -> bool:
        done = await self._call(self._redis.set(key(key_, "once"), "1", px=_ms(ttl), nx=True))
        return bool(done)

    async def put_provider_link(self, family: str, subject: str, value: str, ttl: float) -> None:
        await self._call(self._redis.set(key(subject, "oidc-link", family), value, px=_ms(ttl)))

    async def provider_link(self, family: str, subject: str) -> str | None:
        value = await self._call(self._redis.get(key(subject, "oidc-link", family)))
        return None if value is None else str(value)

    async def drop_provider_link(self, family: str, subject: str) -> None:
        await self._call(self._redis.delete(key(subject, "oidc-link", family)))

    async def index_provider_session(
        self, index: str, family: str, subject: str, ttl: float
    ) -> None:
        args: list[str | int] = [family, subject, _ms(ttl)]
        await self._call(self._index(keys=[key(index, "oidc-index")], args=args))

    async def provider_sessions(self, index: str) -> dict[str, str]:
        found = await self._call(self._redis.hgetall(key(index, "oidc-index")))
        return {str(k): str(v) for k, v in found.items()}

    async def ping(self) -> str | None:
        if self._ha is not None:
            return await self._call(self._ha.note())
        await self._call(self._redis.ping())
        return None

    async def close(self) -> None:
        self._hot.reset()
        if self._ha is not None:
            return await self._ha.close()
        await self._redis.aclose()
        await self._redis.connection_pool.disconnect()


def _pair_key(username: str, client: str) -> str:
    return throttle_key("pair", f"{username}\0{client}")


def _failure_keys(username: str, client: str, limits: Limits) -> tuple[list[str], list[int]]:
    """Failures counted three ways: the pair, the username alone, the client alone."""
    return (
        [
            _pair_key(username, client),
            throttle_key("user", username),
            throttle_key("client", client),
        ],
        [limits.pair, limits.single, limits.single],
    )
