"""The redis+sentinel:// and redis+cluster:// grammar (SPEC §7.6), in check-config and in use."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
import redis.asyncio as redis

from gateway.config import load
from gateway.redis_keys import key
from gateway.redis_topology import Topology, as_url, from_url, parse
from gateway.store import AccessCheck, Session, StoreUnavailable
from gateway.stores import open_store
from tests.conftest import config_text, write_config
from tests.helpers import run_cli
from tests.redis_topologies import Cluster, Sentinels
from tests.test_config import problems


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "redis+sentinel://s1:26379,s2:26379,s3:26379/mymaster/0",
            Topology("sentinel", False, None, (("s1", 26379), ("s2", 26379), ("s3", 26379)),
                     "mymaster", 0),
        ),
        (
            "rediss+sentinel://gw@s1:26379/mymaster",
            Topology("sentinel", True, "gw", (("s1", 26379),), "mymaster", 0),
        ),
        (
            "redis+sentinel://[::1]:26379/m/3",
            Topology("sentinel", False, None, (("::1", 26379),), "m", 3),
        ),
        (
            "REDIS+CLUSTER://n1:6379,n2:6379",
            Topology("cluster", False, None, (("n1", 6379), ("n2", 6379))),
        ),
        ("rediss+cluster://u@n1:7000/", Topology("cluster", True, "u", (("n1", 7000),))),
    ],
)  # fmt: skip
def test_the_grammar_reads(text: str, expected: Topology) -> None:
    assert parse(text) == expected
    assert from_url(as_url(text)) == expected  # as the config keeps it


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("store: redis+sentinel://s1:26379\n", "/service[/db]"),
        ("store: redis+sentinel://s1/mymaster\n", "host:port"),
        ("store: redis+sentinel://s1:26379,/mymaster\n", "host:port"),
        ("store: redis+sentinel://gw:hunter2@s1:26379/m\n", "a password never goes in the YAML"),
        ("store: redis+cluster://n1:6379/0\n", "a cluster has no databases"),
        ("store: redis+cluster://n1:70000\n", "a port from 1 to 65535"),
        ("store: redis+cluster://n1:6379?password=hunter2\n", "expected no ?options"),
        ("store: redis+kafka://n1:6379\n", "redis+sentinel://[user@]host:port"),
    ],
)
def test_check_config_names_file_and_line(
    tmp_path: Path, secret: str, snippet: str, expected: str
) -> None:
    found = problems(tmp_path, config_text("http://127.0.0.1:3000", snippet))
    assert any(expected in line and ": store: " in line for line in found), found
    assert not any("hunter2" in line for line in found)


def test_a_valid_url_loads_and_check_config_accepts_it(tmp_path: Path, secret: str) -> None:
    text = config_text(
        "http://127.0.0.1:3000", "store: redis+cluster://n1:6379,n2:6379\nworkers: 2\n"
    )
    path = write_config(tmp_path, text)
    assert load(path).store.scheme == "redis+cluster"
    checked = run_cli("check-config", "--config", str(path), secret=secret)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.redis_ha
@pytest.mark.parametrize("guarded", [False, True], ids=["open-sentinels", "guarded-sentinels"])
async def test_the_password_reaches_data_nodes_and_the_sentinels_that_ask(
    tmp_path: Path, guarded: bool
) -> None:
    topology = Sentinels(tmp_path, password="s3cret-pw", guarded=guarded)
    topology.start()
    try:
        store = open_store(as_url(topology.url), timeout=1.0, password="s3cret-pw")
        try:
            now = time.time()
            await store.create_family(Session("f", "pw-user", now, now, "", ""), "d", 60)
            assert not await store.access_revoked(AccessCheck("j", "pw-user", "f", now))
            await store.end_family("f", "pw-user", "j", 60)  # WAIT: the replica has it
            assert await store.access_revoked(AccessCheck("j", "pw-user", "f", now))
            assert await store.ping() is None
        finally:
            await store.close()
    finally:
        topology.stop()


@pytest.mark.redis_ha
async def test_a_sentinel_that_never_answers_costs_nothing(tmp_path: Path) -> None:
    """The first sentinel accepts connections and says nothing (a black-holed address):
    the others are asked at the same time, so every call still answers in time."""
    topology = Sentinels(tmp_path)
    topology.start()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # connections complete in the backlog; nothing is ever read
        port = silent.getsockname()[1]
        url = topology.url.replace("redis+sentinel://", f"redis+sentinel://127.0.0.1:{port},")
        store = open_store(as_url(url), timeout=0.5)
        try:
            now = time.time()
            for _ in range(3):
                assert not await store.access_revoked(AccessCheck("j", "quiet", "f", now))
                await store.create_family(Session("f", "quiet", now, now, "", ""), "d", 60)
        finally:
            await store.close()
            topology.stop()


@pytest.mark.redis_ha
async def test_a_primary_demoted_alive_is_left_for_the_new_one(tmp_path: Path) -> None:
    """SENTINEL FAILOVER: the old primary lives on as a replica (it would answer reads with
    stale data). The store follows to the new primary, and confirmed writes land there."""
    topology = Sentinels(tmp_path)
    topology.start()
    store = open_store(as_url(topology.url), timeout=1.0)
    try:
        now = time.time()
        await store.create_family(Session("f1", "demoted", now, now, "", ""), "d", 60)
        await store.end_family("f1", "demoted", "j1", 60)
        old = topology.primary()
        sentinel = redis.Redis(port=topology.sentinel_ports[0], decode_responses=True)
        await sentinel.execute_command("SENTINEL", "FAILOVER", "mymaster")  # type: ignore[no-untyped-call]
        await sentinel.aclose()
        await asyncio.to_thread(topology.wait_promoted, old)
        deadline = time.monotonic() + 20
        while True:  # bounded: until the store has followed, 503s (StoreUnavailable) meanwhile
            try:
                await store.end_family("f2", "demoted", "j2", 60)
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the store did not follow the failover"
                await asyncio.sleep(0.2)
        assert await store.access_revoked(AccessCheck("j1", "demoted", "f1", now))
        assert await store.access_revoked(AccessCheck("j2", "demoted", "f2", now))
        new = redis.Redis(port=topology.primary().port, decode_responses=True)
        assert await new.exists(key("demoted", "deny", "j2"))
        await new.aclose()
        assert topology.primary() is not old
    finally:
        await store.close()
        topology.stop()


@pytest.mark.redis_ha
async def test_a_moved_slot_is_followed(tmp_path: Path) -> None:
    """A user's slot resharded to another primary: the per-request check, the scripts and
    a confirmed logout all follow the MOVED answer, without a 503."""
    topology = Cluster(tmp_path)
    topology.start()
    store = open_store(as_url(topology.url), timeout=1.0)
    try:
        now = time.time()
        await store.create_family(Session("f1", "mover", now, now, "", ""), "d", 60)
        await store.end_family("f1", "mover", "j1", 60)
        assert await store.access_revoked(AccessCheck("j1", "mover", "f1", now))
        old = topology.owner(key("mover", "cut"))
        new = await asyncio.to_thread(topology.move_slot, key("mover", "cut"))
        assert new is not old
        assert await store.access_revoked(AccessCheck("j1", "mover", "f1", now))
        assert not await store.access_revoked(AccessCheck("j2", "mover", "f2", now))
        await store.create_family(Session("f2", "mover", now, now, "", ""), "d", 60)
        await asyncio.to_thread(topology.move_slot, key("mover", "cut"))
        await store.end_family("f2", "mover", "j2", 60)  # the first call after the move
        assert await store.access_revoked(AccessCheck("j2", "mover", "f2", now))
        assert [s.family for s in await store.sessions("mover")] == []
    finally:
        await store.close()
        topology.stop()
