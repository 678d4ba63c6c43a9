"""Sign-in with OpenID Connect (SPEC 7.4) against a real, certified OpenID Provider.

The provider is panva's `oidc-provider` (tests/oidc/provider.js, installed and started by
tests/oidc/support.py); the gateway is the real `gateway serve` process in front of the
echo upstream, which reports the identity headers it received. The flows are walked over
HTTP as a browser walks them (tests/oidc/support.py's Browser); tests/test_oidc_browser.py
walks one in Chromium.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import GatewayProcess, config_text, received, session_extra, write_config
from tests.helpers import cookie_header, run_cli, sign_in_over_http
from tests.oidc.support import (
    ALICE,
    BOB,
    CAROL,
    CLIENT_ID,
    CLIENT_SECRET,
    SECRET_ENV,
    Browser,
    Hop,
    OpenIDProvider,
    Page,
    free_port,
    running_provider,
    sign_in_at_provider,
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


# -- the gateway in front, signing in at the provider ------------------------------------

PROVIDER_ID = "corp"
ACCESS_TTL = 1.0  # seconds, with leeway 0: the tests wait past it to see a rotation
TOKENS = f"access_ttl: {ACCESS_TTL:g}s\nleeway: 0s\nrefresh_reuse_grace: 2s"
ACCESS, REFRESH = "access_token", "refresh_token"


PROVIDER_FIELDS = {
    "name": "Corp SSO",
    "client_id": CLIENT_ID,
    "client_secret_env": SECRET_ENV,
    "scopes": "[openid, email, profile, groups]",
    "claims": "{roles: groups}",
    "timeout": "2s",
}


Fields = dict[str, str | None]


def provider_yaml(issuer: str, fields: Fields | None = None) -> str:
    """The `login.providers` lines (inside `login:`) for the test provider; `fields` adds,
    replaces (one line of YAML in flow style) or drops (None) keys of the item."""
    item: Fields = {"id": PROVIDER_ID, "issuer": issuer, **PROVIDER_FIELDS, **(fields or {})}
    kept = [(k, v) for k, v in item.items() if v is not None]
    lines = [f"    {'-' if i == 0 else ' '} {k}: {v}" for i, (k, v) in enumerate(kept)]
    return "  providers:\n" + "\n".join(lines) + "\n"


def oidc_config(
    upstream_url: str,
    directory: Path,
    issuer: str,
    *,
    store: str = "memory://",
    users: bool = True,
    fields: Fields | None = None,
    tokens: str = TOKENS,
) -> str:
    """A gateway in front of the echo upstream, signing in at `issuer` (and with the users
    file of tests/conftest.py beside it when `users`)."""
    if users:
        login = session_extra(directory, store=store)
    else:
        login = f"store: {store}\nstore_timeout: 300ms\nlogin:\n"
    return config_text(upstream_url, login + provider_yaml(issuer, fields), tokens=tokens)


Start = Callable[..., Awaitable[GatewayProcess]]


@pytest.fixture
def start_gateway(
    spawn_gateway: Callable[..., GatewayProcess],
    upstream_url: str,
    tmp_path: Path,
    provider: OpenIDProvider,
) -> Start:
    """A `gateway serve` signing in at `provider`, registered there as its client."""

    async def start(
        *,
        store: str = "memory://",
        users: bool = True,
        fields: Fields | None = None,
        register: bool = True,
        tokens: str = TOKENS,
    ) -> GatewayProcess:
        text = oidc_config(
            upstream_url,
            tmp_path,
            provider.issuer,
            store=store,
            users=users,
            fields=fields,
            tokens=tokens,
        )
        gateway = spawn_gateway(text, env={SECRET_ENV: CLIENT_SECRET})
        if register:
            await provider.register([gateway.url])
        return gateway

    return start


def session_of(browser: Browser) -> dict[str, str]:
    """The gateway's two cookies in this browser."""
    return {k: v for k, v in browser.cookies().items() if k in (ACCESS, REFRESH)}


async def answer(url: str, cookies: dict[str, str], accept: str = "application/json") -> int:
    """The status of a GET with exactly these cookies (no jar, no redirects followed)."""
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        http.get(
            url, headers={"Accept": accept, **cookie_header(cookies)}, allow_redirects=False
        ) as response,
    ):
        return response.status


async def oidc_sign_in(
    browser: Browser, gateway: GatewayProcess, login: str, next_path: str = "/dashboard"
) -> Page:
    """Start at the gateway's provider path, sign in at the provider, follow it all back."""
    start = f"{gateway.url}/login/{PROVIDER_ID}?{urlencode({'next': next_path})}"
    return await sign_in_at_provider(browser, start, login)


async def refreshes(provider: OpenIDProvider) -> int:
    """How many refresh_token grants the provider has granted so far."""
    granted = await provider.events("grant.success")
    return sum(1 for e in granted if e["grant_type"] == "refresh_token")


def hop_to(page: Page, prefix: str) -> Hop:
    """The first hop of the walk whose URL starts with `prefix`."""
    found = [hop for hop in page.hops if hop.url.startswith(prefix)]
    assert found, f"no request to {prefix}:\n{page.trail()}"
    return found[0]


async def test_sign_in_at_the_provider_gives_the_upstream_its_identity(
    start_gateway: Start, provider: OpenIDProvider
) -> None:
    gateway = await start_gateway()
    async with Browser.open() as browser:
        page = await oidc_sign_in(browser, gateway, "alice", "/dashboard?tab=1")
        assert page.status == 200 and page.url == gateway.url + "/dashboard?tab=1", page.trail()

        # start: a 302 to the provider's authorization endpoint, code flow with PKCE S256
        start = page.hops[0]
        assert start.status == 302 and start.location is not None
        authorize = urlsplit(start.location)
        assert (
            f"{authorize.scheme}://{authorize.netloc}{authorize.path}"
            == ((await provider.discovery())["authorization_endpoint"])
        )
        asked = parse_qs(authorize.query)
        assert asked["response_type"] == ["code"] and asked["client_id"] == [CLIENT_ID]
        assert asked["redirect_uri"] == [f"{gateway.url}/login/{PROVIDER_ID}/callback"]
        assert asked["code_challenge_method"] == ["S256"] and asked["code_challenge"][0]
        assert len(asked["state"][0]) >= 16 and len(asked["nonce"][0]) >= 16
        assert set(asked["scope"][0].split()) >= {"openid", "email", "profile", "groups"}

        # callback: both cookies, HttpOnly, and a 303 to `next`
        callback = hop_to(page, f"{gateway.url}/login/{PROVIDER_ID}/callback")
        assert callback.status == 303 and callback.location == "/dashboard?tab=1", page.trail()
        set_names = {h.split("=", 1)[0] for h in callback.set_cookies}
        assert {ACCESS, REFRESH} <= set_names
        assert all("httponly" in h.lower() for h in callback.set_cookies if h.startswith(ACCESS))

        # the upstream got the identity, mapped from the provider's claims
        seen = received(page.json())
        assert seen["x-user-id"] == [ALICE.sub]
        assert seen["x-user-email"] == [ALICE.email]
        assert seen["x-user-name"] == [ALICE.name]
        assert seen["x-user-roles"] == [",".join(sorted(ALICE.groups))]  # sorted, deduplicated
        assert ACCESS not in seen.get("cookie", [""])[0]

        # and the session works like a password one
        assert await answer(gateway.url + "/api/me", session_of(browser)) == 200


async def test_a_replayed_or_foreign_callback_is_400_and_signs_no_one_in(
    start_gateway: Start,
) -> None:
    gateway = await start_gateway()
    async with Browser.open() as browser:
        page = await oidc_sign_in(browser, gateway, "alice")
        assert page.status == 200, page.trail()
        callback = hop_to(page, f"{gateway.url}/login/{PROVIDER_ID}/callback").url
        replayed = await browser.go(callback, follow=False)  # the same browser, state used
        assert replayed.status == 400, replayed.text[:500]
        assert not replayed.hops[-1].set_cookies or not any(
            h.startswith((ACCESS, REFRESH)) and "Max-Age=0" not in h
            for h in replayed.hops[-1].set_cookies
        )
    async with Browser.open() as stranger:  # another browser: not its state at all
        foreign = await stranger.go(callback, follow=False)
        assert foreign.status == 400
        assert session_of(stranger) == {}


async def test_who_may_sign_in_is_decided_by_email_domain_and_roles(
    start_gateway: Start,
) -> None:
    gateway = await start_gateway(
        fields={"allowed_email_domains": "[example.com]", "allowed_roles": "[staff]"}
    )
    for account in (BOB, CAROL):  # bob: other.org, no roles; carol: example.com, interns
        async with Browser.open() as browser:
            page = await oidc_sign_in(browser, gateway, account.login)
            assert page.status == 403, (account.login, page.trail())
            assert session_of(browser) == {}
    async with Browser.open() as browser:
        page = await oidc_sign_in(browser, gateway, "alice")
        assert page.status == 200 and received(page.json())["x-user-id"] == [ALICE.sub]


async def test_access_denied_at_the_provider_shows_the_login_page_with_a_message(
    start_gateway: Start,
) -> None:
    gateway = await start_gateway()
    async with Browser.open() as browser:
        page = await browser.go(f"{gateway.url}/login/{PROVIDER_ID}?next=/dashboard")
        page = await browser.submit(page, "abort")
        callback = hop_to(page, f"{gateway.url}/login/{PROVIDER_ID}/callback")
        assert parse_qs(urlsplit(callback.url).query)["error"] == ["access_denied"]
        assert page.status == 401 and page.url == callback.url, page.trail()
        assert 'name="password"' in page.text  # the login page, to pick another way
        assert "Corp SSO did not sign you in (access denied)" in page.text
        assert session_of(browser) == {}


async def test_each_rotation_refreshes_at_the_provider_and_a_disabled_user_loses_access(
    start_gateway: Start, provider: OpenIDProvider
) -> None:
    gateway = await start_gateway()
    async with Browser.open() as browser:
        assert (await oidc_sign_in(browser, gateway, "alice")).status == 200
        for _ in range(2):  # twice: the provider rotates its refresh token each time
            await asyncio.sleep(ACCESS_TTL + 0.2)
            before, asked = session_of(browser), await refreshes(provider)
            page = await browser.go(gateway.url + "/api/me")
            assert page.status == 200, page.text[:500]
            assert session_of(browser)[REFRESH] != before[REFRESH]  # the gateway rotated
            assert await refreshes(provider) == asked + 1  # and refreshed at the provider
        granted = await provider.events("grant.success")
        assert {e["sub"] for e in granted} == {ALICE.sub}

        await provider.disable("alice")
        cookies = session_of(browser)
        disabled_at = time.monotonic()
        # within one access_ttl (leeway 0) the access token runs out; the refresh that
        # follows is refused at the provider, and the gateway session ends with it
        seen = [await answer(gateway.url + "/api/me", cookies)]
        while seen[-1] == 200 and time.monotonic() - disabled_at < ACCESS_TTL + 5:
            await asyncio.sleep(0.1)
            seen.append(await answer(gateway.url + "/api/me", cookies))
        lost_after = time.monotonic() - disabled_at
        assert seen[-1] == 401 and set(seen) == {200, 401}, seen
        assert lost_after < ACCESS_TTL + 1.5, lost_after  # one access_ttl, and some slack
        assert await answer(gateway.url + "/api/me", {REFRESH: cookies[REFRESH]}) == 401
        errors = await provider.events("grant.error")
        assert [e["error"] for e in errors] == ["invalid_grant"]


async def test_back_channel_logout_from_the_provider_ends_the_session(
    start_gateway: Start, provider: OpenIDProvider
) -> None:
    gateway = await start_gateway()
    async with Browser.open() as alice, Browser.open() as bob:
        assert (await oidc_sign_in(alice, gateway, "alice")).status == 200
        assert (await oidc_sign_in(bob, gateway, "bob")).status == 200
        cookies = session_of(alice)
        assert await answer(gateway.url + "/api/me", cookies) == 200

        ended = await provider.end_sessions("alice")
        assert [d["ok"] for d in ended["delivered"]] == [True], ended
        # the access token has not expired, yet the session is over on the next request
        assert await answer(gateway.url + "/api/me", cookies) == 401
        assert await answer(gateway.url + "/api/me", {REFRESH: cookies[REFRESH]}) == 401
        assert await answer(gateway.url + "/api/me", session_of(bob)) == 200  # only hers


async def test_back_channel_logout_by_sub_alone_ends_every_session_of_that_user(
    start_gateway: Start, provider: OpenIDProvider
) -> None:
    """A logout token without `sid` names the user by the provider's `sub`, as the provider
    sent it: it matches although the gateway maps its own sub from the email."""
    gateway = await start_gateway(fields={"claims": "{sub: email, roles: groups}"}, register=False)
    await provider.register([gateway.url], session_required=False)
    async with Browser.open() as first, Browser.open() as second, Browser.open() as bob:
        for browser, login in ((first, "alice"), (second, "alice"), (bob, "bob")):
            page = await oidc_sign_in(browser, gateway, login)
            assert page.status == 200, page.trail()
        assert received(page.json())["x-user-id"] == [BOB.email]
        await provider.end_sessions("alice")
        for browser in (first, second):
            assert await answer(gateway.url + "/api/me", session_of(browser)) == 401
        assert await answer(gateway.url + "/api/me", session_of(bob)) == 200


async def test_logout_ends_the_session_at_the_provider_and_comes_back_to_the_login_page(
    start_gateway: Start, provider: OpenIDProvider
) -> None:
    gateway = await start_gateway()
    async with Browser.open() as browser:
        assert (await oidc_sign_in(browser, gateway, "alice")).status == 200
        cookies = session_of(browser)
        assert len(await provider.sessions("alice")) == 1

        page = await browser.go(gateway.url + "/logout", method="POST", follow=False)
        assert page.status == 303, page.text[:500]
        location = page.hops[-1].location or ""
        end_session = (await provider.discovery())["end_session_endpoint"]
        assert location.startswith(end_session + "?"), location
        asked = parse_qs(urlsplit(location).query)
        assert asked["post_logout_redirect_uri"] == [gateway.url + "/login"]
        assert asked["client_id"] == [CLIENT_ID]
        assert asked["id_token_hint"][0].count(".") == 2
        assert await answer(gateway.url + "/api/me", cookies) == 401  # over at the gateway

        page = await browser.go(location)  # the provider asks; the user confirms
        page = await browser.submit(page, "op.logoutForm")
        assert page.status == 200 and urlsplit(page.url).path == "/login", page.trail()
        assert "password" in page.text  # the gateway's login page
        assert await provider.sessions("alice") == []  # and over at the provider


async def test_readyz_names_a_provider_that_is_down_and_password_sign_in_still_works(
    spawn_gateway: Callable[..., GatewayProcess],
    upstream_url: str,
    tmp_path: Path,
) -> None:
    """The provider is down when the gateway starts: it serves, says so on /readyz, signs
    users in with passwords (a sign-in at the provider is 503), and the first sign-in
    after the provider came up finds it."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    gateway = spawn_gateway(
        oidc_config(upstream_url, tmp_path, issuer), env={SECRET_ENV: CLIENT_SECRET}
    )
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        async with http.get(gateway.admin_url + "/readyz") as ready:
            assert ready.status == 200
            assert (await ready.json())["providers_unreachable"] == [PROVIDER_ID]
        cookies = await sign_in_over_http(http, gateway)
        assert await answer(gateway.url + "/api/me", cookies) == 200
    async with Browser.open() as browser:
        page = await browser.go(f"{gateway.url}/login/{PROVIDER_ID}?next=/x", follow=False)
        assert page.status == 503, page.text[:500]
        assert session_of(browser) == {}

    with running_provider(tmp_path / "late", port) as provider:  # up now, on that port
        await provider.register([gateway.url])
        async with Browser.open() as browser:  # the next sign-in finds it
            page = await oidc_sign_in(browser, gateway, "alice", "/x")
            assert page.status == 200, page.trail()
            assert received(page.json())["x-user-id"] == [ALICE.sub]
        async with (
            aiohttp.ClientSession() as http,
            http.get(gateway.admin_url + "/readyz") as ready,
        ):
            assert ready.status == 200
            assert not (await ready.json()).get("providers_unreachable")


async def test_a_provider_slower_than_timeout_is_503_and_signs_no_one_in(
    start_gateway: Start, provider: OpenIDProvider
) -> None:
    gateway = await start_gateway(fields={"timeout": "1s"})
    async with Browser.open() as browser:
        page = await browser.go(f"{gateway.url}/login/{PROVIDER_ID}?next=/x")
        assert page.form("login"), page.trail()
        await provider.delay(1500)  # every later call, the code exchange too
        page = await browser.submit(page, "login", username="alice")
        callback = hop_to(page, f"{gateway.url}/login/{PROVIDER_ID}/callback")
        assert callback.status == 503, page.trail()
        assert session_of(browser) == {}


async def test_an_existing_session_outlives_a_slow_provider_and_refreshes_once_it_answers(
    start_gateway: Start, provider: OpenIDProvider
) -> None:
    """Provider down at rotation: the request is 503 and nothing changes (never a sign-out
    for an outage); with the provider back the same refresh cookie rotates."""
    access_ttl = 3.0  # long enough to use the access token once on a loaded machine
    gateway = await start_gateway(
        fields={"timeout": "1s"}, tokens=TOKENS.replace(f"{ACCESS_TTL:g}s", f"{access_ttl:g}s")
    )
    async with Browser.open() as browser:
        assert (await oidc_sign_in(browser, gateway, "alice")).status == 200
        cookies = session_of(browser)
        signed_in = time.monotonic()
        await provider.delay(1500)
        assert await answer(gateway.url + "/api/me", cookies) == 200  # access token valid
        assert time.monotonic() - signed_in < access_ttl  # (or the 200 proved nothing)
        await asyncio.sleep(access_ttl + 0.2 - (time.monotonic() - signed_in))
        assert await answer(gateway.url + "/api/me", cookies) == 503
        await provider.delay(0)
        # the provider answers again: the same cookie rotates (a request within the first
        # one's refresh window may still be 503 while it waits for it; never 401)
        seen: list[int] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not seen or seen[-1] != 200):
            seen.append(await answer(gateway.url + "/api/me", cookies))
            await asyncio.sleep(0.25)
        assert seen[-1] == 200 and set(seen) <= {503, 200}, seen


async def test_the_login_page_offers_the_provider_beside_the_password_form(
    start_gateway: Start,
) -> None:
    gateway = await start_gateway()
    async with Browser.open() as browser:
        page = await browser.go(gateway.url + "/login?next=/dashboard")
        assert page.status == 200 and 'name="password"' in page.text
        assert "Corp SSO" in page.text and f"/login/{PROVIDER_ID}" in page.text


async def test_with_only_a_provider_a_protected_page_leads_straight_to_it(
    start_gateway: Start,
) -> None:
    gateway = await start_gateway(users=False)
    async with Browser.open() as browser:
        page = await browser.go(gateway.url + "/dashboard")
        assert page.form("login"), page.trail()  # the provider's sign-in page, no stop between
        assert urlsplit(page.url).port != urlsplit(gateway.url).port
        page = await browser.submit(page, "login", username="alice")
        assert page.status == 200 and page.url == gateway.url + "/dashboard", page.trail()
        assert received(page.json())["x-user-id"] == [ALICE.sub]


async def test_two_replicas_on_redis_share_the_session_and_the_back_channel_logout(
    spawn_gateway: Callable[..., GatewayProcess],
    upstream_url: str,
    redis_url: str,
    tmp_path: Path,
    provider: OpenIDProvider,
    secret: str,
) -> None:
    """Signed in on A, used and rotated (refreshed at the provider) on B, listed by
    `gateway sessions` with its provider, and ended on B by a logout token delivered to A."""
    text = oidc_config(upstream_url, tmp_path, provider.issuer, store=redis_url)
    env = {SECRET_ENV: CLIENT_SECRET}
    a, b = spawn_gateway(text, env=env), spawn_gateway(text, env=env)
    await provider.register([a.url, b.url], backchannel=a.url)
    cli_config = write_config(tmp_path, text, "cli.yaml")
    async with Browser.open() as browser:  # one jar: cookies of 127.0.0.1 go to A and B
        assert (await oidc_sign_in(browser, a, "alice")).status == 200
        assert (await browser.go(b.url + "/api/me")).status == 200

        await asyncio.sleep(ACCESS_TTL + 0.2)
        before, asked = session_of(browser), await refreshes(provider)
        page = await browser.go(b.url + "/api/me")
        assert page.status == 200 and session_of(browser)[REFRESH] != before[REFRESH]
        assert await refreshes(provider) == asked + 1  # B refreshed with the link A stored

        listed = run_cli(
            "sessions", "--user", ALICE.sub, "--config", str(cli_config), secret=secret, env=env
        )
        assert listed.returncode == 0, listed.stderr
        assert f"via {PROVIDER_ID}" in listed.stdout, listed.stdout

        ended = await provider.end_sessions("alice")  # the back-channel URI is A's
        assert [d["ok"] for d in ended["delivered"]] == [True], ended
        assert await answer(b.url + "/api/me", session_of(browser)) == 401
        assert await answer(a.url + "/api/me", session_of(browser)) == 401


async def test_claims_the_id_token_lacks_come_from_userinfo(
    spawn_gateway: Callable[..., GatewayProcess], upstream_url: str, tmp_path: Path
) -> None:
    """oidc-provider's own default: when an access token is issued, the scope claims (email,
    name, groups) are at the userinfo endpoint only, the ID token has just `sub`."""
    with running_provider(tmp_path, conformIdTokenClaims=True) as provider:
        gateway = spawn_gateway(
            oidc_config(upstream_url, tmp_path, provider.issuer), env={SECRET_ENV: CLIENT_SECRET}
        )
        await provider.register([gateway.url])
        async with Browser.open() as browser:
            page = await oidc_sign_in(browser, gateway, "alice")
            assert page.status == 200, page.trail()
            seen = received(page.json())
            assert seen["x-user-id"] == [ALICE.sub]
            assert seen["x-user-email"] == [ALICE.email]
            assert seen["x-user-name"] == [ALICE.name]
            assert seen["x-user-roles"] == [",".join(sorted(ALICE.groups))]


async def test_a_public_client_signs_in_with_pkce_alone_and_refreshes(
    start_gateway: Start, provider: OpenIDProvider
) -> None:
    """No client secret anywhere: the provider knows the gateway as a public client
    (token_endpoint_auth_method none, PKCE required) and rotates its refresh token."""
    gateway = await start_gateway(fields={"client_secret_env": None}, register=False)
    assert "client_secret" not in gateway.config.read_text()
    await provider.register([gateway.url], auth_method="none")
    async with Browser.open() as browser:
        page = await oidc_sign_in(browser, gateway, "alice")
        assert page.status == 200 and received(page.json())["x-user-id"] == [ALICE.sub]
        await asyncio.sleep(ACCESS_TTL + 0.2)
        asked = await refreshes(provider)
        assert (await browser.go(gateway.url + "/api/me")).status == 200
    assert await refreshes(provider) == asked + 1
    assert await provider.events("grant.error") == []


async def test_parallel_requests_on_two_replicas_refresh_at_the_provider_once(
    spawn_gateway: Callable[..., GatewayProcess],
    upstream_url: str,
    redis_url: str,
    tmp_path: Path,
    provider: OpenIDProvider,
) -> None:
    """A page load's requests all present the same expired session to both replicas: the
    provider sees its refresh token once (it rotates refresh tokens, and a second use of
    one revokes the whole grant, which would sign the user out)."""
    text = oidc_config(upstream_url, tmp_path, provider.issuer, store=redis_url)
    env = {SECRET_ENV: CLIENT_SECRET}
    a, b = spawn_gateway(text, env=env), spawn_gateway(text, env=env)
    await provider.register([a.url, b.url])
    async with Browser.open() as browser:
        assert (await oidc_sign_in(browser, a, "alice")).status == 200
        expired = session_of(browser)
    await asyncio.sleep(ACCESS_TTL + 0.2)
    asked = await refreshes(provider)
    statuses = await asyncio.gather(
        *(answer(f"{(a, b)[i % 2].url}/api/{i}", expired) for i in range(12))
    )
    assert statuses == [200] * 12
    assert await refreshes(provider) == asked + 1
    assert await provider.events("grant.error") == []


async def test_a_provider_that_rotated_its_keys_is_followed(
    spawn_gateway: Callable[..., GatewayProcess], upstream_url: str, tmp_path: Path
) -> None:
    """The provider restarts with a new signing key (a new `kid`): the gateway's cached JWKS
    lacks it, so it fetches the keys again and the next sign-in succeeds."""
    port = free_port()
    gateway = None
    kids = []
    for generation in ("old", "new"):
        with running_provider(tmp_path / generation, port) as provider:
            async with (
                aiohttp.ClientSession() as http,
                http.get((await provider.discovery())["jwks_uri"]) as keys,
            ):
                kids.append([key["kid"] for key in (await keys.json())["keys"]])
            if gateway is None:
                gateway = spawn_gateway(
                    oidc_config(upstream_url, tmp_path, provider.issuer),
                    env={SECRET_ENV: CLIENT_SECRET},
                )
            await provider.register([gateway.url])
            async with Browser.open() as browser:
                page = await oidc_sign_in(browser, gateway, "alice")
                assert page.status == 200, (generation, page.trail())
                assert received(page.json())["x-user-id"] == [ALICE.sub]
    assert kids[0] != kids[1]


async def test_check_config_online_asks_the_provider(
    upstream_url: str, tmp_path: Path, provider: OpenIDProvider, secret: str
) -> None:
    env = {SECRET_ENV: CLIENT_SECRET}
    up = write_config(tmp_path, oidc_config(upstream_url, tmp_path, provider.issuer), "up.yaml")
    offline = run_cli("check-config", "--config", str(up), secret=secret, env=env)
    assert offline.returncode == 0, offline.stderr
    online = run_cli("check-config", "--online", "--config", str(up), secret=secret, env=env)
    assert online.returncode == 0, online.stderr
    assert PROVIDER_ID in online.stdout

    down = f"http://127.0.0.1:{free_port()}"
    gone = write_config(tmp_path, oidc_config(upstream_url, tmp_path, down), "down.yaml")
    assert run_cli("check-config", "--config", str(gone), secret=secret, env=env).returncode == 0
    failed = run_cli("check-config", "--online", "--config", str(gone), secret=secret, env=env)
    assert failed.returncode == 1 and PROVIDER_ID in failed.stderr, failed


async def test_the_gateway_log_holds_no_code_state_or_provider_token(
    start_gateway: Start, provider: OpenIDProvider
) -> None:
    """The whole flow with a rotation and an RP-initiated logout: the authorization code,
    the state, and the ID token the gateway holds (it comes back as id_token_hint) never
    reach a log line, the access log's included."""
    gateway = await start_gateway()
    async with Browser.open() as browser:
        page = await oidc_sign_in(browser, gateway, "alice")
        assert page.status == 200, page.trail()
        callback = parse_qs(urlsplit(hop_to(page, f"{gateway.url}/login/corp/callback").url).query)
        await asyncio.sleep(ACCESS_TTL + 0.2)
        assert (await browser.go(gateway.url + "/api/me")).status == 200  # a rotation
        logout = await browser.go(gateway.url + "/logout", method="POST", follow=False)
        id_token = parse_qs(urlsplit(logout.hops[-1].location or "").query)["id_token_hint"][0]
    log = gateway.log.read_text()
    assert '"path":"/login/corp/callback","status":303' in log  # logged, without its query
    for secret in (callback["code"][0], callback["state"][0], id_token, id_token.split(".")[2]):
        assert secret not in log


async def test_roles_changed_at_the_provider_apply_at_the_next_rotation(
    start_gateway: Start, provider: OpenIDProvider
) -> None:
    """Each refresh brings a new ID token: its claims are mapped and admitted again."""
    gateway = await start_gateway(fields={"allowed_roles": "[staff]"})
    async with Browser.open() as browser:
        page = await oidc_sign_in(browser, gateway, "alice")
        assert received(page.json())["x-user-roles"] == ["admin,staff"], page.trail()

        await provider.change_claims("alice", groups=["staff", "auditors"])
        await asyncio.sleep(ACCESS_TTL + 0.2)
        page = await browser.go(gateway.url + "/api/me")
        assert page.status == 200 and received(page.json())["x-user-roles"] == ["auditors,staff"]

        await provider.change_claims("alice", groups=["auditors"])  # no longer staff
        await asyncio.sleep(ACCESS_TTL + 0.2)
        assert (await browser.go(gateway.url + "/api/me")).status == 401
        assert await answer(gateway.url + "/api/me", session_of(browser)) == 401


async def test_two_providers_side_by_side_each_ends_only_its_own_sessions(
    spawn_gateway: Callable[..., GatewayProcess],
    upstream_url: str,
    tmp_path: Path,
    provider: OpenIDProvider,
) -> None:
    """Two providers and the password form on one login page. alice signs in at both (the
    same `sub` at each); the second provider's logout token ends only the session that
    came from it."""
    with running_provider(tmp_path / "partner") as partner:
        second = {"id": "partner", "issuer": partner.issuer, **PROVIDER_FIELDS}
        second["name"] = "Partner SSO"
        items = enumerate(second.items())
        text = oidc_config(upstream_url, tmp_path, provider.issuer) + "".join(
            f"    {'-' if i == 0 else ' '} {k}: {v}\n" for i, (k, v) in items
        )
        gateway = spawn_gateway(text, env={SECRET_ENV: CLIENT_SECRET})
        await provider.register([gateway.url])
        await partner.register([gateway.url], "partner")
        async with Browser.open() as first, Browser.open() as other:
            page = await first.go(gateway.url + "/login")
            assert all(f"/login/{p}" in page.text for p in ("corp", "partner"))
            assert "Corp SSO" in page.text and "Partner SSO" in page.text
            assert 'name="password"' in page.text
            assert (await oidc_sign_in(first, gateway, "alice")).status == 200
            start = f"{gateway.url}/login/partner?next=/x"
            page = await sign_in_at_provider(other, start, "alice")
            assert page.status == 200 and received(page.json())["x-user-id"] == [ALICE.sub]

            ended = await partner.end_sessions("alice")
            assert [d["ok"] for d in ended["delivered"]] == [True], ended
            assert await answer(gateway.url + "/api/me", session_of(other)) == 401
            assert await answer(gateway.url + "/api/me", session_of(first)) == 200


async def test_a_connection_the_provider_closed_as_it_was_reused_is_not_a_503(
    start_gateway: Start, provider: OpenIDProvider
) -> None:
    """The provider is up; it only closed an idle keep-alive connection at the moment the
    gateway reused it for the code exchange (what Node's 5 s keepAliveTimeout does now and
    then; found by these tests: such a sign-in was a 503). That is no outage: the gateway
    sends the request once more, and the sign-in succeeds."""
    gateway = await start_gateway()
    await provider.drop_reused("/token")
    # sign-ins one after the other: the gateway keeps its connection to the provider for a
    # few seconds, so a code exchange soon comes on a reused one, and that one is dropped
    for _ in range(5):
        async with Browser.open() as browser:
            page = await oidc_sign_in(browser, gateway, "alice")
            assert page.status == 200, page.trail()
            assert received(page.json())["x-user-id"] == [ALICE.sub]
        if await provider.events("test.dropped"):
            break
    # the scenario happened: a code exchange came on a reused connection and was dropped
    assert [e["path"] for e in await provider.events("test.dropped")] == ["/token"]


async def test_a_provider_user_named_like_a_password_user_is_kept_apart(
    start_gateway: Start, provider: OpenIDProvider
) -> None:
    """mallory's `sub` at the provider is `alice`, the name of a users_file user: without a
    subject_prefix she is refused; with one she is `corp:alice`, and a logout token for
    the provider's `alice` ends her session, never the password user's."""
    plain = await start_gateway()
    async with Browser.open() as browser:
        page = await oidc_sign_in(browser, plain, "mallory")
        assert page.status == 403 and session_of(browser) == {}, page.trail()

    prefixed = await start_gateway(fields={"subject_prefix": '"corp:"'}, register=False)
    await provider.register([prefixed.url], session_required=False)  # logout by sub alone
    async with Browser.open() as browser:
        page = await oidc_sign_in(browser, prefixed, "mallory")
        assert page.status == 200 and received(page.json())["x-user-id"] == ["corp:alice"]
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            password_alice = await sign_in_over_http(http, prefixed)
        await provider.end_sessions("mallory")  # logout token: sub "alice", no sid
        assert await answer(prefixed.url + "/api/me", session_of(browser)) == 401
        assert await answer(prefixed.url + "/api/me", password_alice) == 200
