"""Key names: all records of one user hash to one Redis Cluster slot, whatever the subject;
the previous release's revocation markers are still honoured."""

from __future__ import annotations

import time
import uuid

import pytest
import redis.asyncio as redis
from redis.crc import key_slot
from yarl import URL

from gateway.redis_keys import key, prefix, tag, throttle_key
from gateway.store import AccessCheck
from gateway.stores import open_store

SUBJECTS = ["alice", "", "}x", "a{b}c", "#abc", "üser@example.com", "a:b"]


@pytest.mark.parametrize("subject", SUBJECTS)
def test_one_users_keys_share_a_slot(subject: str) -> None:
    names = [
        key(subject, "deny", "jti-1"),
        key(subject, "cut"),
        key(subject, "dead", "fam-1"),
        key(subject, "fam", "fam-2"),
        key(subject, "user"),
        prefix(subject) + "fam:" + "fam-3",  # as the revocation script builds them
    ]
    assert len({key_slot(n.encode()) for n in names}) == 1


def test_tags_are_plain_when_safe_and_never_collide_otherwise() -> None:
    assert key("alice", "deny", "j") == "gw:{alice}:deny:j"
    assert key("alice", "cut") == "gw:{alice}:cut"
    tags = {tag(s) for s in SUBJECTS}
    assert len(tags) == len(SUBJECTS)
    assert tag("#" + tag("}x")[1:]) != tag("}x")


def test_throttle_counters_share_one_slot() -> None:
    names = [throttle_key("pair", "u\0c"), throttle_key("user", "u"), throttle_key("client", "c")]
    assert len({key_slot(n.encode()) for n in names}) == 1


async def test_the_previous_releases_revocations_still_hold(redis_url: str) -> None:
    """Written by the release before the hash tags (keys without braces): still refused
    after an upgrade on a single Redis, for every kind of marker."""
    user, now = f"legacy-{uuid.uuid4().hex}", time.time()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = open_store(URL(redis_url), timeout=1.0)
    try:
        assert not await store.access_revoked(AccessCheck("j1", user, "f1", now))
        await client.set(f"gw:deny:j1-{user}", "1", px=60_000)
        await client.set(f"gw:dead:f2-{user}", "1", px=60_000)
        await client.set(f"gw:cut:{user}", repr(now))
        checks = [
            (AccessCheck(f"j1-{user}", user, "", now + 10), True),  # denied jti
            (AccessCheck("j2", user, f"f2-{user}", now + 10), True),  # dead family
            (AccessCheck("j3", user, "", now - 10), True),  # before the cut-off
            (AccessCheck("j4", user, "", now + 10), False),  # after it
        ]
        for check, revoked in checks:
            assert await store.access_revoked(check) is revoked, check
    finally:
        await store.close()
        await client.aclose()
