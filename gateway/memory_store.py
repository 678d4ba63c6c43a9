"""`memory://`: the embedded store for one process.

Every method runs without an `await` in the middle, so each is atomic on the
event loop, as the Redis scripts are on the server. Expired entries are
dropped when read and swept every half minute, so memory stays bounded by
what is live.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from .store import AccessCheck, Limits, Rotation, Session

_SWEEP_EVERY = 30.0


@dataclass(slots=True)
class _Family:
    session: Session
    current: str
    previous: str
    rotated_at: float
    expires: float


class MemoryStore:
    """`clock` is what expiry is measured by: tests advance their own instead of sleeping."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._families: dict[str, _Family] = {}
        self._by_user: dict[str, set[str]] = {}
        self._marks: dict[str, float] = {}  # key -> expiry: deny:{jti}, dead:{family}
        self._cutoffs: dict[str, tuple[float, float]] = {}  # subject -> (cut-off, expiry)
        self._failures: dict[str, tuple[int, float]] = {}  # key -> (count, window end)
        self._values: dict[str, tuple[str, float]] = {}  # state:/link: key -> (value, expiry)
        self._index: dict[str, tuple[dict[str, str], float]] = {}  # -> ({family: sub}, expiry)
        self._swept = self._clock()

    async def access_revoked(self, check: AccessCheck) -> bool:
        now = self._clock()
        if self._marks.get("deny:" + check.jti, 0) > now:
            return True
        if check.family and self._marks.get("dead:" + check.family, 0) > now:
            return True
        cutoff, expires = self._cutoffs.get(check.subject, (0.0, 0.0))
        return expires > now and check.issued_at < cutoff

    async def create_family(self, session: Session, token_digest: str, ttl: float) -> None:
        now = self._clock()
        self._sweep(now)
        self._families[session.family] = _Family(session, token_digest, "", 0.0, now + ttl)
        self._by_user.setdefault(session.subject, set()).add(session.family)

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
        entry = self._live_family(family, now)
        if entry is None:
            return Rotation("missing")
        if presented == entry.current:
            entry.previous, entry.current, entry.rotated_at = presented, successor, now
            entry.expires = now + ttl
            entry.session = replace(
                entry.session, last_refresh=now, client=client, user_agent=user_agent
            )
            return Rotation("rotated", now)
        if presented == entry.previous and now - entry.rotated_at <= grace:
            return Rotation("grace", entry.rotated_at)
        self._kill(family, now + revoked_for)
        return Rotation("reuse")

    async def end_family(self, family: str, subject: str, jti: str | None, deny_for: float) -> None:
        until = self._clock() + deny_for
        self._kill(family, until)
        if jti:
            self._marks["deny:" + jti] = until

    async def revoke_user(self, subject: str, now: float, keep_for: float) -> int:
        families = self._by_user.pop(subject, set())
        live = [f for f in families if self._live_family(f, now) is not None]
        for family in families:
            self._kill(family, now + keep_for)
        self._cutoffs[subject] = (now, math.inf)  # see Store.revoke_user: never expires
        return len(live)

    async def sessions(self, subject: str) -> list[Session]:
        now = self._clock()
        found = [self._live_family(f, now) for f in sorted(self._by_user.get(subject, ()))]
        return [f.session for f in found if f is not None]

    async def attempt(self, username: str, client: str, limits: Limits) -> float:
        # no await in here: check and count are one step for this event loop
        now = self._clock()
        keys = _failure_keys(username, client, limits)
        wait = 0.0
        for key, limit in keys:
            count, end = self._failures.get(key, (0, 0.0))
            if end > now and count >= limit:
                wait = max(wait, end - now)
        if wait > 0:
            return wait
        self._sweep(now)
        for key, _ in keys:
            count, end = self._failures.get(key, (0, 0.0))
            self._failures[key] = (count + 1, end) if end > now else (1, now + limits.window)
        return 0.0

    async def take_back(self, username: str, client: str, *, success: bool) -> None:
        if success:
            self._failures.pop(_pair_key(username, client), None)
        for key in (_pair_key(username, client), "user:" + username, "client:" + client):
            count, end = self._failures.get(key, (0, 0.0))
            if count > 0:
                self._failures[key] = (count - 1, end)

    async def put_login_state(self, key: str, value: str, ttl: float) -> None:
        now = self._clock()
        self._sweep(now)
        self._values["state:" + key] = (value, now + ttl)

    async def take_login_state(self, key: str) -> str | None:
        return self._take("state:" + key)

    async def bump(self, key: str, window: float) -> int:
        now = self._clock()
        count, end = self._failures.get("bump:" + key, (0, 0.0))
        count, end = (count + 1, end) if end > now else (1, now + window)
        self._failures["bump:" + key] = (count, end)
        return count

    async def mark_once(self, key: str, ttl: float) -> bool:
        now = self._clock()
        if self._marks.get("once:" + key, 0) > now:
            return False
        self._sweep(now)
        self._marks["once:" + key] = now + ttl
        return True

    async def put_provider_link(self, family: str, subject: str, value: str, ttl: float) -> None:
        self._values["link:" + family] = (value, self._clock() + ttl)

    async def provider_link(self, family: str, subject: str) -> str | None:
        value, expires = self._values.get("link:" + family, ("", 0.0))
        return value if expires > self._clock() else None

    async def drop_provider_link(self, family: str, subject: str) -> None:
        self._values.pop("link:" + family, None)

    async def index_provider_session(
        self, index: str, family: str, subject: str, ttl: float
    ) -> None:
        now = self._clock()
        members, expires = self._index.get(index, ({}, 0.0))
        members = members if expires > now else {}
        members[family] = subject
        self._index[index] = (members, now + ttl)

    async def provider_sessions(self, index: str) -> dict[str, str]:
        members, expires = self._index.get(index, ({}, 0.0))
        return dict(members) if expires > self._clock() else {}

    async def ping(self) -> None:
        return None

    def _take(self, key: str) -> str | None:
        value, expires = self._values.pop(key, ("", 0.0))
        return value if expires > self._clock() else None

    async def close(self) -> None:
        return None

    def _live_family(self, family: str, now: float) -> _Family | None:
        entry = self._families.get(family)
        if entry is not None and entry.expires <= now:
            self._kill(family, 0.0)
            return None
        return entry

    def _kill(self, family: str, dead_until: float) -> None:
        entry = self._families.pop(family, None)
        if entry is not None:
            members = self._by_user.get(entry.session.subject)
            if members is not None:
                members.discard(family)
                if not members:
                    del self._by_user[entry.session.subject]
        if dead_until:
            self._marks["dead:" + family] = dead_until

    def _sweep(self, now: float) -> None:
        if now - self._swept < _SWEEP_EVERY:
            return
        self._swept = now
        for family in [f for f, e in self._families.items() if e.expires <= now]:
            self._kill(family, 0.0)
        for key in [k for k, end in self._marks.items() if end <= now]:
            del self._marks[key]
        for sub in [s for s, (_, end) in self._cutoffs.items() if end <= now]:
            del self._cutoffs[sub]
        for key in [k for k, (_, end) in self._failures.items() if end <= now]:
            del self._failures[key]
        for key in [k for k, (_, end) in self._values.items() if end <= now]:
            del self._values[key]
        for key in [k for k, (_, end) in self._index.items() if end <= now]:
            del self._index[key]


def _pair_key(username: str, client: str) -> str:
    return f"pair:{username}\0{client}"


def _failure_keys(username: str, client: str, limits: Limits) -> list[tuple[str, int]]:
    """Failures counted three ways: the pair, the username alone, the client alone."""
    return [
        (_pair_key(username, client), limits.pair),
        ("user:" + username, limits.single),
        ("client:" + client, limits.single),
    ]
