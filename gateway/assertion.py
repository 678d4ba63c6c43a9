"""The identity assertion: a short-lived JWT that lets the upstream verify, not trust.

Identity headers are only as good as the network: anything that can reach the
upstream around the gateway can set them. The assertion is signed with an
asymmetric key whose public half is served as JWKS on the admin listener, so
the upstream can check it with the public key alone, and it is bound to the
request's method and path, so one captured from `GET /profile` cannot be
replayed against `POST /admin/users`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from .config import AssertionConfig
from .tokens import RESERVED_CLAIMS, Principal, new_id

ASSERTION = "assertion"  # the typ claim: never mistaken for an access or refresh token


class Asserter:
    """Signs assertions for one config snapshot; a reload with a new key replaces it."""

    def __init__(self, config: AssertionConfig, *, issuer: str, audience: str) -> None:
        self.header = config.header
        self._key = config.private_key
        self._algorithm = config.algorithm
        self._ttl = config.ttl
        self._issuer = issuer
        self._audience = audience
        current = _jwk(config.private_key.public_key(), config.algorithm)
        self._headers = {"kid": current["kid"], "typ": "JWT"}
        previous = [_jwk(k, _algorithm_of(k)) for k in config.previous_public_keys]
        self.jwks: dict[str, Any] = {"keys": [current, *previous]}

    def sign(self, principal: Principal, method: str, path: str, now: float) -> str:
        payload = {k: v for k, v in principal.claims.items() if k not in RESERVED_CLAIMS}
        payload.update(
            iss=self._issuer,
            aud=self._audience,
            sub=principal.subject,
            iat=int(now),
            exp=int(now + self._ttl),
            jti=new_id(),
            typ=ASSERTION,
            method=method,
            path=path,
        )
        return jwt.encode(payload, self._key, algorithm=self._algorithm, headers=self._headers)


def _algorithm_of(public_key: Any) -> str:
    return "EdDSA" if isinstance(public_key, ed25519.Ed25519PublicKey) else "ES256"


def _jwk(public_key: Any, algorithm: str) -> dict[str, Any]:
    """The public key as a JWK, its kid the RFC 7638 thumbprint (stable, derived, no registry)."""
    codec = OKPAlgorithm if algorithm == "EdDSA" else ECAlgorithm
    jwk: dict[str, Any] = codec.to_jwk(public_key, as_dict=True)
    members = ("crv", "kty", "x") if jwk["kty"] == "OKP" else ("crv", "kty", "x", "y")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    thumbprint = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return {**{m: jwk[m] for m in members}, "kid": thumbprint, "use": "sig", "alg": algorithm}
