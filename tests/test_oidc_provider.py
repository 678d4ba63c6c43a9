"""Sign-in with OpenID Connect (SPEC 7.4) against a real, certified OpenID Provider.

The provider is panva's `oidc-provider` (tests/oidc/provider.js, installed and started by
tests/oidc/support.py); the gateway is the real `gateway serve` process in front of the
echo upstream, which reports the identity headers it received. The flows are walked over
HTTP as a browser walks them (tests/oidc/support.py's Browser); tests/test_oidc_browser.py
walks one in Chromium.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.oidc.support import (
    ALICE,
    BOB,
    CLIENT_ID,
    CLIENT_SECRET,
    Browser,
    OpenIDProvider,
    running_provider,
)

pytestmark = pytest.mark.oidc


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[OpenIDProvider]:
    with running_provider(tmp_path) as started:
        yield started


# -- the harness itself: the provider's own flows, with a minimal relying party --------


class RelyingParty:
    """The least a client needs: a redirect URI, a back-channel logout URI, a post-logout
    page; it records what arrived there."""

    def __init__(self) -> None:
        self.callbacks: list[dict[str, str]] = []
        self.logout_tokens: list[str] = []
        self.app = web.Application()
        self.app.router.add_get("/cb", self._callback)
        self.app.router.add_post("/bcl", self._backchannel)
        self.app.router.add_get("/bye", self._bye)

    async def _callback(self, request: web.Request) -> web.Response:
        self.callbacks.append(dict(request.query))
        return web.Response(text="code received")

    async def _backchannel(self, request: web.Request) -> web.Response:
        self.logout_tokens.append(str((await request.post())["logout_token"]))
        return web.Response(status=200)

    async def _bye(self, request: web.Request) -> web.Response:
        return web.Response(text="signed out: " + request.query.get("state", ""))


@pytest.fixture
async def relying_party(aiohttp_server: Any) -> AsyncIterator[tuple[RelyingParty, str]]:
    party = RelyingParty()
    server: TestServer = await aiohttp_server(party.app)
    yield party, str(server.make_url("")).rstrip("/")


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


async def _token(
    http: aiohttp.ClientSession, endpoint: str, **form: str
) -> tuple[int, dict[str, Any]]:
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    async with http.post(
        endpoint, data=form, headers={"Authorization": "Basic " + basic}
    ) as response:
        return response.status, await response.json()


def _verify(token: str, provider: OpenIDProvider, jwks: dict[str, Any]) -> dict[str, Any]:
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=["RS256"], audience=CLIENT_ID, issuer=provider.issuer
    )
    return claims


async def test_the_provider_alone_signs_in_refreshes_and_logs_out(
    provider: OpenIDProvider, relying_party: tuple[RelyingParty, str]
) -> None:
    """The harness, without the gateway: authorization code + PKCE through the provider's
    sign-in page, the code exchanged, the ID token verified through its JWKS, a refresh
    that rotates, a disabled user refused with invalid_grant, a back-channel logout token
    sent when the provider ends a session, and RP-initiated logout back to the client."""
    party, base = relying_party
    meta = await provider.discovery()
    await provider.register_client(
        {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [base + "/cb"],
            "post_logout_redirect_uris": [base + "/bye"],
            "backchannel_logout_uri": base + "/bcl",
            "backchannel_logout_session_required": True,
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        }
    )
    async with aiohttp.ClientSession() as http, http.get(meta["jwks_uri"]) as answer:
        jwks = await answer.json()

    async def sign_in(browser: Browser, login: str) -> tuple[dict[str, Any], dict[str, Any]]:
        verifier, challenge = _pkce()
        state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        query = {
            "client_id": CLIENT_ID,
            "response_type": "code",
            "scope": "openid email profile groups",
            "redirect_uri": base + "/cb",
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        page = await browser.go(meta["authorization_endpoint"] + "?" + urlencode(query))
        assert page.status == 200 and page.form("login"), page.trail()
        page = await browser.submit(page, "login", username=login)
        assert page.status == 200 and page.text == "code received", page.trail()
        arrived = party.callbacks[-1]
        assert arrived["state"] == state and arrived["iss"] == provider.issuer
        async with aiohttp.ClientSession() as http:
            status, tokens = await _token(
                http,
                meta["token_endpoint"],
                grant_type="authorization_code",
                code=arrived["code"],
                redirect_uri=base + "/cb",
                code_verifier=verifier,
            )
        assert status == 200, tokens
        claims = _verify(tokens["id_token"], provider, jwks)
        assert claims["nonce"] == nonce
        return tokens, claims

    async with Browser.open() as browser:
        tokens, claims = await sign_in(browser, "alice")
    assert (claims["sub"], claims["email"], claims["name"]) == (ALICE.sub, ALICE.email, ALICE.name)
    assert claims["groups"] == list(ALICE.groups) and "sid" in claims
    assert tokens["refresh_token"]

    async with aiohttp.ClientSession() as http:
        status, refreshed = await _token(
            http,
            meta["token_endpoint"],
            grant_type="refresh_token",
            refresh_token=tokens["refresh_token"],
        )
        assert status == 200, refreshed
        assert refreshed["refresh_token"] != tokens["refresh_token"]  # rotated
        assert _verify(refreshed["id_token"], provider, jwks)["sub"] == ALICE.sub

        await provider.disable("alice")
        status, refused = await _token(
            http,
            meta["token_endpoint"],
            grant_type="refresh_token",
            refresh_token=refreshed["refresh_token"],
        )
        assert (status, refused["error"]) == (400, "invalid_grant")

    # the provider ends bob's session: a logout token reaches the back-channel URI
    async with Browser.open() as browser:
        _, bob = await sign_in(browser, "bob")
    ended = await provider.end_sessions("bob")
    assert ended["delivered"] == [{"client": CLIENT_ID, "sid": bob["sid"], "ok": True}]
    (logout_token,) = party.logout_tokens
    logout = _verify(logout_token, provider, jwks)
    assert logout["sub"] == BOB.sub and logout["sid"] == bob["sid"] and "nonce" not in logout
    assert logout["events"] == {"http://schemas.openid.net/event/backchannel-logout": {}}
    assert logout["jti"]

    # RP-initiated logout: the provider asks, ends the session, tells the back channel and
    # sends the browser to the registered post-logout URI with the state
    async with Browser.open() as browser:
        carol_tokens, carol = await sign_in(browser, "carol")
        query = {
            "id_token_hint": carol_tokens["id_token"],
            "post_logout_redirect_uri": base + "/bye",
            "state": "s1",
        }
        page = await browser.go(meta["end_session_endpoint"] + "?" + urlencode(query))
        page = await browser.submit(page, "op.logoutForm")
        assert (page.status, page.text) == (200, "signed out: s1"), page.trail()
    assert _verify(party.logout_tokens[-1], provider, jwks)["sid"] == carol["sid"]
    assert await provider.sessions("carol") == []
