"""Signing and verification keys, loaded from the environment or files only.

A secret never has a literal place in YAML or a default in code; `Secret`
keeps it out of reprs, logs and tracebacks.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

Algorithm = Literal["HS256", "HS384", "HS512", "RS256", "ES256", "EdDSA"]
# RFC 7518 section 3.2: an HMAC key at least as long as the hash output
HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Secret:
    """Bytes that never show up in a repr or a log line."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A key that verifies, pinned to its one algorithm; `kid` names it in a JWT header."""

    key: Any  # Secret for HMAC, a public key object otherwise
    algorithm: Algorithm
    kid: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class KeySet:
    """What tokens.py needs: the signing key and every key that still verifies.

    During a key rotation `verification_keys` holds the previous keys too, each
    with its own algorithm: a kid selects a key, never an algorithm.
    """

    algorithm: Algorithm  # of the signing key
    signing_key: Any  # Secret bytes for HMAC, a private key object otherwise; None = verify only
    verification_keys: tuple[VerificationKey, ...]
    kid: str | None = None  # written in the header of every token signed


class KeyProblem(ValueError):
    """A key could not be loaded; the message is safe to show (never the key)."""


def plain_secret_from_env(name: str) -> Secret:
    """A secret of any length, such as the store's password."""
    if not _ENV_NAME.match(name):
        # most likely the secret itself pasted where its variable's name belongs: never
        # repeat it, since this message reaches stderr and, on a reload, the log
        raise KeyProblem(
            "expected the name of an environment variable (letters, digits and _), not a"
            " value; a secret never goes in the YAML"
        )
    value = os.environ.get(name)
    if value is None or not value.strip():
        raise KeyProblem(f"environment variable {name} is not set or empty")
    return Secret(value.strip().encode())


def plain_secret_from_file(path: Path) -> Secret:
    try:
        data = path.read_bytes().strip()
    except OSError as exc:
        raise KeyProblem(f"cannot read {path}: {exc.strerror}") from None
    if not data:
        raise KeyProblem(f"{path} is empty")
    return Secret(data)


def secret_from_env(name: str, algorithm: str) -> Secret:
    """An HMAC signing secret: as above, and long enough for the algorithm."""
    return _hmac_secret(plain_secret_from_env(name).reveal(), algorithm)


def secret_from_file(path: Path, algorithm: str) -> Secret:
    return _hmac_secret(plain_secret_from_file(path).reveal(), algorithm)


def _hmac_secret(value: bytes, algorithm: str) -> Secret:
    minimum = HMAC_MIN_BYTES[algorithm]
    if len(value) < minimum:
        raise KeyProblem(
            f"an {algorithm} secret must be at least {minimum} bytes, this one is {len(value)};"
            " generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(64))'"
        )
    return Secret(value)


def _key_kind_ok(algorithm: str, key: Any) -> bool:
    if algorithm == "RS256":
        return isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey) and key.key_size >= 2048
    if algorithm == "ES256":
        return isinstance(
            key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey
        ) and isinstance(key.curve, ec.SECP256R1)
    return isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey)


_KIND = {
    "RS256": "an RSA key of 2048 bits or more",
    "ES256": "a P-256 EC key",
    "EdDSA": "an Ed25519 key",
}


def private_key(path: Path, algorithm: str) -> Any:
    return _load_pem(path, algorithm, private=True)


def public_key(path: Path, algorithm: str) -> Any:
    return _load_pem(path, algorithm, private=False)


def _load_pem(path: Path, algorithm: str, *, private: bool) -> Any:
    key = _read_pem(path, private=private)
    if not _key_kind_ok(algorithm, key):
        raise KeyProblem(f"{path}: {algorithm} needs {_KIND[algorithm]}")
    return key


def _read_pem(path: Path, *, private: bool) -> Any:
    what = "an unencrypted PEM private key" if private else "a PEM public key"
    try:
        data = path.read_bytes()
        key: Any = (
            serialization.load_pem_private_key(data, password=None)
            if private
            else serialization.load_pem_public_key(data)
        )
    except OSError as exc:
        raise KeyProblem(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise KeyProblem(f"{path} is not {what}") from None
    return key


def assertion_key(path: Path, *, private: bool) -> tuple[Any, Literal["ES256", "EdDSA"]]:
    """An identity-assertion key and the algorithm its type implies (no HMAC, no RSA).

    Upstreams verify with the public half only, which is the point: a shared secret
    would let anyone who can verify also forge.
    """
    key = _read_pem(path, private=private)
    if _key_kind_ok("ES256", key):
        return key, "ES256"
    if _key_kind_ok("EdDSA", key):
        return key, "EdDSA"
    raise KeyProblem(f"{path}: identity_assertion needs a P-256 EC key (ES256) or Ed25519 (EdDSA)")
