"""Redis key names: every record of one user lives in one Redis Cluster slot.

A key is `gw:{<subject>}:<kind>[:<ident>]`. Redis Cluster hashes only the part
between the first `{` and the next `}` (the hash tag), so a user's families,
index, cut-off, dead-family and denied-jti markers share a slot: the
per-request check (deny, cut, dead) stays one MGET and every Lua script that
touches one user stays atomic on one node. On a single Redis or behind
Sentinel the braces cost nothing.

A subject that is empty, holds a brace or starts with `#` would give an empty,
cut or ambiguous tag; it is tagged `#<sha256 of the subject>` instead, which no
plain tag can equal (plain tags never start with `#`).

Login-failure counters (per username, per client, per pair) are keyed by
three different things but checked and counted in one script, so they share
one fixed tag, `{!throttle}`: one slot, hence one node, holds all of them.
Sign-in attempts are rare next to requests; atomicity is worth that.
"""

from __future__ import annotations

import hashlib

PREFIX = "gw:"
THROTTLE = "!throttle"


def tag(subject: str) -> str:
    """The hash tag for a subject: itself when that is safe, else a digest of it."""
    if not subject or subject[0] == "#" or "{" in subject or "}" in subject:
        return "#" + hashlib.sha256(subject.encode()).hexdigest()
    return subject


def prefix(subject: str) -> str:
    """`gw:{<tag>}:`: what every key of this subject starts with (Lua builds keys from it)."""
    return f"{PREFIX}{{{tag(subject)}}}:"


def key(subject: str, kind: str, ident: str = "") -> str:
    """`gw:{<subject>}:<kind>:<ident>`, or `gw:{<subject>}:<kind>` with no ident."""
    head = prefix(subject) + kind
    return f"{head}:{ident}" if ident else head


def legacy_keys(subject: str, jti: str, family: str) -> list[str]:
    """The previous release's denied-jti, cut-off and dead-family keys (no hash tag).

    Read beside the new ones on a single Redis and behind Sentinel, where that release
    could have written them, so that nothing revoked before an upgrade is accepted
    after it. The denied and dead markers expire within access_ttl + leeway; the
    cut-offs never do, so they are read for good (a small part of the same MGET)."""
    return [f"{PREFIX}deny:{jti}", f"{PREFIX}cut:{subject}", f"{PREFIX}dead:{family}"]


def throttle_key(kind: str, ident: str) -> str:
    """A login-failure counter: `gw:{!throttle}:fail:<kind>:<ident>`, all in one slot."""
    return f"{PREFIX}{{{THROTTLE}}}:fail:{kind}:{ident}"
