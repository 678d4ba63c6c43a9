"""tokens: how tokens are signed and verified, and the keys of a rotation.

The keys themselves are read by keys.py (environment, secret files, PEM);
this module says which keys go together and names the YAML key at fault.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .. import keys
from ..keys import Algorithm, KeySet, VerificationKey
from ..tokens import Verifier
from ..yamlsource import Section
from .declare import build, key, read

_HMAC = ("secret_env", "secret_file")
_ASYMMETRIC = ("private_key_file", "public_key_files")


@dataclass(frozen=True, slots=True, kw_only=True)
class PreviousKey:
    """A key that only verifies tokens signed before a rotation (not for signing)."""

    kid: str = field(
        metadata=key(
            "The kid in the header of the tokens this key signed.",
            required="the key id in those tokens' header",
        )
    )
    algorithm: Algorithm | None = field(
        default=None, metadata=key("This key's algorithm (default: tokens.algorithm).")
    )
    secret_env: str | None = field(
        default=None, metadata=key("HS*: environment variable holding the old secret.")
    )
    secret_file: str | None = field(default=None, metadata=key("HS*: file holding the old secret."))
    public_key_file: str | None = field(
        default=None, metadata=key("RS256/ES256/EdDSA: PEM public key of the old key pair.")
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenKeys:
    """Where the keys of `tokens` come from (names and files, never the keys)."""

    algorithm: Algorithm = field(
        default="HS256", metadata=key("The one algorithm accepted (case matters).")
    )
    secret_env: str | None = field(
        default=None,
        metadata=key(
            "HS*: environment variable holding the secret (32/48/64+ bytes for HS256/384/512)."
        ),
    )
    secret_file: str | None = field(
        default=None,
        metadata=key("HS*: file holding the secret (relative: to the config's directory)."),
    )
    private_key_file: str | None = field(
        default=None,
        metadata=key("RS256/ES256/EdDSA: unencrypted PEM private key; needed to sign in."),
    )
    public_key_files: tuple[str, ...] = field(
        default=(), metadata=key("RS256/ES256/EdDSA: PEM public keys that also verify.")
    )
    kid: str | None = field(
        default=None, metadata=key("Key id written in the header of tokens signed from now on.")
    )
    previous_keys: tuple[PreviousKey, ...] = field(
        default=(),
        metadata=key(
            "Keys still accepted for verification during a rotation; remove one (and reload) to"
            " retire it."
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class TokensConfig:
    MORE_KEYS: ClassVar[tuple[type, ...]] = (TokenKeys,)

    keys: KeySet
    issuer: str = field(
        default="gateway", metadata=key("The iss claim; tokens must carry exactly this.")
    )
    audience: str = field(
        default="upstream", metadata=key("The aud claim; tokens must carry (or list) this.")
    )
    access_ttl: float = field(
        default=15 * 60, metadata=key("Lifetime of an access token and its cookie.", minimum=1)
    )
    refresh_ttl: float = field(
        default=14 * 86400,
        metadata=key(
            "Idle lifetime of a sign-in, renewed at each refresh; longer than access_ttl.",
            minimum=1,
        ),
    )
    leeway: float = field(default=30, metadata=key("Clock-skew allowance for exp, nbf and iat."))
    refresh_reuse_grace: float = field(
        default=10,
        metadata=key("How long the refresh token just replaced still works (parallel requests)."),
    )

    def verifier(self) -> Verifier:
        return Verifier(self.keys, issuer=self.issuer, audience=self.audience, leeway=self.leeway)


def read_tokens(sec: Section, base: Path) -> TokensConfig | None:
    items = sec.sections("previous_keys")
    previous = [build(item, PreviousKey) for item in items]
    source = build(sec, TokenKeys, previous_keys=tuple(previous))
    key_set = _key_set(sec, base, source, items)
    values = read(sec, TokensConfig)
    if values["refresh_ttl"] <= values["access_ttl"]:
        sec.error(
            "refresh_ttl" if sec.has("refresh_ttl") else "access_ttl",
            "refresh_ttl must be longer than access_ttl",
        )
    empty = KeySet(algorithm="HS256", signing_key=None, verification_keys=())
    result = TokensConfig(keys=key_set or empty, **values)
    sec.finish()
    return result if key_set else None


def _key_set(sec: Section, base: Path, source: TokenKeys, items: list[Section]) -> KeySet | None:
    current = _current_keys(sec, base, source)
    previous = _previous_keys(items, base, source)
    if current is None or previous is None:
        return None
    signing, verifiers = current
    kid, alg = source.kid, source.algorithm
    own = [VerificationKey(k, alg, kid if i == 0 and signing else None)
           for i, k in enumerate(verifiers)]  # fmt: skip
    return KeySet(algorithm=alg, signing_key=signing, verification_keys=(*own, *previous), kid=kid)


def _previous_keys(
    items: list[Section], base: Path, source: TokenKeys
) -> list[VerificationKey] | None:
    """Keys that only verify, while tokens signed with them are still out there."""
    result: list[VerificationKey] = []
    seen = {source.kid}
    ok = True
    for item, declared in zip(items, source.previous_keys, strict=True):
        kid = declared.kid
        if kid and kid in seen:
            item.error("kid", f"kid {kid!r} is already used by another key")
        seen.add(kid)
        alg = declared.algorithm or source.algorithm
        loaded = _one_key(item, base, alg, declared)
        item.finish()
        if loaded is None or not kid:
            ok = False
            continue
        result.append(VerificationKey(loaded, alg, kid))
    return result if ok else None


def _one_key(sec: Section, base: Path, algorithm: str, declared: PreviousKey) -> Any:
    """A previous key: an HMAC secret, or the public half of an asymmetric one."""
    allowed = _HMAC if algorithm.startswith("HS") else ("public_key_file",)
    for name in (*_HMAC, "public_key_file"):
        if getattr(declared, name) and name not in allowed:
            sec.error(name, f"{algorithm} uses {' or '.join(allowed)}, not {name}")
    given = [n for n in allowed if sec.has(n)]
    if len(given) != 1:
        sec.error(allowed[0], f"{algorithm} needs exactly one of {' or '.join(allowed)}")
        return None
    name = given[0]
    value = getattr(declared, name) or ""
    try:
        if name == "secret_env":
            return keys.secret_from_env(value, algorithm)
        if name == "secret_file":
            return keys.secret_from_file(sec.problems.uses(base / value), algorithm)
        return keys.public_key(sec.problems.uses(base / value), algorithm)
    except keys.KeyProblem as exc:
        sec.error(name, str(exc))
        return None


def _current_keys(sec: Section, base: Path, source: TokenKeys) -> tuple[Any, list[Any]] | None:
    """The signing key (None: verify only) and the keys that verify with it."""
    algorithm = source.algorithm
    given = [n for n in (*_HMAC, *_ASYMMETRIC) if sec.has(n)]
    if algorithm.startswith("HS"):
        for n in given:
            if n not in _HMAC:
                sec.error(n, f"{algorithm} uses secret_env or secret_file, not {n}")
        if len([n for n in given if n in _HMAC]) != 1:
            sec.error("secret_env", f"{algorithm} needs exactly one of secret_env or secret_file")
            return None
        try:
            secret = (
                keys.secret_from_env(source.secret_env, algorithm)
                if source.secret_env
                else keys.secret_from_file(
                    sec.problems.uses(base / str(source.secret_file)), algorithm
                )
            )
        except keys.KeyProblem as exc:
            sec.error("secret_env" if source.secret_env else "secret_file", str(exc))
            return None
        return secret, [secret]
    for n in _HMAC:
        if n in given:
            sec.error(n, f"{algorithm} uses private_key_file and/or public_key_files, not {n}")
    if source.private_key_file is None and not source.public_key_files:
        sec.error("private_key_file", f"{algorithm} needs private_key_file or public_key_files")
        return None
    ok = True
    signing: Any = None
    verifiers: list[Any] = []
    if source.private_key_file:
        try:
            signing = keys.private_key(sec.problems.uses(base / source.private_key_file), algorithm)
            verifiers.append(signing.public_key())
        except keys.KeyProblem as exc:
            sec.error("private_key_file", str(exc))
            ok = False
    for item in source.public_key_files:
        try:
            verifiers.append(keys.public_key(sec.problems.uses(base / item), algorithm))
        except keys.KeyProblem as exc:
            sec.error("public_key_files", str(exc))
            ok = False
    return (signing, verifiers) if ok else None
