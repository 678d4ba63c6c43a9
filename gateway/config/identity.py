"""identity_headers and identity_assertion: who the upstream is told the user is."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from .. import keys
from ..yamlsource import Section
from .cookies import TOKEN_CHARS
from .declare import HTTP_NAME, build, key, read

HEADER_RESERVED = frozenset(
    h.lower()
    for h in (
        "Host", "Cookie", "Set-Cookie", "Authorization", "Content-Length", "Content-Type",
        "Transfer-Encoding", "Connection", "Upgrade", "TE", "Trailer", "Keep-Alive",
        "Proxy-Authorization", "Proxy-Authenticate", "X-Forwarded-For", "X-Forwarded-Proto",
        "X-Forwarded-Host", "X-Request-Id", "Forwarded",
    )
)  # fmt: skip
DEFAULT_IDENTITY_HEADERS = (
    ("X-User-Id", "sub"),
    ("X-User-Email", "email"),
    ("X-User-Name", "name"),
    ("X-User-Roles", "roles"),
)
IDENTITY_HEADERS_SCHEMA = {
    "propertyNames": {"pattern": HTTP_NAME},
    "additionalProperties": {
        "type": "string",
        "minLength": 1,
        "description": "The claim to send (lists joined with ,).",
    },
}


@dataclass(frozen=True, slots=True, kw_only=True)
class AssertionKeys:
    """The key files of identity_assertion; keys.py reads them."""

    private_key_file: str = field(
        metadata=key(
            "PEM private key: EC P-256 (ES256) or Ed25519 (EdDSA).",
            required="a PEM file with a P-256 EC or Ed25519 private key",
        )
    )
    previous_public_key_files: tuple[str, ...] = field(
        default=(), metadata=key("Old public keys still published in the JWKS during a rotation.")
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class AssertionConfig:
    MORE_KEYS: ClassVar[tuple[type, ...]] = (AssertionKeys,)

    header: str = field(
        default="X-User-Assertion",
        metadata=key("Request header carrying the assertion.", pattern=HTTP_NAME),
    )
    private_key: Any  # loaded: an EC P-256 (ES256) or Ed25519 (EdDSA) private key
    algorithm: Literal["ES256", "EdDSA"]
    ttl: float = field(default=30, metadata=key("Lifetime of an assertion.", minimum=1))
    previous_public_keys: tuple[Any, ...] = field(default=())  # still in the JWKS meanwhile


def read_identity_headers(top: Section) -> tuple[tuple[str, str], ...]:
    if not top.has("identity_headers"):
        top.value_node("identity_headers")
        return DEFAULT_IDENTITY_HEADERS
    sec = top.section("identity_headers")
    result: list[tuple[str, str]] = []
    for header, _, value_node in sec.entries():
        claim = sec.plain(value_node)
        if header.lower() in {h.lower() for h, _ in result}:
            sec.error(header, "the same header twice (header names ignore case)")
        elif not TOKEN_CHARS.match(header):
            sec.error(header, "not a valid header name")
        elif header.lower() in HEADER_RESERVED:
            sec.error(header, "this header is managed by the gateway or the HTTP layer")
        elif not isinstance(claim, str) or not claim:
            sec.error(header, f"expected the name of a claim, like sub or email, got {claim!r}")
        else:
            result.append((header, claim))
    return tuple(result)


def read_assertion(top: Section, base: Path) -> AssertionConfig | None:
    if not top.has("identity_assertion"):
        top.value_node("identity_assertion")
        return None
    sec = top.section("identity_assertion")
    values = read(sec, AssertionConfig)
    if not TOKEN_CHARS.match(values["header"]) or values["header"].lower() in HEADER_RESERVED:
        sec.error("header", f"{values['header']!r} cannot be used as the assertion header")
    files = build(sec, AssertionKeys)
    previous = []
    for item in files.previous_public_key_files:
        try:
            previous.append(keys.assertion_key(sec.problems.uses(base / item), private=False)[0])
        except keys.KeyProblem as exc:
            sec.error("previous_public_key_files", str(exc))
    sec.finish()
    if not files.private_key_file:
        return None
    try:
        path = sec.problems.uses(base / files.private_key_file)
        private_key, algorithm = keys.assertion_key(path, private=True)
    except keys.KeyProblem as exc:
        sec.error("private_key_file", str(exc))
        return None
    return AssertionConfig(
        **values,
        private_key=private_key,
        algorithm=algorithm,
        previous_public_keys=tuple(previous),
    )
