"""Key rotation: a new signing key rolls in while tokens of the previous ones still verify.

Retiring a key by reload is in test_reload.py; here: what `kid` selects, what a
previous key accepts, and that a kid can never bring its own algorithm.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.config import load
from gateway.errors import ConfigError
from tests.conftest import (
    SAME_ORIGIN,
    GatewayFactory,
    config_text,
    mint,
    received,
    session_extra,
    write_config,
)

OLD_ENV = "GATEWAY_TEST_OLD_SECRET"


@pytest.fixture
def old_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    value = secrets.token_urlsafe(48)
    monkeypatch.setenv(OLD_ENV, value)
    return value


ROTATING = f"""
kid: new
previous_keys:
  - {{kid: old, secret_env: {OLD_ENV}}}
"""


async def test_tokens_signed_now_name_the_current_kid(
    make_gateway: GatewayFactory, tmp_path: Path, secret: str, old_secret: str
) -> None:
    client = await make_gateway(extra=session_extra(tmp_path), tokens=ROTATING)
    signin = await client.post(
        "/login",
        data={"username": "alice", "password": "wonderland"},
        headers={"Origin": SAME_ORIGIN},
        allow_redirects=False,
    )
    assert signin.status == 303
    issued = {c.key: c.value for c in signin.cookies.values()}
    for name in ("access_token", "refresh_token"):
        assert jwt.get_unverified_header(issued[name])["kid"] == "new"
        jwt.decode(issued[name], secret, algorithms=["HS256"], audience="upstream")


async def test_a_previous_key_still_verifies_with_or_without_its_kid(
    make_gateway: GatewayFactory, secret: str, old_secret: str
) -> None:
    client = await make_gateway(tokens=ROTATING)
    for headers in ({"kid": "old"}, None):
        token = mint(old_secret, headers=headers)
        response = await client.get("/private", headers={"Authorization": f"Bearer {token}"})
        assert response.status == 200, headers
        assert received(await response.json())["x-user-id"] == ["alice"]
    current = mint(secret, headers={"kid": "new"})
    assert (await client.get("/private", headers={"Authorization": f"Bearer {current}"})).ok


async def test_a_kid_selects_its_key_and_nothing_else(
    make_gateway: GatewayFactory, secret: str, old_secret: str
) -> None:
    client = await make_gateway(tokens=ROTATING)
    # signed with the old key but claiming the new kid: only the new key is tried
    mislabeled = mint(old_secret, headers={"kid": "new"})
    stranger = mint(secrets.token_urlsafe(48), headers={"kid": "old"})
    for token in (mislabeled, stranger):
        response = await client.get("/private", headers={"Authorization": f"Bearer {token}"})
        assert response.status == 401


async def test_without_previous_keys_an_old_token_is_refused(
    make_gateway: GatewayFactory, old_secret: str
) -> None:
    client = await make_gateway(tokens="kid: new")
    token = mint(old_secret, headers={"kid": "old"})
    response = await client.get("/private", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 401


async def test_a_previous_asymmetric_key_keeps_its_own_algorithm(
    make_gateway: GatewayFactory, tmp_path: Path, secret: str
) -> None:
    """Moving from ES256 to HS256: the ES256 public key must never become an HMAC secret."""
    private = ec.generate_private_key(ec.SECP256R1())
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "old.pub").write_bytes(public_pem)
    tokens = f"""
        kid: new
        previous_keys:
          - {{kid: es, algorithm: ES256, public_key_file: {tmp_path / "old.pub"}}}
    """
    client = await make_gateway(tokens=tokens)
    good = mint(private, algorithm="ES256", headers={"kid": "es"})
    response = await client.get("/private", headers={"Authorization": f"Bearer {good}"})
    assert response.status == 200
    # the classic confusion: HS256 "signed" with the public key's bytes, naming the ES kid
    claims = jwt.decode(good, options={"verify_signature": False})
    forged = _hs256(public_pem, claims, {"kid": "es"})
    response = await client.get("/private", headers={"Authorization": f"Bearer {forged}"})
    assert response.status == 401


def _hs256(key: bytes, claims: dict[str, object], extra: dict[str, str]) -> str:
    """By hand: PyJWT itself refuses a PEM key as an HMAC secret."""

    def part(value: dict[str, object]) -> str:
        raw = json.dumps(value, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing_input = part({"alg": "HS256", "typ": "JWT", **extra}) + "." + part(claims)
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        (
            f"kid: a\nprevious_keys:\n  - {{kid: a, secret_env: {OLD_ENV}}}",
            "tokens.previous_keys[0].kid: kid 'a' is already used by another key",
        ),
        (
            f"previous_keys:\n  - {{secret_env: {OLD_ENV}}}",
            "tokens.previous_keys[0].kid: required key is missing",
        ),
        (
            "previous_keys:\n  - {kid: x, public_key_file: k.pem}",
            "tokens.previous_keys[0].public_key_file: HS256 uses secret_env or secret_file",
        ),
        (
            "previous_keys:\n  - {kid: x, secret_env: GATEWAY_TEST_UNSET_VARIABLE}",
            "tokens.previous_keys[0].secret_env: environment variable"
            " GATEWAY_TEST_UNSET_VARIABLE is not set",
        ),
        (
            f"previous_keys:\n  - {{kid: x, secret_env: {OLD_ENV}, tpye: HS256}}",
            "tokens.previous_keys[0].tpye: unknown key",
        ),
    ],
)
def test_previous_key_mistakes_are_reported_with_their_line(
    tmp_path: Path, secret: str, old_secret: str, tokens: str, expected: str
) -> None:
    path = write_config(tmp_path, config_text("http://127.0.0.1:3000", tokens=tokens))
    with pytest.raises(ConfigError) as caught:
        load(path)
    rendered = [str(p) for p in caught.value.problems]
    assert any(expected in line for line in rendered), rendered
    assert all(line.startswith(f"{path}:") for line in rendered)
