"""identity_assertion: a signed, request-bound identity the upstream can verify.

The in-process tests check what the upstream receives; the process test fetches
the JWKS from the real admin listener and runs the documented example verifier
(docs/examples/verify_assertion.py) against a captured assertion.
"""

from __future__ import annotations

import json
import runpy
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gateway.config import load
from gateway.errors import ConfigError
from tests.conftest import (
    ROOT,
    GatewayFactory,
    GatewayProcess,
    config_text,
    mint,
    received,
    write_config,
)

EXAMPLE = ROOT / "docs" / "examples" / "verify_assertion.py"


def _write_key(path: Path, key: Any) -> Any:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return key.public_key()


def _assertion_extra(key_file: Path, more: str = "") -> str:
    return f"identity_assertion:\n  private_key_file: {key_file}\n  ttl: 30s\n{more}"


@pytest.mark.parametrize("kind", ["ES256", "EdDSA"])
async def test_upstream_gets_a_signed_assertion_bound_to_method_and_path(
    make_gateway: GatewayFactory, tmp_path: Path, secret: str, kind: str
) -> None:
    private = (
        ec.generate_private_key(ec.SECP256R1())
        if kind == "ES256"
        else (ed25519.Ed25519PrivateKey.generate())
    )
    public = _write_key(tmp_path / "assert.pem", private)
    client = await make_gateway(extra=_assertion_extra(tmp_path / "assert.pem"))
    token = mint(secret)
    response = await client.post(
        "/private/a%20b?x=1",
        headers={"Authorization": f"Bearer {token}", "X-User-Assertion": "forged"},
    )
    assert response.status == 200
    seen = received(await response.json())
    [assertion] = seen["x-user-assertion"]
    assert assertion != "forged"
    claims = jwt.decode(assertion, public, algorithms=[kind], audience="upstream", issuer="gateway")
    assert claims["typ"] == "assertion"
    assert (claims["sub"], claims["email"], claims["roles"]) == (
        "alice", "alice@example.com", ["admin"]
    )  # fmt: skip
    assert (claims["method"], claims["path"]) == ("POST", "/private/a%20b")
    assert 0 < claims["exp"] - time.time() <= 30
    # the assertion is not the access token in disguise
    assert (
        "fam" not in claims
        and claims["jti"]
        != jwt.decode(token, secret, algorithms=["HS256"], audience="upstream")["jti"]
    )


async def test_no_identity_no_assertion_and_a_forged_one_never_passes(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    _write_key(tmp_path / "assert.pem", ec.generate_private_key(ec.SECP256R1()))
    client = await make_gateway(extra=_assertion_extra(tmp_path / "assert.pem"))
    for path in ("/public/x", "/maybe/x"):
        response = await client.get(path, headers={"X-User-Assertion": "forged"})
        assert response.status == 200
        assert "x-user-assertion" not in received(await response.json())


def test_an_rsa_or_hmac_key_is_refused_with_a_reason(tmp_path: Path, secret: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    _write_key(tmp_path / "rsa.pem", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    (tmp_path / "secret.txt").write_text("not a key at all, just a shared secret")
    for name in ("rsa.pem", "secret.txt", "missing.pem"):
        extra = _assertion_extra(tmp_path / name)
        path = write_config(tmp_path, config_text("http://127.0.0.1:3000", extra))
        with pytest.raises(ConfigError) as caught:
            load(path)
        [problem] = caught.value.problems
        assert problem.key == "identity_assertion.private_key_file"
        assert str(tmp_path / name) in problem.message


async def test_jwks_on_the_admin_listener_verifies_with_the_documented_example(
    spawn_gateway: Any,
    upstream_url: str,
    tmp_path: Path,
    secret: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ten-line example in the docs, run as written against a real gateway process."""
    _write_key(tmp_path / "assert.pem", ec.generate_private_key(ec.SECP256R1()))
    previous = ed25519.Ed25519PrivateKey.generate().public_key()
    (tmp_path / "previous.pub").write_bytes(
        previous.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    extra = _assertion_extra(
        tmp_path / "assert.pem", f"  previous_public_key_files: [{tmp_path / 'previous.pub'}]\n"
    )
    gw: GatewayProcess = spawn_gateway(config_text(upstream_url, extra))
    with urllib.request.urlopen(gw.admin_url + "/.well-known/jwks.json", timeout=5) as answer:  # noqa: S310
        jwks = json.load(answer)
    assert [k["kty"] for k in jwks["keys"]] == ["EC", "OKP"]
    assert all(set(k) >= {"kid", "alg", "use", "x"} and "d" not in k for k in jwks["keys"])

    async with aiohttp.ClientSession() as http:  # the upstream answers on this test's loop
        answer = await http.get(
            gw.url + "/private/report?id=7", headers={"Authorization": f"Bearer {mint(secret)}"}
        )
        [assertion] = received(await answer.json())["x-user-assertion"]

    monkeypatch.setenv("GATEWAY_JWKS_URL", gw.admin_url + "/.well-known/jwks.json")
    example = runpy.run_path(str(EXAMPLE))
    claims = example["verified_user"]("GET", "/private/report", assertion)
    assert claims["sub"] == "alice"
    for method, path in (("POST", "/private/report"), ("GET", "/admin/users")):
        with pytest.raises(jwt.InvalidTokenError):
            example["verified_user"](method, path, assertion)


async def test_jwks_is_404_without_identity_assertion(
    spawn_gateway: Any, upstream: TestServer, upstream_url: str
) -> None:
    gw: GatewayProcess = spawn_gateway(config_text(upstream_url))
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(gw.admin_url + "/.well-known/jwks.json", timeout=5)  # noqa: S310
    caught.value.close()
    assert caught.value.code == 404
