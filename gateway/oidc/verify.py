"""ID tokens and logout tokens: verified with PyJWT, against the provider's keys only.

The algorithm is chosen by the gateway, never by the token: the token's `alg`
must be one the provider announces AND an asymmetric one, so `none` and an
HMAC "signed" with a public key (the classic RS256 -> HS256 confusion) cannot
pass. HS256/384/512 is accepted only where the provider announces it and the
client is confidential; then the key is the client secret, never a JWKS key.
The key is the JWKS entry with the token's `kid` (with no `kid`, the only key
of a fitting type); its type must fit the algorithm and its own `alg`, if it
names one, must be the token's. OpenID Connect Core 3.1.3.7 and Back-Channel
Logout 1.0 section 2.6 say what else is checked; `Refused.reason` is a short
label for the security log, never the token.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any

import jwt

from ..keys import Secret
from .discovery import ASYMMETRIC, HMAC, Metadata

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
MAX_AGE = 10 * 60  # an ID or logout token issued longer ago than this is refused
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


class Refused(Exception):
    """The token failed verification; `reason` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownKey(Refused):
    """No key in the cached JWKS fits: the caller refetches the JWKS (rate-limited) once."""


def allowed_algorithms(metadata: Metadata, secret: Secret | None) -> frozenset[str]:
    hmac = HMAC if secret is not None else frozenset()
    return metadata.algorithms & (ASYMMETRIC | hmac)


def verify(
    token: str,
    *,
    metadata: Metadata,
    keys: jwt.PyJWKSet,
    client_id: str,
    secret: Secret | None,
    leeway: float,
    logout: bool = False,
    nonce: str | None = None,
    refreshed: bool = False,
) -> dict[str, Any]:
    """The verified claims of an ID token (`nonce` given; none for one a refresh answered
    with, `refreshed`) or a logout token (`logout`)."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise Refused("malformed") from None
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in allowed_algorithms(metadata, secret):
        raise Refused(f"algorithm not allowed: {str(alg)[:20]}")
    key: Any = secret.reveal() if alg in HMAC and secret is not None else _key(keys, header, alg)
    required = ["iss", "aud", "iat"] + (["jti", "events"] if logout else ["exp", "sub"])
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=client_id,
            issuer=metadata.issuer,
            leeway=leeway,
            options={"require": required, "verify_iat": True},
        )
    except jwt.ExpiredSignatureError:
        raise Refused("expired") from None
    except jwt.InvalidAudienceError:
        raise Refused("wrong audience") from None
    except jwt.InvalidIssuerError:
        raise Refused("wrong issuer") from None
    except jwt.InvalidSignatureError:
        raise Refused("bad signature") from None
    except jwt.PyJWTError as exc:
        raise Refused(type(exc).__name__) from None
    _check_common(claims, client_id, leeway)
    if logout:
        _check_logout(claims)
    elif refreshed:
        pass
    elif nonce is None or not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
        raise Refused("nonce mismatch")
    return claims


def _key(keys: jwt.PyJWKSet, header: Mapping[str, Any], alg: str) -> Any:
    kind = _KEY_TYPES[alg[:2]]
    kid = header.get("kid")
    fitting = [k for k in keys if k.key_type == kind and k.algorithm_name in (alg, _default(k))]
    if kid is not None:
        fitting = [k for k in fitting if k.key_id == kid]
    elif len(fitting) > 1:
        raise Refused("no kid and several keys")
    if not fitting:
        raise UnknownKey("unknown kid")
    jwk = fitting[0]
    declared = jwk._jwk_data.get("alg")
    if declared is not None and declared != alg:
        raise Refused("key is for another algorithm")
    return jwk.key


def _default(jwk: jwt.PyJWK) -> str:
    """The algorithm PyJWK guessed for a key that names none (RS256 for every RSA key, so a
    PS256 token may use it too): accepted; a key that names its alg is held to it above."""
    return jwk.algorithm_name if jwk._jwk_data.get("alg") is None else ""


def _check_common(claims: Mapping[str, Any], client_id: str, leeway: float) -> None:
    now = time.time()
    iat = claims.get("iat")
    if not isinstance(iat, int | float) or iat > now + leeway or iat < now - MAX_AGE - leeway:
        raise Refused("iat out of range")
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    azp = claims.get("azp")
    if azp is not None and azp != client_id:
        raise Refused("foreign azp")
    if len(audiences) > 1 and azp is None:
        raise Refused("several audiences and no azp")
    sub = claims.get("sub")
    if sub is not None and (not isinstance(sub, str) or not sub):
        raise Refused("bad sub")


def _check_logout(claims: Mapping[str, Any]) -> None:
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(LOGOUT_EVENT), dict):
        raise Refused("no back-channel logout event")
    if "nonce" in claims:
        raise Refused("logout token with a nonce")
    sid = claims.get("sid")
    if sid is not None and (not isinstance(sid, str) or not sid):
        raise Refused("bad sid")
    if not claims.get("sub") and not sid:
        raise Refused("logout token without sub or sid")
    if not isinstance(claims.get("jti"), str) or not claims["jti"]:
        raise Refused("bad jti")
