"""JWT verification pinned to the configured algorithm -> Principal.

The algorithm list handed to PyJWT is always the single configured one, so
`alg: none` and HS256-signed-with-the-RSA-public-key are refused by
construction. Verified claims are cached by token string until the token
expires: the same cookie arrives on every request of a session and the
signature check is the most expensive step of the request path.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from .errors import TokenExpired, TokenInvalid
from .keys import KeySet, Secret

ACCESS = "access"
REFRESH = "refresh"
TYPE_CLAIM = "typ"
MAX_TOKEN_BYTES = 8192
_REQUIRED = ["exp", "iat", "sub", "iss", "aud", TYPE_CLAIM]


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified identity. `claims` is the token payload, already checked."""

    subject: str
    roles: frozenset[str]
    claims: Mapping[str, Any]
    expires_at: float
    # Values derived from the claims (the encoded identity headers), computed once per
    # verified token: a cached Principal serves every request of that session.
    memo: dict[object, Any] = field(default_factory=dict, compare=False, repr=False)


class Verifier:
    """Verifies tokens of one key set; lives in a config snapshot, so a reload replaces it."""

    def __init__(
        self,
        key_set: KeySet,
        *,
        issuer: str,
        audience: str,
        leeway: float,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys: list[tuple[Any, list[str], str | None]] = [
            (k.key.reveal() if isinstance(k.key, Secret) else k.key, [k.algorithm], k.kid)
            for k in key_set.verification_keys
        ]
        self._by_kid = {e[2]: [e] for e in self._keys if e[2] is not None}
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._clock = clock
        # insertion order is eviction order; popitem(last=False) is O(1) where a plain
        # dict's "delete the first key" slows down as deleted slots pile up at its front
        self._cache: OrderedDict[str, Principal] = OrderedDict()
        self._cache_size = cache_size

    def verify(self, token: str, expected_type: str = ACCESS) -> Principal:
        """Raises TokenExpired or TokenInvalid; never returns an unverified identity."""
        if expected_type != ACCESS:
            return self._decode(token, expected_type)  # refresh tokens are single use: no cache
        cached = self._cache.get(token)
        if cached is not None:
            if self._clock() < cached.expires_at + self._leeway:
                if cached.claims[TYPE_CLAIM] == expected_type:
                    return cached
                raise TokenInvalid("wrong token type")
            del self._cache[token]
            raise TokenExpired("token expired")
        return self._remember(token, self._decode(token, expected_type))

    def remember(self, token: str, claims: Mapping[str, Any]) -> Principal:
        """A token this process just signed: cached without decoding it again."""
        if len(token) > MAX_TOKEN_BYTES:  # would be refused when it comes back
            raise TokenInvalid("token too large")
        return self._remember(token, _principal(claims, ACCESS))

    def _remember(self, token: str, principal: Principal) -> Principal:
        if self._cache_size <= 0:
            return principal
        if len(self._cache) >= self._cache_size:
            self._cache.popitem(last=False)
        self._cache[token] = principal
        return principal

    def _decode(self, token: str, expected_type: str) -> Principal:
        if len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
            raise TokenInvalid("malformed token")
        candidates = self._keys
        if self._by_kid:
            # a kid naming one of our keys selects it; otherwise every key is tried (tokens
            # minted before kids were configured have none). Each key keeps its algorithm.
            try:
                kid = jwt.get_unverified_header(token).get("kid")
            except jwt.PyJWTError:
                raise TokenInvalid("malformed token") from None
            candidates = self._by_kid.get(kid, candidates) if isinstance(kid, str) else candidates
        last: Exception | None = None
        for key, algorithms, _ in candidates:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=algorithms,
                    audience=self._audience,
                    issuer=self._issuer,
                    leeway=self._leeway,
                    options={"require": _REQUIRED},
                )
                break
            except jwt.ExpiredSignatureError:
                raise TokenExpired("token expired") from None
            except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError) as exc:
                last = exc  # maybe signed with another of the configured keys
            except jwt.PyJWTError as exc:
                raise TokenInvalid(type(exc).__name__) from None
            except (ValueError, TypeError) as exc:
                raise TokenInvalid(type(exc).__name__) from None
        else:
            raise TokenInvalid(type(last).__name__ if last else "no verification key")
        return _principal(claims, expected_type)


def _principal(claims: Mapping[str, Any], expected_type: str) -> Principal:
    """The checks PyJWT does not make, on claims whose signature is already settled."""
    if claims.get(TYPE_CLAIM) != expected_type:
        raise TokenInvalid("wrong token type")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise TokenInvalid("sub must be a non-empty string")
    roles = claims.get("roles", [])
    if isinstance(roles, str):
        roles = [roles]
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise TokenInvalid("roles must be a list of strings")
    exp = claims["exp"]
    if not isinstance(exp, int | float):
        raise TokenInvalid("exp must be a number")
    return Principal(subject, frozenset(roles), claims, float(exp))


# Claims a credential backend may not set: the gateway owns what makes a token a token.
RESERVED_CLAIMS = frozenset(
    ("iss", "aud", "exp", "nbf", "iat", "jti", "sub", TYPE_CLAIM, "fam", "kid")
)


class Issuer:
    """Mints the gateway's own tokens; present only when the config has a signing key."""

    def __init__(
        self,
        key_set: KeySet,
        *,
        issuer: str,
        audience: str,
        access_ttl: float,
        refresh_ttl: float,
    ) -> None:
        key = key_set.signing_key
        self._key = key.reveal() if isinstance(key, Secret) else key
        self._algorithm = key_set.algorithm
        self._headers = {"kid": key_set.kid} if key_set.kid else None
        self._issuer = issuer
        self._audience = audience
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl

    def access(
        self, subject: str, family: str, claims: Mapping[str, Any], now: float
    ) -> tuple[str, dict[str, Any]]:
        """A fresh access token and its claims."""
        return self._sign(subject, family, new_id(), ACCESS, claims, now, self.access_ttl)

    def refresh(
        self, subject: str, family: str, jti: str, claims: Mapping[str, Any], issued_at: float
    ) -> str:
        """Deterministic in (jti, issued_at, claims): the grace window hands out the same one."""
        return self._sign(subject, family, jti, REFRESH, claims, issued_at, self.refresh_ttl)[0]

    def _sign(
        self,
        subject: str,
        family: str,
        jti: str,
        kind: str,
        claims: Mapping[str, Any],
        now: float,
        ttl: float,
    ) -> tuple[str, dict[str, Any]]:
        payload = {k: v for k, v in claims.items() if k not in RESERVED_CLAIMS}
        payload.update(
            sub=subject,
            iss=self._issuer,
            aud=self._audience,
            # sub-second iat: a login right after `gateway revoke` is not caught by the cut-off
            iat=round(now, 3),
            nbf=int(now),
            exp=int(now + ttl),
            jti=jti,
            fam=family,
            **{TYPE_CLAIM: kind},
        )
        token = jwt.encode(payload, self._key, algorithm=self._algorithm, headers=self._headers)
        return token, payload


def new_id() -> str:
    return secrets.token_urlsafe(16)


def successor_id(jti: str) -> str:
    """The id of the refresh token that replaces `jti`.

    Derived, not random, so every request racing one rotation computes the same
    successor and the store never needs to hold it; it is no secret (a token also
    needs the signature), and the store keeps only its digest.
    """
    raw = hashlib.sha256(b"gateway-refresh-successor\0" + jti.encode()).digest()
    return base64.urlsafe_b64encode(raw[:16]).rstrip(b"=").decode()
