"""Verification: only the configured algorithm and key, every claim checked, cached until exp."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.errors import TokenExpired, TokenInvalid
from gateway.keys import KeySet, Secret, VerificationKey
from gateway.tokens import Verifier
from tests.conftest import GatewayFactory, gateway_client, mint, received


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(claims: dict[str, Any]) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": "alice", "roles": ["admin"], "typ": "access", "iss": "gateway"}
    claims |= {"aud": "upstream", "iat": now, "nbf": now, "exp": now + 900}
    return claims | overrides


BAD_TOKENS: dict[str, Callable[[str], str]] = {
    "alg none": lambda s: _unsigned(_claims()),
    "alg none, empty signature dropped": lambda s: _unsigned(_claims())[:-1],
    "wrong key": lambda s: mint("x" * 48),
    "HS384 with the right secret (algorithm not configured)": lambda s: mint(s, algorithm="HS384"),
    "expired": lambda s: mint(s, exp=int(time.time()) - 120, iat=int(time.time()) - 1000),
    "nbf in the future": lambda s: mint(s, nbf=int(time.time()) + 600),
    "wrong issuer": lambda s: mint(s, iss="someone-else"),
    "wrong audience": lambda s: mint(s, aud="another-app"),
    "refresh-typed token": lambda s: mint(s, typ="refresh"),
    "no type claim": lambda s: mint(s, typ=None),
    "no exp": lambda s: mint(s, exp=None),
    "no sub": lambda s: mint(s, sub=None),
    "empty sub": lambda s: mint(s, sub=""),
    "roles not a list of strings": lambda s: mint(s, roles=[1, 2]),
    "garbage": lambda s: "garbage",
    "two segments": lambda s: "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0",
    "bad base64": lambda s: "e$$$.e%%%.s***",
    "non-JSON header": lambda s: f"{_b64(b'not json')}.{_b64(b'{}')}.{_b64(b'sig')}",
    "tampered payload": lambda s: (lambda t: t.split(".")[0] + "." + _b64(
        json.dumps(_claims(sub="mallory")).encode()) + "." + t.split(".")[2])(mint(s)),
    "oversized (9 KB)": lambda s: mint(s, padding="p" * 9000),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_TOKENS))
async def test_bad_tokens_are_refused_in_cookie_and_bearer(
    make_gateway: GatewayFactory, secret: str, case: str
) -> None:
    client = await make_gateway()
    bad = BAD_TOKENS[case](secret)
    for way in ("cookie", "bearer"):
        if way == "cookie":
            response = await client.get("/api/x", cookies={"access_token": bad})
        else:
            response = await client.get("/api/x", headers={"Authorization": f"Bearer {bad}"})
        assert response.status == 401, (case, way)
        assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
        client.session.cookie_jar.clear()
    # and with the admin route: an expired or bad token is never a 403
    response = await client.get("/admin/x", cookies={"access_token": bad})
    assert response.status == 401


async def test_hs256_token_signed_with_the_rsa_public_key_is_refused(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """Algorithm confusion: the public key is public, so it must never work as an HMAC secret."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "public.pem").write_bytes(public_pem)
    await make_gateway()  # writes config.yaml for HS256; switch it to RS256 with that key
    text = (tmp_path / "config.yaml").read_text()
    text = text.replace(
        "  algorithm: HS256\n  secret_env: GATEWAY_TEST_SECRET\n",
        "  algorithm: RS256\n  public_key_files: [public.pem]\n",
    )
    (tmp_path / "config.yaml").write_text(text)
    rs_client = await gateway_client(tmp_path / "config.yaml")
    try:
        good = jwt.encode(_claims(), key, algorithm="RS256")
        assert (await rs_client.get("/api/x", cookies={"access_token": good})).status == 200
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = _b64(json.dumps(_claims(sub="mallory")).encode())
        signature = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
        forged = f"{header}.{body}.{_b64(signature)}"
        response = await rs_client.get("/api/x", cookies={"access_token": forged})
        assert response.status == 401
    finally:
        await rs_client.close()


async def test_valid_token_passes_with_leeway(make_gateway: GatewayFactory, secret: str) -> None:
    client = await make_gateway()
    just_expired = mint(secret, exp=int(time.time()) - 5)  # within the 30 s leeway
    response = await client.get("/api/x", cookies={"access_token": just_expired})
    assert response.status == 200
    assert received(await response.json())["x-user-id"] == ["alice"]


def _verifier(clock: list[float]) -> tuple[Verifier, bytes]:
    secret = b"s" * 40
    keys = KeySet(
        algorithm="HS256",
        signing_key=Secret(secret),
        verification_keys=(VerificationKey(Secret(secret), "HS256"),),
    )
    verifier = Verifier(
        keys, issuer="gateway", audience="upstream", leeway=0, cache_size=2, clock=lambda: clock[0]
    )
    return verifier, secret


def test_cache_serves_until_exp_and_never_past_it() -> None:
    now = time.time()
    clock = [now]
    verifier, secret = _verifier(clock)
    token = mint(secret, exp=int(now) + 60, iat=int(now), nbf=int(now))
    first = verifier.verify(token)
    assert verifier.verify(token) is first  # served from the cache: same object
    clock[0] = now + 61
    with pytest.raises(TokenExpired):
        verifier.verify(token)


def test_cache_is_bounded_and_keeps_type_checks() -> None:
    clock = [time.time()]
    verifier, secret = _verifier(clock)
    tokens = [mint(secret, sub=f"user{i}") for i in range(5)]
    for t in tokens:
        verifier.verify(t)
    assert len(verifier._cache) == 2
    refresh = mint(secret, typ="refresh")
    assert verifier.verify(refresh, expected_type="refresh").subject == "alice"
    with pytest.raises(TokenInvalid):
        verifier.verify(refresh)  # cached as verified, still not an access token


def test_failures_are_not_cached() -> None:
    clock = [time.time()]
    verifier, secret = _verifier(clock)
    early = mint(secret, nbf=int(clock[0]) + 100)
    with pytest.raises(TokenInvalid):
        verifier.verify(early)
    assert verifier._cache == {}


async def test_64kb_cookie_gets_a_short_400_not_a_traceback(
    make_gateway: GatewayFactory, secret: str
) -> None:
    client = await make_gateway()
    huge = mint(secret, padding="p" * 48_000)
    assert len(huge) > 64_000
    response = await client.get("/api/x", cookies={"access_token": huge})
    assert response.status == 400
    body = await response.text()
    assert len(body) < 400
    assert "Traceback" not in body
    # the gateway is still fine afterwards
    assert (await client.get("/api/x", cookies={"access_token": mint(secret)})).status == 200


def test_cache_can_be_turned_off() -> None:
    secret = b"s" * 40
    keys = KeySet(
        algorithm="HS256",
        signing_key=Secret(secret),
        verification_keys=(VerificationKey(Secret(secret), "HS256"),),
    )
    verifier = Verifier(keys, issuer="gateway", audience="upstream", leeway=0, cache_size=0)
    token = mint(secret)
    assert verifier.verify(token).subject == "alice"
    assert verifier.verify(token).subject == "alice"
    assert verifier._cache == {}
