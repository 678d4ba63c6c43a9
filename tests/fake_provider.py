"""A small, hostile-capable OpenID provider for the tests: a real aiohttp server on loopback.

It speaks enough of OpenID Connect for the gateway's side (discovery, JWKS,
authorize with auto-approval, token with PKCE and client authentication
checked, refresh, userinfo, end_session) and lets a test make it misbehave:
sign with another key or algorithm, send other claims, go down, be slow,
answer garbage, refuse refreshes. Keys come from `cryptography`, tokens from
PyJWT; nothing here is hand-made crypto.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def jwk_of(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    nonce: str
    challenge: str
    method: str


@dataclass
class FakeProvider:
    client_id: str = "gateway"
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    issuer: str = ""  # set when started
    key: rsa.RSAPrivateKey = field(default_factory=rsa_key)
    kid: str = "k1"
    published: list[dict[str, Any]] = field(default_factory=list)  # the JWKS' keys
    algorithms: list[str] = field(default_factory=lambda: ["RS256"])
    user: dict[str, Any] = field(
        default_factory=lambda: {
            "sub": "idp-user-1",
            "email": "carol@example.com",
            "email_verified": True,
            "name": "Carol",
            "groups": ["staff", "ops"],
        }
    )
    sid: str = "sid-1"
    userinfo: dict[str, Any] | None = None
    mode: str = "ok"  # ok, down (500), slow, garbage, html
    slow_seconds: float = 10.0
    disabled: bool = False  # refresh answers invalid_grant
    with_refresh_token: bool = True
    # a test's hook: (claims, header) -> the id_token string the token endpoint sends
    mint_id_token: Callable[[dict[str, Any], dict[str, Any]], str] | None = None
    grants: dict[str, Grant] = field(default_factory=dict)
    refresh_tokens: set[str] = field(default_factory=set)
    calls: dict[str, int] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    drop_reused: bool = False  # the token endpoint closes a reused connection, unanswered, once
    _connections: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not self.published:
            self.published = [jwk_of(self.key, self.kid)]

    # -- what a test uses ------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._note_connection])
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/token", self._token)
        app.router.add_get("/userinfo", self._userinfo)
        return app

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "end_session_endpoint": f"{self.issuer}/end-session",
            "id_token_signing_alg_values_supported": self.algorithms,
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "none"],
            "backchannel_logout_supported": True,
            "backchannel_logout_session_supported": True,
        }

    def claims(self, nonce: str | None = None, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            **self.user,
            "iss": self.issuer,
            "aud": self.client_id,
            "iat": now,
            "exp": now + 300,
            "sid": self.sid,
        }
        if nonce is not None:
            claims["nonce"] = nonce
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def sign(
        self,
        claims: dict[str, Any],
        *,
        key: Any = None,
        algorithm: str = "RS256",
        kid: str | None = "",
        headers: dict[str, Any] | None = None,
    ) -> str:
        header = dict(headers or {})
        if kid is not None:
            header["kid"] = kid or self.kid
        signing = self.key if key is None else key
        return jwt.encode(claims, signing, algorithm=algorithm, headers=header)

    def logout_token(self, **overrides: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.client_id,
            "iat": now,
            "exp": now + 120,
            "jti": uuid.uuid4().hex,
            "sub": self.user["sub"],
            "sid": self.sid,
            "events": {LOGOUT_EVENT: {}},
        }
        claims.update(overrides)
        return self.sign({k: v for k, v in claims.items() if v is not None})

    def rotate_key(self, kid: str) -> None:
        """A new signing key; the old one stays published (as providers overlap them)."""
        self.key, self.kid = rsa_key(), kid
        self.published = [*self.published, jwk_of(self.key, kid)]

    # -- the endpoints ---------------------------------------------------------------

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    async def _misbehave(self) -> web.Response | None:
        if self.mode == "down":
            return web.Response(status=500, text="down")
        if self.mode == "slow":
            await asyncio.sleep(self.slow_seconds)
        if self.mode == "garbage":
            return web.Response(status=200, body=b"\x00{not json", content_type="application/json")
        if self.mode == "html":
            return web.Response(status=200, text="<html>login</html>", content_type="text/html")
        return None

    async def _discovery(self, request: web.Request) -> web.Response:
        self._count("discovery")
        return await self._misbehave() or web.json_response(self.discovery())

    async def _jwks(self, request: web.Request) -> web.Response:
        self._count("jwks")
        return await self._misbehave() or web.json_response({"keys": self.published})

    async def _authorize(self, request: web.Request) -> web.Response:
        """Auto-approves self.user, or answers `?error=` when the test asked (deny=1 in scope)."""
        self._count("authorize")
        q = request.query
        redirect = q["redirect_uri"]
        if q.get("client_id") != self.client_id or q.get("response_type") != "code":
            raise web.HTTPBadRequest(text="bad authorize request")
        if self.mode == "deny":
            query = urlencode({"error": "access_denied", "state": q["state"]})
            raise web.HTTPFound(f"{redirect}?{query}")
        code = secrets.token_urlsafe(24)
        self.grants[code] = Grant(
            q["client_id"], redirect, q["nonce"], q["code_challenge"], q["code_challenge_method"]
        )
        raise web.HTTPFound(f"{redirect}?{urlencode({'code': code, 'state': q['state']})}")

    def _client_ok(self, request: web.Request, form: dict[str, str]) -> bool:
        header = request.headers.get("Authorization", "")
        if not self.client_secret:  # a public client: PKCE alone, no secret may be sent
            return not header and "client_secret" not in form
        if header.startswith("Basic "):
            expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
            return secrets.compare_digest(header[6:], expected)
        return form.get("client_secret") == self.client_secret

    @web.middleware
    async def _note_connection(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        """What Node's keepAliveTimeout does now and then: the connection a client reuses
        is closed before any answer."""
        transport = request.transport
        reused = id(transport) in self._connections
        self._connections.add(id(transport))
        if reused and self.drop_reused and request.path == "/token" and transport is not None:
            self.drop_reused = False
            self._count("dropped")
            transport.abort()
            raise asyncio.CancelledError  # nothing more to send on a connection now gone
        response: web.StreamResponse = await handler(request)
        return response

    async def _token(self, request: web.Request) -> web.Response:
        self._count("token")
        bad = await self._misbehave()
        if bad is not None:
            return bad
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.token_requests.append(form)
        if not self._client_ok(request, form):
            return web.json_response({"error": "invalid_client"}, status=401)
        if form.get("grant_type") == "refresh_token":
            return self._refresh(form)
        grant = self.grants.pop(form.get("code", ""), None)
        if grant is None or grant.redirect_uri != form.get("redirect_uri"):
            return web.json_response({"error": "invalid_grant"}, status=400)
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        if grant.method != "S256" or challenge.rstrip(b"=").decode() != grant.challenge:
            return web.json_response({"error": "invalid_grant", "why": "pkce"}, status=400)
        claims = self.claims(nonce=grant.nonce)
        header = {"kid": self.kid}
        id_token = self.mint_id_token(claims, header) if self.mint_id_token else self.sign(claims)
        return web.json_response(self._tokens(id_token))

    def _tokens(self, id_token: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "access_token": secrets.token_urlsafe(24),
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": id_token,
        }
        if self.with_refresh_token:
            refresh = secrets.token_urlsafe(24)
            self.refresh_tokens.add(refresh)
            body["refresh_token"] = refresh
        return body

    def _refresh(self, form: dict[str, str]) -> web.Response:
        token = form.get("refresh_token", "")
        if self.disabled or token not in self.refresh_tokens:
            # a reused (rotated-away) token revokes everything, as real providers do
            self.refresh_tokens.clear()
            return web.json_response({"error": "invalid_grant"}, status=400)
        self.refresh_tokens.discard(token)  # rotated: each refresh token is single use
        claims = self.claims()
        id_token = (
            self.mint_id_token(claims, {"kid": self.kid})
            if self.mint_id_token
            else self.sign(claims)
        )
        return web.json_response(self._tokens(id_token))

    async def _userinfo(self, request: web.Request) -> web.Response:
        self._count("userinfo")
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            raise web.HTTPUnauthorized()
        return web.json_response(self.userinfo if self.userinfo is not None else self.user)
