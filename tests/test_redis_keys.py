"""Key names: all records of one user hash to one Redis Cluster slot, whatever the subject."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from gateway.redis_keys import key, prefix, tag, throttle_key

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
