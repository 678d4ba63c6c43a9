"""What sessions keep between requests, and the one interface both stores offer.

The store holds only what must be shared and revocable: refresh-token families
(as SHA-256 digests of token ids, never a token), the access-token denylist,
per-user cut-offs and login-failure counters. Everything but a revoked user's
cut-off carries a TTL, so a store left alone for `refresh_ttl` holds nothing
else. Each operation a request needs is
one call, so with Redis it is one round trip; the operations that must be
atomic across replicas (rotation, reuse detection, revocation, failure
counting) are single Lua scripts there.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal, Protocol


class StoreUnavailable(Exception):
    """The store did not answer in `store_timeout`. Requests that need it fail closed (503)."""


class StoreUnconfirmed(StoreUnavailable):
    """A logout or revocation is written on the primary but no replica confirmed it in
    `store_timeout` (Sentinel, Cluster): it would not survive a failover, so it is not
    acknowledged; a retry confirms it. memory:// and a single redis:// never raise it."""


@dataclass(frozen=True, slots=True)
class Session:
    """One login (a refresh-token family), as `gateway sessions` lists it."""

    family: str
    subject: str
    created: float
    last_refresh: float
    client: str
    user_agent: str


@dataclass(frozen=True, slots=True)
class Rotation:
    """What presenting a refresh token did.

    rotated: it was the current token; the successor is now current.
    grace: it was the previous token, within the grace window; the successor
        minted at `rotated_at` is handed out again, nothing is revoked.
    reuse: it was an older token, or the previous one after the grace window;
        the whole family is revoked.
    missing: no such family (logged out, revoked or expired).
    """

    outcome: Literal["rotated", "grace", "reuse", "missing"]
    rotated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class AccessCheck:
    """What the per-request revocation check needs from a verified access token."""

    jti: str
    subject: str
    family: str
    issued_at: float


@dataclass(frozen=True, slots=True)
class Limits:
    """Login throttling: failures allowed per username+client, and per client or user alone."""

    pair: int
    single: int
    window: float


class Store(Protocol):
    async def access_revoked(self, check: AccessCheck) -> bool:
        """Denylisted jti, revoked family, or issued before the user's cut-off. One round trip."""

    async def create_family(self, session: Session, token_digest: str, ttl: float) -> None: ...

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
        """Atomic: `presented` and `successor` are token digests; see Rotation."""

    async def end_family(self, family: str, subject: str, jti: str | None, deny_for: float) -> None:
        """Logout: the family dies and its access tokens (and `jti`) are refused for `deny_for`.
        Raises StoreUnconfirmed when it is written but not yet on a replica."""

    async def revoke_user(self, subject: str, now: float, keep_for: float) -> int:
        """Every family of the user dies (its marker kept `keep_for`); access tokens issued
        before `now` are refused for good: the cut-off never expires, since a token minted
        elsewhere may carry any `exp` (one small record per revoked user). Raises
        StoreUnconfirmed when it is written but not yet on a replica."""

    async def sessions(self, subject: str) -> list[Session]: ...

    async def attempt(self, username: str, client: str, limits: Limits) -> float:
        """A sign-in attempt, atomically: seconds to wait when throttled (nothing counted),
        else 0 and the attempt is counted as a failure in advance.

        Check and count in one step, so parallel guesses cannot all pass the check
        before any of them is counted; `take_back` takes the count back.
        """

    async def take_back(self, username: str, client: str, *, success: bool) -> None:
        """The attempt was no failure: it no longer counts against the username, the
        client or the pair; after a success the pair's earlier failures are forgiven too."""

    # -- OpenID Connect (gateway/oidc): opaque values, the policy lives there -----------

    async def put_login_state(self, key: str, value: str, ttl: float) -> None:
        """A sign-in in flight at a provider (state, nonce, PKCE verifier), for `ttl`."""

    async def take_login_state(self, key: str) -> str | None:
        """Atomic get-and-delete: a state is used once, whichever replica the callback hits."""

    async def bump(self, key: str, window: float) -> int:
        """Count one more under `key` in a fixed window (the first bump starts it, `window`
        long): the count so far. Bounds what unauthenticated requests may write."""

    async def mark_once(self, key: str, ttl: float) -> bool:
        """True the first time `key` is marked within `ttl` (a logout token's jti), else False."""

    async def put_provider_link(self, family: str, subject: str, value: str, ttl: float) -> None:
        """What a session signed in at a provider keeps of it (its refresh token, sid, sub)."""

    async def provider_link(self, family: str, subject: str) -> str | None: ...

    async def drop_provider_link(self, family: str, subject: str) -> None: ...

    async def index_provider_session(
        self, index: str, family: str, subject: str, ttl: float
    ) -> None:
        """`index` (a provider's sid or sub) -> this family; kept `ttl` after the last add."""

    async def provider_sessions(self, index: str) -> dict[str, str]:
        """The families (-> their subject) filed under `index`; some may have ended since."""

    async def ping(self) -> str | None:
        """Raises StoreUnavailable when the store does not answer. Returns a warning for
        /readyz's body when it answers but is degraded (a primary without a replica)."""

    async def close(self) -> None: ...


def digest(value: str) -> str:
    """SHA-256 of a token id: what the store keeps instead of the token."""
    return hashlib.sha256(value.encode()).hexdigest()
