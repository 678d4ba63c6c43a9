"""Sessions: login, refresh rotation with reuse detection, logout, revocation checks.

A login starts a refresh-token family. Each refresh token is single use: the
store keeps the digest of the current one and of the one before it. Presenting
the current token rotates it; presenting the previous one within
`refresh_reuse_grace` (the parallel requests of one page load) hands out the
same successor again, since successors are derived, not random; presenting
anything older, or the previous one later, means two parties hold the token,
so the whole family dies and a security event is logged.

Access tokens are checked against the store on every request (denylisted jti,
dead family, per-user cut-off): one round trip, after the verified-claims
cache, so revocation is instant and the signature check still cached.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs

from . import cookies, metrics
from .auth import Identity, cookie_value
from .config import Config
from .credentials import UsersFile
from .errors import TokenError
from .store import AccessCheck, Session, Store, StoreUnconfirmed, digest
from .tokens import REFRESH, RESERVED_CLAIMS, Issuer, Principal, Verifier, new_id, successor_id
from .view import Asking, RequestView

security = logging.getLogger("gateway.security")

Headers = list[tuple[str, str]]
_CHECK = "access-check"  # Principal.memo key
PROVIDER = "idp"  # the claim naming the OpenID provider a session was signed in at
# (family, subject, digest of the presented refresh token) -> the provider still vouches
# (True), no longer does (False), or vouches for these claims now
ProviderRefresh = Callable[[str, str, str], Awaitable[bool | Mapping[str, Any]]]


@dataclass(frozen=True, slots=True)
class Issued:
    """Tokens just minted: the identity they carry and the cookies that deliver them."""

    principal: Principal
    set_cookies: Headers


class Sessions:
    """Lives in a config snapshot; the store it uses lives as long as the process."""

    def __init__(self, config: Config, verifier: Verifier, store: Store) -> None:
        tokens = config.tokens
        self.store = store
        self._verifier = verifier
        self._cookies = config.cookies
        self._users: UsersFile | None = config.login.users
        self._grace = tokens.refresh_reuse_grace
        # access tokens of a dead family must stay refused as long as any can still verify
        self._deny_for = tokens.access_ttl + tokens.leeway
        # set by gateway.oidc when providers are configured: asked before each rotation of
        # a provider session; raises ProviderUnavailable (a StoreUnavailable: 503) when down
        self.provider_refresh: ProviderRefresh | None = None
        self.issuer = (
            Issuer(
                tokens.keys,
                issuer=tokens.issuer,
                audience=tokens.audience,
                access_ttl=tokens.access_ttl,
                refresh_ttl=tokens.refresh_ttl,
            )
            if tokens.keys.signing_key is not None
            else None
        )

    async def authenticate(self, view: RequestView, identity: Identity) -> tuple[Identity, Headers]:
        """Steps 1 and 2 of SPEC 4 after the signature check: revocation, then refresh.

        Returns the identity to decide with and the Set-Cookie headers the response
        must carry (new session cookies, or clearing ones when the refresh token died).
        Raises StoreUnavailable: the caller answers 503, never lets the request pass.
        """
        principal = identity.principal
        if principal is not None:
            if not await self.revoked(principal):
                return identity, []
            identity = Identity(presented=True, failure="revoked", bearer=identity.bearer)
        if identity.bearer or self.issuer is None:
            return identity, []
        token = cookie_value(view, self._cookies.refresh)
        if token is None:
            return identity, []
        issued = await self.refresh(token, view.client, _agent(view))
        if issued is None:
            return Identity(presented=True, failure="refresh refused"), cookies.clearing_cookies(
                self._cookies
            )
        return Identity(issued.principal, presented=True), issued.set_cookies

    async def revoked(self, principal: Principal) -> bool:
        check = principal.memo.get(_CHECK)
        if check is None:
            claims = principal.claims
            check = principal.memo[_CHECK] = AccessCheck(
                jti=str(claims.get("jti") or ""),
                subject=principal.subject,
                family=str(claims.get("fam") or ""),
                issued_at=float(claims.get("iat") or 0),
            )
        return await self.store.access_revoked(check)

    async def start(self, claims: Mapping[str, Any], client: str, user_agent: str) -> Issued:
        """A new login: a new family and its first tokens."""
        assert self.issuer is not None  # noqa: S101 - login is only routed with a signing key
        subject = str(claims["sub"])
        now = time.time()
        family, jti = new_id(), new_id()
        refresh = self.issuer.refresh(subject, family, jti, _user_claims(claims), now)
        issued = self._issue(subject, family, claims, refresh, now, now)  # minted and verified
        session = Session(family, subject, now, now, client, user_agent[:256])
        await self.store.create_family(session, digest(jti), self.issuer.refresh_ttl)
        return issued

    async def refresh(self, token: str, client: str, user_agent: str) -> Issued | None:
        """Rotate a refresh token; None when it does not lead to a session."""
        if self.issuer is None:
            return None
        try:
            old = self._verifier.verify(token, REFRESH)
        except TokenError:
            metrics.REFRESHES.labels("invalid").inc()
            return None
        family, jti = old.claims.get("fam"), old.claims.get("jti")
        if not isinstance(family, str) or not isinstance(jti, str):
            metrics.REFRESHES.labels("invalid").inc()
            return None
        subject = old.subject
        claims: Mapping[str, Any] = _user_claims(old.claims)
        if PROVIDER in old.claims:
            if await self.revoked(old):  # logged out or revoked: never worth asking the provider
                metrics.REFRESHES.labels("missing").inc()
                return None
            refreshed = self.provider_refresh is not None and await self.provider_refresh(
                family, subject, digest(jti)
            )
            if not refreshed:  # refused at the provider, or the provider left the config
                await self.store.end_family(family, subject, None, self._deny_for)
                security.warning(
                    "refresh refused: the provider no longer vouches for the user",
                    extra={"event": "refresh_provider_refused", "user": subject},
                )
                metrics.REFRESHES.labels("provider_refused").inc()
                return None
            if not isinstance(refreshed, bool):  # roles edits at the provider apply now
                claims = _user_claims(refreshed)
        elif self._users is not None:
            current = self._users.current_claims(subject)  # roles edits apply at the next refresh
            if current is None:
                await self.store.end_family(family, subject, None, self._deny_for)
                security.warning(
                    "refresh refused: user removed or disabled",
                    extra={"event": "refresh_user_gone", "user": subject},
                )
                metrics.REFRESHES.labels("user_gone").inc()
                return None
            claims = current
        now = time.time()
        successor = successor_id(jti)
        rotation = await self.store.rotate(
            family,
            subject,
            digest(jti),
            digest(successor),
            now=now,
            grace=self._grace,
            ttl=self.issuer.refresh_ttl,
            client=client,
            user_agent=user_agent,
            revoked_for=self._deny_for,
        )
        metrics.REFRESHES.labels(rotation.outcome).inc()
        if rotation.outcome == "reuse":
            metrics.REUSE.inc()
            security.warning(
                "refresh token reused after rotation: session revoked",
                extra={"event": "refresh_reuse", "user": subject, "client": client},
            )
            return None
        if rotation.outcome == "missing":
            return None
        security.info(
            "session refreshed",
            extra={"event": "refresh", "user": subject, "grace": rotation.outcome == "grace"},
        )
        refresh = self.issuer.refresh(subject, family, successor, claims, rotation.rotated_at)
        return self._issue(subject, family, claims, refresh, now, rotation.rotated_at)

    async def end(self, request: Asking) -> str | None:
        """Logout: every family the request's cookies name dies, the access jti is denylisted.

        Returns the user whose session ended, None when the cookies named no session.
        """
        found: dict[str, str] = {}
        jti = None
        for name, kind in ((self._cookies.access, "access"), (self._cookies.refresh, REFRESH)):
            token = cookie_value(request, name)
            if token is None:
                continue
            try:
                principal = self._verifier.verify(token, kind)
            except TokenError:
                continue
            family = principal.claims.get("fam")
            if isinstance(family, str):
                found[family] = principal.subject
            if kind == "access":
                jti = principal.claims.get("jti")
        unconfirmed = None
        for family, subject in found.items():
            try:
                await self.store.end_family(family, subject, jti, self._deny_for)
            except StoreUnconfirmed as exc:  # the others still end; the answer says "retry"
                unconfirmed = exc
            jti = None
        if unconfirmed is not None:
            raise unconfirmed
        return next(iter(found.values()), None)

    async def revoke_user(self, subject: str) -> int:
        return await self.store.revoke_user(subject, time.time(), self._deny_for)

    def _issue(
        self,
        subject: str,
        family: str,
        claims: Mapping[str, Any],
        refresh: str,
        now: float,
        refresh_issued: float,
    ) -> Issued:
        assert self.issuer is not None  # noqa: S101 - callers check
        access, payload = self.issuer.access(subject, family, _user_claims(claims), now)
        principal = self._verifier.remember(access, payload)  # the next request hits the cache
        refresh_left = refresh_issued + self.issuer.refresh_ttl - now
        set_cookies = cookies.session_cookies(
            self._cookies, access, self.issuer.access_ttl, refresh, refresh_left
        )
        return Issued(principal, set_cookies)


def _user_claims(claims: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in claims.items() if k not in RESERVED_CLAIMS}


def _agent(request: Asking) -> str:
    return request.headers.get(hdrs.USER_AGENT, "")[:256]
