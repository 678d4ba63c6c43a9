"""One contract, two stores: memory:// and a real Redis server behave the same
(a single Redis, Sentinel and Cluster alike).

Time in these tests is a `Clock`: the memory store reads the clock it was given,
so its TTL cases move that clock on without sleeping; Redis expires keys on its
own, so its cases wait for real, as briefly as the case allows.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from yarl import URL

from gateway.memory_store import MemoryStore
from gateway.redis_store import RedisStore
from gateway.redis_topology import as_url
from gateway.store import AccessCheck, Limits, Rotation, Session, Store, StoreUnavailable
from gateway.stores import open_store
from tests.redis_server import RedisServer
from tests.redis_topologies import Cluster, Sentinels

EXPIRES = 0.5  # a TTL short enough to wait out on Redis, long enough to read before it ends


class Clock:
    """The wall clock, moved on at once where the store reads this clock (memory), or
    waited out in real time where the store keeps its own (Redis)."""

    def __init__(self, *, fake: bool) -> None:
        self._fake = fake
        self._ahead = 0.0

    def __call__(self) -> float:
        return time.time() + self._ahead

    async def advance(self, seconds: float) -> None:
        if self._fake:
            self._ahead += seconds
        else:
            await asyncio.sleep(seconds)


@pytest.fixture(scope="session")
def sentinel_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Sentinel topology per test worker: the contract's users never overlap."""
    topology = Sentinels(tmp_path_factory.mktemp("sentinel"))
    try:
        topology.start()
        yield topology.url
    finally:
        topology.stop()


@pytest.fixture(scope="session")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Cluster per test worker: every script must keep its keys in one slot there."""
    topology = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        topology.start()
        yield topology.url
    finally:
        topology.stop()


HA = pytest.mark.redis_ha


@pytest.fixture(
    params=[
        "memory",
        "redis",
        pytest.param("sentinel", marks=HA),
        pytest.param("cluster", marks=HA),
    ]
)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Store, Clock]]:
    if request.param == "memory":
        clock = Clock(fake=True)
        opened: Store = MemoryStore(clock=clock)
    elif request.param == "redis":
        clock = Clock(fake=False)
        # the contract is about answers, not speed: 5 s, so a loaded machine (40 calls at
        # once through Sentinel took over 1 s once) is not what is measured
        opened = open_store(URL(request.getfixturevalue("redis_url")), timeout=5.0)
    else:
        clock = Clock(fake=False)
        url = as_url(request.getfixturevalue(f"{request.param}_url"))
        opened = open_store(url, timeout=5.0)
    yield opened, clock
    await opened.close()


@pytest.fixture
def store(backend: tuple[Store, Clock]) -> Store:
    return backend[0]


@pytest.fixture
def clock(backend: tuple[Store, Clock]) -> Clock:
    return backend[1]


async def test_each_scheme_opens_its_store() -> None:
    for url, kind in [
        ("memory://", MemoryStore),
        ("redis://127.0.0.1:1/0", RedisStore),
        ("rediss://127.0.0.1:1/0", RedisStore),
    ]:
        opened = open_store(URL(url), timeout=1.0)
        assert isinstance(opened, kind)
        await opened.close()  # nothing was connected
    with pytest.raises(ValueError, match="no store for mongodb://"):
        open_store(URL("mongodb://127.0.0.1/0"), timeout=1.0)


def _user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"  # a fresh user per test keeps a shared Redis clean


async def _login(store: Store, user: str) -> str:
    family = uuid.uuid4().hex
    now = time.time()
    await store.create_family(Session(family, user, now, now, "127.0.0.1", "ua/1"), "d0", 60)
    return family


async def _rotate(
    store: Store,
    family: str,
    user: str,
    presented: str,
    successor: str,
    *,
    now: float | None = None,
) -> Rotation:
    return await store.rotate(
        family, user, presented, successor, now=time.time() if now is None else now,
        grace=10.0, ttl=60.0, client="127.0.0.2", user_agent="ua/2", revoked_for=60.0,
    )  # fmt: skip


async def test_rotation_moves_the_family_forward(store: Store) -> None:
    user = _user()
    family = await _login(store, user)
    first = await _rotate(store, family, user, "d0", "d1")
    assert first.outcome == "rotated"
    second = await _rotate(store, family, user, "d1", "d2")
    assert second.outcome == "rotated"
    sessions = await store.sessions(user)
    assert [s.family for s in sessions] == [family]
    assert sessions[0].client == "127.0.0.2" and sessions[0].user_agent == "ua/2"
    assert sessions[0].last_refresh >= sessions[0].created


async def test_previous_token_within_grace_gets_the_same_rotation_time(store: Store) -> None:
    user = _user()
    family = await _login(store, user)
    rotated = await _rotate(store, family, user, "d0", "d1")
    again = await _rotate(store, family, user, "d0", "d1")
    assert again.outcome == "grace"
    assert again.rotated_at == pytest.approx(rotated.rotated_at)
    assert (await _rotate(store, family, user, "d1", "d2")).outcome == "rotated"


async def test_previous_token_after_grace_revokes_the_family(store: Store) -> None:
    user = _user()
    family = await _login(store, user)
    await _rotate(store, family, user, "d0", "d1", now=time.time() - 20)
    assert (await _rotate(store, family, user, "d0", "d1")).outcome == "reuse"
    # the newest token of that login is dead too, and its access tokens are refused
    assert (await _rotate(store, family, user, "d1", "d2")).outcome == "missing"
    check = AccessCheck(jti="j", subject=user, family=family, issued_at=time.time())
    assert await store.access_revoked(check)
    assert await store.sessions(user) == []


async def test_an_older_token_is_reuse_even_within_grace(store: Store) -> None:
    user = _user()
    family = await _login(store, user)
    await _rotate(store, family, user, "d0", "d1")
    await _rotate(store, family, user, "d1", "d2")
    assert (await _rotate(store, family, user, "d0", "d1")).outcome == "reuse"


async def test_unknown_family_is_missing(store: Store) -> None:
    assert (await _rotate(store, "nope", _user(), "d0", "d1")).outcome == "missing"


async def test_concurrent_rotations_have_one_winner(store: Store) -> None:
    user = _user()
    family = await _login(store, user)
    outcomes = await asyncio.gather(*(_rotate(store, family, user, "d0", "d1") for _ in range(20)))
    kinds = sorted(o.outcome for o in outcomes)
    assert kinds == ["grace"] * 19 + ["rotated"]
    assert len({round(o.rotated_at, 3) for o in outcomes}) == 1


async def test_end_family_kills_refresh_and_denylists_the_access_token(store: Store) -> None:
    user = _user()
    family = await _login(store, user)
    other = await _login(store, user)
    await store.end_family(family, user, "jti-1", 60)
    assert (await _rotate(store, family, user, "d0", "d1")).outcome == "missing"
    now = time.time()
    assert await store.access_revoked(AccessCheck("jti-1", user, "", now))
    assert await store.access_revoked(AccessCheck("jti-2", user, family, now))
    assert not await store.access_revoked(AccessCheck("jti-3", user, other, now))
    assert [s.family for s in await store.sessions(user)] == [other]


async def test_revoke_user_ends_every_session_and_cuts_off_older_tokens(store: Store) -> None:
    user, bystander = _user(), _user()
    families = [await _login(store, user) for _ in range(3)]
    kept = await _login(store, bystander)
    revoked_at = time.time()
    assert await store.revoke_user(user, revoked_at, 60) == 3
    for family in families:
        assert (await _rotate(store, family, user, "d0", "d1")).outcome == "missing"
    assert await store.access_revoked(AccessCheck("j", user, "", revoked_at - 0.01))
    assert not await store.access_revoked(AccessCheck("j", user, "", revoked_at + 1))
    assert not await store.access_revoked(AccessCheck("j", bystander, kept, revoked_at - 0.01))
    assert await store.sessions(user) == []
    assert len(await store.sessions(bystander)) == 1


async def test_user_cut_off_outlives_keep_for(store: Store, clock: Clock) -> None:
    """A token minted elsewhere may carry any exp: the cut-off must not lapse with the
    family markers (SPEC 7.1, revocation holds for every token it covers)."""
    user = _user()
    revoked_at = clock()
    await store.revoke_user(user, revoked_at, 0.05)
    await clock.advance(0.15)  # the markers kept for 0.05 s are gone
    assert await store.access_revoked(AccessCheck("j", user, "", revoked_at - 0.01))
    assert not await store.access_revoked(AccessCheck("j", user, "", clock() + 1))


async def test_sessions_expire_with_their_ttl(store: Store, clock: Clock) -> None:
    user = _user()
    now = clock()
    session = Session("short-" + user, user, now, now, "", "")
    await store.create_family(session, "d0", EXPIRES)
    assert len(await store.sessions(user)) == 1
    await clock.advance(EXPIRES + 0.1)
    assert await store.sessions(user) == []
    rotation = await _rotate(store, session.family, user, "d0", "d1", now=clock())
    assert rotation.outcome == "missing"


async def test_failures_throttle_per_pair_then_clear(store: Store) -> None:
    user = _user()
    limits = Limits(pair=3, single=5, window=30)
    for _ in range(3):  # each attempt counts until it is taken back
        assert await store.attempt(user, "10.0.0.1", limits) == 0
    wait = await store.attempt(user, "10.0.0.1", limits)
    assert 0 < wait <= 30
    assert await store.attempt(user, "10.0.0.2", limits) == 0  # another client is not the pair
    await store.take_back(user, "10.0.0.2", success=True)
    await store.take_back(user, "10.0.0.1", success=True)  # a success forgives the pair
    assert await store.attempt(user, "10.0.0.1", limits) == 0


async def test_attempts_taken_back_do_not_count(store: Store) -> None:
    """Successes (and attempts the backend could not judge) never add up to a lockout."""
    user = _user()
    limits = Limits(pair=2, single=3, window=30)
    for _ in range(10):
        assert await store.attempt(user, "10.0.3.1", limits) == 0
        await store.take_back(user, "10.0.3.1", success=False)
    assert await store.attempt(user, "10.0.3.1", limits) == 0


async def test_parallel_attempts_cannot_outrun_the_limit(store: Store) -> None:
    user = _user()
    limits = Limits(pair=2, single=8, window=30)
    waits = await asyncio.gather(*(store.attempt(user, "10.0.4.1", limits) for _ in range(40)))
    assert sum(1 for w in waits if w == 0) == 2


@pytest.mark.parametrize(
    "topology", ["redis", pytest.param("sentinel", marks=HA), pytest.param("cluster", marks=HA)]
)
async def test_a_burst_beyond_the_connection_limit_waits_instead_of_failing(
    topology: str, request: pytest.FixtureRequest
) -> None:
    """Bursts of 150 then 300 calls, over the 64 connections a Redis store keeps: the rest
    wait for a free one rather than fail at once (redis-py's Sentinel pool and RedisCluster
    did). A store_timeout of 5 s, so a loaded machine is not what is measured."""
    url = request.getfixturevalue(f"{topology}_url")
    opened = open_store(URL(url) if topology == "redis" else as_url(url), timeout=5.0)
    limits = Limits(pair=2, single=8, window=30)
    try:
        for size in (150, 300):  # the second on connections the first left open
            calls = (
                opened.attempt(_user(), f"10.5.{i // 200}.{i % 200}", limits) for i in range(size)
            )
            assert await asyncio.gather(*calls) == [0] * size
    finally:
        await opened.close()


async def test_failures_throttle_a_username_across_clients(store: Store) -> None:
    user = _user()
    limits = Limits(pair=3, single=5, window=30)
    for i in range(5):
        assert await store.attempt(user, f"10.0.1.{i}", limits) == 0
    assert await store.attempt(user, "10.0.1.99", limits) > 0
    assert await store.attempt(_user(), "10.0.1.99", limits) == 0


async def test_failure_window_ends(store: Store, clock: Clock) -> None:
    user = _user()
    limits = Limits(pair=1, single=5, window=EXPIRES)
    assert await store.attempt(user, "10.0.2.1", limits) == 0
    assert await store.attempt(user, "10.0.2.1", limits) > 0
    await clock.advance(EXPIRES + 0.1)
    assert await store.attempt(user, "10.0.2.1", limits) == 0


async def test_redis_down_is_unavailable_not_a_guess(redis_server) -> None:  # type: ignore[no-untyped-def]
    store = open_store(URL(redis_server.url), timeout=0.3)
    try:
        await store.ping()
        redis_server.stop()
        with pytest.raises(StoreUnavailable):  # an answer, not a hang: the timeout bounds it
            await asyncio.wait_for(store.access_revoked(AccessCheck("j", "u", "f", 0)), 30)
        with pytest.raises(StoreUnavailable):
            await store.ping()
        redis_server.start()
        await store.ping()  # recovers by itself on the same pool
        assert not await store.access_revoked(AccessCheck("j", "u", "f", time.time()))
    finally:
        await store.close()


async def test_concurrent_checks_each_get_their_own_answer(store: Store) -> None:
    user, other = _user(), _user()
    family = await _login(store, user)
    await store.end_family(family, user, "denied-jti", 60)
    await store.revoke_user(other, time.time(), 60)
    now = time.time()
    checks = [
        (AccessCheck("denied-jti", user, "", now), True),  # a jti belongs to one subject
        (AccessCheck("fine", _user(), "", now), False),
        (AccessCheck("fine", user, family, now), True),  # dead family
        (AccessCheck("fine", other, "", now - 5), True),  # before the cut-off
        (AccessCheck("fine", other, "", now + 5), False),
    ] * 10
    answers = await asyncio.gather(*(store.access_revoked(c) for c, _ in checks))
    assert answers == [expected for _, expected in checks]


async def test_redis_with_a_password_and_a_database(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, password="s3cret-pw")
    server.start()
    try:
        url = URL(server.url).with_path("/3")
        store = open_store(url, timeout=1.0, password="s3cret-pw")
        user = _user()
        family = await _login(store, user)
        await store.end_family(family, user, "jti-x", 60)
        assert await store.access_revoked(AccessCheck("jti-x", user, "", time.time()))
        assert not await store.access_revoked(AccessCheck("jti-y", user, "", time.time()))
        await store.close()
        wrong = open_store(url, timeout=1.0, password="not-it")
        with pytest.raises(StoreUnavailable):
            await wrong.access_revoked(AccessCheck("jti-x", user, "", time.time()))
        with pytest.raises(StoreUnavailable):
            await wrong.ping()
        await wrong.close()
    finally:
        server.stop()


# -- OpenID Connect records (gateway/oidc) ------------------------------------------------


async def test_a_login_state_is_taken_once(store: Store) -> None:
    key = uuid.uuid4().hex
    assert await store.take_login_state(key) is None
    await store.put_login_state(key, '{"n": 1}', 60)
    taken = await asyncio.gather(*(store.take_login_state(key) for _ in range(5)))
    assert [t for t in taken if t is not None] == ['{"n": 1}'] and taken.count(None) == 4


async def test_a_login_state_expires(store: Store, clock: Clock) -> None:
    key = uuid.uuid4().hex
    await store.put_login_state(key, "v", EXPIRES)
    await clock.advance(EXPIRES + 0.3)
    assert await store.take_login_state(key) is None


async def test_a_once_marker_is_first_only_once_until_it_expires(
    store: Store, clock: Clock
) -> None:
    key = uuid.uuid4().hex
    marks = await asyncio.gather(*(store.mark_once(key, EXPIRES) for _ in range(5)))
    assert sorted(marks) == [False, False, False, False, True]
    await clock.advance(EXPIRES + 0.3)
    assert await store.mark_once(key, 60)


async def test_a_provider_link_lives_with_its_family(store: Store, clock: Clock) -> None:
    user = _user()
    family = await _login(store, user)
    assert await store.provider_link(family, user) is None
    await store.put_provider_link(family, user, "one", 60)
    await store.put_provider_link(family, user, "two", 60)
    assert await store.provider_link(family, user) == "two"
    await store.drop_provider_link(family, user)
    assert await store.provider_link(family, user) is None
    await store.put_provider_link(family, user, "three", EXPIRES)
    await clock.advance(EXPIRES + 0.3)
    assert await store.provider_link(family, user) is None


async def test_the_provider_index_finds_every_family_filed_under_it(
    store: Store, clock: Clock
) -> None:
    index, user, other = f"corp\0sub\0{uuid.uuid4().hex}", _user(), _user()
    assert await store.provider_sessions(index) == {}
    await store.index_provider_session(index, "fam-1", user, 60)
    await store.index_provider_session(index, "fam-2", other, 60)
    assert await store.provider_sessions(index) == {"fam-1": user, "fam-2": other}
    await store.index_provider_session(index, "fam-3", user, EXPIRES)
    await clock.advance(EXPIRES + 0.3)
    assert await store.provider_sessions(index) == {}


async def test_bump_counts_within_a_window_then_starts_again(store: Store, clock: Clock) -> None:
    key = uuid.uuid4().hex
    counts = await asyncio.gather(*(store.bump(key, EXPIRES) for _ in range(4)))
    assert sorted(counts) == [1, 2, 3, 4]
    await clock.advance(EXPIRES + 0.3)
    assert await store.bump(key, 60) == 1
