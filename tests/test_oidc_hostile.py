"""Sign-in with OpenID Connect against a provider that lies (SPEC 7.4).

Every way an ID token, a logout token, a state or the provider itself can be
wrong, each ending in no session, a clear page, a security event in the log
and no token text in any log line; plus the happy path and staying in step
(provider refresh, invalid_grant, back-channel and RP-initiated logout).
The provider is tests/fake_provider.py, a real HTTP server on loopback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, OKPAlgorithm
from yarl import URL

from gateway.config import load
from gateway.config.providers import ProviderConfig
from gateway.logs import JsonFormatter
from gateway.observability import create_admin_app
from gateway.oidc.claims import roles
from gateway.oidc.home import Home
from gateway.runtime import Snapshot
from tests.conftest import (
    SAME_ORIGIN,
    Client,
    GatewayFactory,
    free_port,
    runtime_of,
    users_yaml,
)
from tests.fake_provider import FakeProvider, jwk_of, public_pem, rsa_key
from tests.helpers import run_cli, set_cookies

HTML = {"Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"}
SECRET_VAR = "FAKE_OIDC_CLIENT_SECRET"
SESSION = ("access_token", "refresh_token")
# made once: key generation inside the fake's handler could outlast the 1 s provider timeout
ATTACKER = rsa_key()
Start = Callable[..., Awaitable[Client]]


# -- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
async def fake(aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch) -> FakeProvider:
    provider = FakeProvider()
    server: TestServer = await aiohttp_server(provider.app())
    provider.issuer = str(server.make_url("")).rstrip("/")
    monkeypatch.setenv(SECRET_VAR, provider.client_secret)
    return provider


def providers_yaml(issuer: str, more: str = "", provider_id: str = "corp") -> str:
    lines = [
        f"    - id: {provider_id}",
        "      name: Corp SSO",
        f"      issuer: {issuer}",
        "      client_id: gateway",
        f"      client_secret_env: {SECRET_VAR}",
        "      timeout: 1s",
        *([] if "claims:" in more else ["      claims:", "        roles: groups"]),
        *(f"      {line}" for line in more.splitlines() if line.strip()),
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def start(make_gateway: GatewayFactory, fake: FakeProvider, tmp_path: Path) -> Start:
    """A gateway with the fake as provider `corp` (and the users file unless password=False)."""

    async def run(
        more: str = "", password: bool = True, extra_providers: str = "", store: str = "memory://"
    ) -> Client:
        (tmp_path / "users.yaml").write_text(users_yaml())
        users = f"  users_file: {tmp_path / 'users.yaml'}\n" if password else ""
        # a Redis store's refusals here are ACL errors, answered at once: the timeout only
        # has to outlast a loaded CI machine (300 ms did not, once: a 503 at sign-in)
        text = (
            f"store: {store}\nstore_timeout: 5s\nlogin:\n"
            + users
            + "  providers:\n"
            + providers_yaml(fake.issuer, more)
            + extra_providers
        )
        return await make_gateway(text)

    return run


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def log_text(caplog: pytest.LogCaptureFixture) -> Callable[[], str]:
    """Every log line as the gateway writes it (JSON with its extra fields)."""
    caplog.set_level(logging.INFO)
    formatter = JsonFormatter()
    return lambda: "\n".join(
        formatter.format(r) for r in caplog.records if r.name.startswith("gateway")
    )


def config_of(client: Client) -> Path:
    return runtime_of(client).snapshot.config.source


def events(text: str) -> list[dict[str, Any]]:
    return [e for e in map(json.loads, text.splitlines()) if "event" in e]


async def begin(client: Client, next_path: str = "/x", provider: str = "corp") -> tuple[str, str]:
    """GET {login}/{id}: the authorize URL and the browser-binding cookie."""
    response = await client.get(f"/login/{provider}?next={next_path}", allow_redirects=False)
    assert response.status == 302, await response.text()
    cookie = set_cookies(response)["gateway_oidc"]
    assert "HttpOnly" in cookie["raw"] and f"Path=/login/{provider};" in cookie["raw"]
    return response.headers["Location"], cookie["value"]


async def authorize(http: aiohttp.ClientSession, location: str) -> str:
    """The provider's answer: the callback's path and query."""
    async with http.get(location, allow_redirects=False) as response:
        assert response.status == 302, await response.text()
        return URL(response.headers["Location"]).path_qs


async def callback(client: Client, path_qs: str, browser: str | None) -> aiohttp.ClientResponse:
    cookie = {"Cookie": f"gateway_oidc={browser}"} if browser else {}
    return await client.get(path_qs, headers={**HTML, **cookie}, allow_redirects=False)


async def sign_in(client: Client, http: aiohttp.ClientSession) -> aiohttp.ClientResponse:
    location, browser = await begin(client)
    return await callback(client, await authorize(http, location), browser)


def session_of(response: aiohttp.ClientResponse) -> dict[str, str]:
    found = set_cookies(response)
    return {name: found[name]["value"] for name in SESSION if name in found}


def cookies(values: dict[str, str]) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in values.items())}


def refused_cleanly(
    response: aiohttp.ClientResponse, page: str, logged: str, *secrets: str
) -> None:
    """No session, a page saying so, and no secret in any log line."""
    assert not session_of(response), "a refused sign-in set a session cookie"
    assert "Request id" in page or "Sign in" in page
    for secret in secrets:
        assert secret not in logged


# -- the happy path ------------------------------------------------------------------------


async def test_sign_in_with_the_provider_gives_the_gateways_own_session(
    start: Start, fake: FakeProvider, http: aiohttp.ClientSession, log_text: Callable[[], str]
) -> None:
    client = await start()
    page = await (await client.get("/login?next=/x", headers=HTML)).text()
    assert 'href="/login/corp?next=/x"' in page and "Sign in with Corp SSO" in page
    assert 'name="password"' in page  # beside the password form
    location, browser = await begin(client)
    query = URL(location).query
    assert query["code_challenge_method"] == "S256" and query["response_type"] == "code"
    assert query["redirect_uri"] == f"http://{client.host}:{client.port}/login/corp/callback"
    assert set(query["scope"].split()) == {"openid", "email", "profile"}
    path_qs = await authorize(http, location)  # the fake checks PKCE at the token endpoint
    response = await callback(client, path_qs, browser)
    assert response.status == 303 and response.headers["Location"] == "/x"
    session = session_of(response)
    assert set(session) == set(SESSION)
    echo = await (await client.get("/x", headers=cookies(session))).json()
    headers = {k.lower(): v for k, v in echo["headers"]}
    assert headers["x-user-id"] == "idp-user-1"
    assert headers["x-user-email"] == "carol@example.com"
    assert headers["x-user-roles"] == "ops,staff"
    exchange = fake.token_requests[-1]
    assert "client_secret" not in exchange and exchange["code_verifier"]  # Basic auth, PKCE
    logged = log_text()
    assert any(e["event"] == "login" and e.get("provider") == "corp" for e in events(logged))
    for secret in (browser, *session.values(), query["state"], query["nonce"]):
        assert secret not in logged


async def test_one_provider_and_no_password_goes_straight_to_the_provider(start: Start) -> None:
    client = await start(password=False)
    response = await client.get("/login?next=/a%3Fb", headers=HTML, allow_redirects=False)
    assert response.status == 302 and response.headers["Location"] == "/login/corp?next=/a%3Fb"
    post = await client.post("/login", data={"username": "a", "password": "b"})
    assert post.status == 405


async def test_the_userinfo_endpoint_fills_what_the_id_token_lacks(
    start: Start, fake: FakeProvider, http: aiohttp.ClientSession
) -> None:
    client = await start()
    fake.userinfo = {**fake.user, "groups": "admins, auditors"}
    fake.user = {"sub": "idp-user-1"}
    response = await sign_in(client, http)
    echo = await (await client.get("/x", headers=cookies(session_of(response)))).json()
    headers = {k.lower(): v for k, v in echo["headers"]}
    assert headers["x-user-roles"] == "admins,auditors" and fake.calls["userinfo"] == 1


# -- ID tokens that must not sign anyone in --------------------------------------------------


def _raw_hmac(claims: dict[str, Any], key: bytes, kid: str) -> str:
    """HS256 keyed with the RSA public key's PEM: the classic algorithm confusion. PyJWT
    refuses to sign that, so the test lifts the refusal, as an attacker would."""

    class AnyKeyHMAC(HMACAlgorithm):
        def prepare_key(self, key: str | bytes) -> bytes:
            return key if isinstance(key, bytes) else key.encode()

    jws = jwt.PyJWS()
    jws.unregister_algorithm("HS256")
    jws.register_algorithm("HS256", AnyKeyHMAC(HMACAlgorithm.SHA256))
    return jws.encode(json.dumps(claims).encode(), key, algorithm="HS256", headers={"kid": kid})


def _hostile(fake: FakeProvider, how: str) -> Callable[[dict[str, Any], dict[str, Any]], str]:
    def mint(claims: dict[str, Any], header: dict[str, Any]) -> str:
        now = int(time.time())
        if how == "other_key":
            return fake.sign(claims, key=ATTACKER)
        if how == "alg_none":
            return jwt.encode(claims, "", algorithm="none", headers={"kid": fake.kid})
        if how == "hmac_client_secret":
            return jwt.encode(claims, fake.client_secret, "HS256", headers={"kid": fake.kid})
        if how == "hmac_public_pem":
            return _raw_hmac(claims, public_pem(fake.key), fake.kid)
        if how == "jwk_in_header":  # the attacker's own key, offered in the header
            attacker = ATTACKER
            offered = jwk_of(attacker, fake.kid)
            return fake.sign(claims, key=attacker, headers={"jwk": offered})
        if how == "unknown_kid":
            return fake.sign(claims, key=ATTACKER, kid="never-published")
        variants: dict[str, dict[str, Any]] = {
            "wrong_iss": {"iss": fake.issuer + "/evil"},
            "wrong_aud": {"aud": "someone-else"},
            "foreign_azp": {"aud": [fake.client_id, "other"], "azp": "other"},
            "many_aud_no_azp": {"aud": [fake.client_id, "other"]},
            "expired": {"iat": now - 400, "exp": now - 120},
            "iat_future": {"iat": now + 600, "exp": now + 900},
            "nonce_mismatch": {"nonce": "not-the-nonce"},
            "no_nonce": {"nonce": None},
        }
        changed = variants[how]
        return fake.sign({k: v for k, v in {**claims, **changed}.items() if v is not None})

    return mint


# how the token is wrong -> the reason the security event gives
HOSTILE = {
    "other_key": "bad signature",
    "alg_none": "algorithm not allowed: none",
    "hmac_client_secret": "algorithm not allowed: HS256",
    "hmac_public_pem": "algorithm not allowed: HS256",
    "jwk_in_header": "bad signature",
    "unknown_kid": "unknown kid",
    "wrong_iss": "wrong issuer",
    "wrong_aud": "wrong audience",
    "foreign_azp": "foreign azp",
    "many_aud_no_azp": "several audiences and no azp",
    "expired": "expired",
    "iat_future": "ImmatureSignatureError",
    "nonce_mismatch": "nonce mismatch",
    "no_nonce": "nonce mismatch",
}


@pytest.mark.parametrize("how", HOSTILE)
async def test_an_id_token_that_fails_verification_signs_nobody_in(
    start: Start,
    fake: FakeProvider,
    http: aiohttp.ClientSession,
    log_text: Callable[[], str],
    how: str,
) -> None:
    client = await start()
    minted: list[str] = []

    def mint(claims: dict[str, Any], header: dict[str, Any]) -> str:
        minted.append(_hostile(fake, how)(claims, header))
        return minted[-1]

    fake.mint_id_token = mint
    response = await sign_in(client, http)
    page = await response.text()
    assert response.status == 401, (how, page)
    assert "could not be verified" in page
    logged = log_text()
    refused = [e for e in events(logged) if e["event"] == "oidc_token_refused"]
    assert refused and refused[0]["provider"] == "corp", logged
    assert refused[0]["why"] == HOSTILE[how]
    refused_cleanly(response, page, logged, *minted)
    assert minted[0].split(".")[1] not in logged  # not even the payload part


async def test_a_rotated_key_is_accepted_after_one_refetch_and_made_up_kids_are_rate_limited(
    start: Start, fake: FakeProvider, http: aiohttp.ClientSession
) -> None:
    client = await start()
    assert (await sign_in(client, http)).status == 303
    assert fake.calls["jwks"] == 1
    fake.rotate_key("k2")  # the provider starts signing with a key the gateway has not seen
    assert (await sign_in(client, http)).status == 303
    assert fake.calls["jwks"] == 2
    fake.mint_id_token = _hostile(fake, "unknown_kid")
    for _ in range(3):  # a flood of made-up kids: no refetch within a minute of the last
        assert (await sign_in(client, http)).status == 401
    assert fake.calls["jwks"] == 2


# -- state: missing, expired, replayed, another browser's ---------------------------------


async def test_a_callback_without_state_is_400(start: Start, log_text: Callable[[], str]) -> None:
    client = await start()
    response = await callback(client, "/login/corp/callback?code=abc", "x" * 43)
    assert response.status == 400 and not session_of(response)
    assert "start it again" in await response.text()
    assert any(e["event"] == "oidc_state_refused" for e in events(log_text()))


async def test_a_replayed_state_is_400(start: Start, http: aiohttp.ClientSession) -> None:
    client = await start()
    location, browser = await begin(client)
    path_qs = await authorize(http, location)
    assert (await callback(client, path_qs, browser)).status == 303
    again = await callback(client, path_qs, browser)
    assert again.status == 400 and not session_of(again)
    assert "already used" in await again.text()


async def test_a_state_from_another_browser_is_400_and_used_up(
    start: Start, http: aiohttp.ClientSession, log_text: Callable[[], str]
) -> None:
    client = await start()
    location, browser = await begin(client)
    path_qs = await authorize(http, location)
    for other in ("y" * 43, None):
        response = await callback(client, path_qs, other)
        assert response.status == 400 and not session_of(response)
    # the victim's own browser cannot finish it either now: single use, whoever came first
    assert (await callback(client, path_qs, browser)).status == 400
    logged = log_text()
    assert browser not in logged and URL(path_qs).query["state"] not in logged


async def test_an_expired_state_is_400(
    start: Start, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.oidc.flow.STATE_TTL", 0.2)
    client = await start()
    location, browser = await begin(client)
    path_qs = await authorize(http, location)
    await asyncio.sleep(0.3)
    response = await callback(client, path_qs, browser)
    assert response.status == 400 and "expired" in await response.text()


async def test_a_state_started_for_another_provider_is_400(
    start: Start, fake: FakeProvider, http: aiohttp.ClientSession
) -> None:
    client = await start(extra_providers=providers_yaml(fake.issuer, provider_id="other"))
    location, browser = await begin(client, provider="corp")
    path_qs = await authorize(http, location)
    foreign = path_qs.replace("/login/corp/", "/login/other/")
    response = await callback(client, foreign, browser)
    assert response.status == 400 and "another provider" in await response.text()


async def test_two_tabs_signing_in_at_once_both_finish(
    start: Start, http: aiohttp.ClientSession
) -> None:
    client = await start()
    first, browser = await begin(client)
    response = await client.get(
        "/login/corp?next=/y", headers={"Cookie": f"gateway_oidc={browser}"}, allow_redirects=False
    )
    second = response.headers["Location"]
    assert "gateway_oidc" not in set_cookies(response) or (
        set_cookies(response)["gateway_oidc"]["value"] == browser
    )
    for location in (second, first):
        assert (await callback(client, await authorize(http, location), browser)).status == 303


# -- the provider says no, or is not there -------------------------------------------------


async def test_access_denied_shows_the_login_page_with_a_message(
    start: Start, fake: FakeProvider, http: aiohttp.ClientSession
) -> None:
    client = await start()
    location, browser = await begin(client)
    fake.mode = "deny"
    response = await callback(client, await authorize(http, location), browser)
    page = await response.text()
    assert response.status == 401 and not session_of(response)
    assert "Corp SSO did not sign you in (access denied)." in page and 'name="password"' in page


async def test_an_unknown_error_from_the_provider_is_not_echoed(start: Start) -> None:
    client = await start()
    location, browser = await begin(client)
    state = URL(location).query["state"]
    response = await callback(
        client, f"/login/corp/callback?state={state}&error=%3Cscript%3Ex", browser
    )
    page = await response.text()
    assert response.status == 401 and "<script>x" not in page and "&lt;script" not in page


@pytest.mark.parametrize("mode", ["down", "slow", "garbage", "html"])
async def test_a_provider_down_slow_or_answering_garbage_is_503_and_no_session(
    start: Start,
    fake: FakeProvider,
    http: aiohttp.ClientSession,
    log_text: Callable[[], str],
    mode: str,
) -> None:
    client = await start()
    location, browser = await begin(client)
    path_qs = await authorize(http, location)
    fake.mode, fake.slow_seconds = mode, 5.0
    started = time.monotonic()
    response = await callback(client, path_qs, browser)
    assert response.status == 503 and not session_of(response)
    assert time.monotonic() - started < 3  # timeout: 1s, never a hang
    page = await response.text()
    assert "Corp SSO is not answering right now" in page and 'name="password"' in page
    assert response.headers["Retry-After"] == "1"
    assert any(e["event"] == "oidc_unavailable" for e in events(log_text()))


async def test_a_provider_down_at_the_start_is_503_quickly(
    make_gateway: GatewayFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_VAR, "s" * 40)
    issuer = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client = await make_gateway("login:\n  providers:\n" + providers_yaml(issuer))
    response = await client.get("/login/corp?next=/x", headers=HTML, allow_redirects=False)
    assert response.status == 503 and not set_cookies(response)


@pytest.mark.parametrize(
    ("more", "user"),
    [
        ("allowed_email_domains: [example.org]", {}),
        ("allowed_email_domains: [example.com]", {"email_verified": False}),
        ("allowed_roles: [admins]", {}),
        ("claims: {sub: email, roles: groups}", {"email_verified": False}),
    ],
    ids=["domain", "unverified-email", "roles", "unverified-email-as-sub"],
)
async def test_a_user_the_site_does_not_admit_gets_403(
    start: Start,
    fake: FakeProvider,
    http: aiohttp.ClientSession,
    log_text: Callable[[], str],
    more: str,
    user: dict[str, Any],
) -> None:
    client = await start(more)
    fake.user = {**fake.user, **user}
    response = await sign_in(client, http)
    page = await response.text()
    assert response.status == 403 and not session_of(response)
    assert "does not admit that account" in page
    assert any(e["event"] == "oidc_not_admitted" for e in events(log_text()))


async def test_admitted_by_domain_and_role(start: Start, http: aiohttp.ClientSession) -> None:
    client = await start("allowed_email_domains: [EXAMPLE.com]\nallowed_roles: [ops]")
    assert (await sign_in(client, http)).status == 303


# -- staying in step: refresh at the provider ------------------------------------------------


def refresh_only(session: dict[str, str]) -> dict[str, str]:
    return cookies({"refresh_token": session["refresh_token"]})


async def test_each_rotation_refreshes_at_the_provider_once_even_when_requests_race(
    start: Start, fake: FakeProvider, http: aiohttp.ClientSession
) -> None:
    client = await start()
    session = session_of(await sign_in(client, http))
    answers = await asyncio.gather(
        *(client.get("/x", headers=refresh_only(session)) for _ in range(6))
    )
    assert [a.status for a in answers] == [200] * 6
    refreshes = [r for r in fake.token_requests if r["grant_type"] == "refresh_token"]
    assert len(refreshes) == 1  # the provider never sees its refresh token twice
    rotated = session_of(answers[0])
    again = await client.get("/x", headers=refresh_only(rotated))
    assert again.status == 200
    refreshes = [r for r in fake.token_requests if r["grant_type"] == "refresh_token"]
    assert len(refreshes) == 2 and refreshes[1]["refresh_token"] != refreshes[0]["refresh_token"]


async def test_a_user_disabled_at_the_provider_loses_the_session_at_the_next_rotation(
    start: Start, fake: FakeProvider, http: aiohttp.ClientSession, log_text: Callable[[], str]
) -> None:
    client = await start()
    session = session_of(await sign_in(client, http))
    fake.disabled = True
    response = await client.get("/api/x", headers=refresh_only(session))
    assert response.status == 401
    cleared = set_cookies(response)
    assert cleared["refresh_token"]["value"] == "" and cleared["refresh_token"]["max-age"] == "0"
    # the family is dead everywhere: its access token is refused too, before it expires
    assert (await client.get("/api/x", headers=cookies(session))).status == 401
    assert any(e["event"] == "oidc_refresh_refused" for e in events(log_text()))


async def test_a_provider_down_during_the_refresh_is_503_and_signs_nobody_out(
    start: Start, fake: FakeProvider, http: aiohttp.ClientSession
) -> None:
    client = await start()
    session = session_of(await sign_in(client, http))
    fake.mode = "down"
    response = await client.get("/api/x", headers=refresh_only(session))
    assert response.status == 503 and not set_cookies(response)
    fake.mode = "ok"
    await asyncio.sleep(2.1)  # the failed attempt's marker (timeout + 1 s) has lapsed
    response = await client.get("/api/x", headers=refresh_only(session))
    assert response.status == 200 and set(session_of(response)) == set(SESSION)


async def test_a_password_session_beside_providers_refreshes_without_asking_them(
    start: Start, fake: FakeProvider
) -> None:
    client = await start()
    signed = await client.post(
        "/login",
        data={"username": "alice", "password": "wonderland"},
        headers={"Origin": SAME_ORIGIN},
        allow_redirects=False,
    )
    response = await client.get("/x", headers=refresh_only(session_of(signed)))
    assert response.status == 200 and "token" not in fake.calls


# -- back-channel logout ---------------------------------------------------------------------


async def backchannel(client: Client, token: str, **headers: str) -> aiohttp.ClientResponse:
    return await client.post(
        "/login/corp/backchannel-logout", data={"logout_token": token}, headers=headers
    )


async def test_a_back_channel_logout_ends_the_session_by_sid_and_its_jti_is_single_use(
    start: Start, fake: FakeProvider, http: aiohttp.ClientSession, log_text: Callable[[], str]
) -> None:
    client = await start()
    session = session_of(await sign_in(client, http))
    assert (await client.get("/api/x", headers=cookies(session))).status == 200
    token = fake.logout_token(sub=None)
    # a server-to-server call: an Origin of another site changes nothing
    response = await backchannel(client, token, Origin="https://idp.elsewhere.example")
    assert response.status == 200 and await response.read() == b""
    assert response.headers["Cache-Control"] == "no-store"
    assert (await client.get("/api/x", headers=cookies(session))).status == 401
    assert (await client.get("/api/x", headers=refresh_only(session))).status == 401
    replay = await backchannel(client, token)
    assert replay.status == 400
    assert (await replay.json())["error"] == "invalid_request"
    logged = log_text()
    assert token not in logged and token.split(".")[1] not in logged
    assert any(e.get("why") == "replayed jti" for e in events(logged))


async def test_a_back_channel_logout_by_sub_ends_every_session_of_that_user(
    start: Start, fake: FakeProvider, http: aiohttp.ClientSession
) -> None:
    client = await start()
    first = session_of(await sign_in(client, http))
    fake.sid = "sid-2"
    second = session_of(await sign_in(client, http))
    response = await backchannel(client, fake.logout_token(sid=None))
    assert response.status == 200
    for session in (first, second):
        assert (await client.get("/api/x", headers=cookies(session))).status == 401


@pytest.mark.parametrize(
    "how",
    ["nonce", "no_event", "other_key", "wrong_aud", "no_sub_or_sid", "expired", "alg_none"],
)
async def test_a_bad_logout_token_is_400_and_ends_nothing(
    start: Start,
    fake: FakeProvider,
    http: aiohttp.ClientSession,
    log_text: Callable[[], str],
    how: str,
) -> None:
    client = await start()
    session = session_of(await sign_in(client, http))
    now = int(time.time())
    token = {
        "nonce": lambda: fake.logout_token(nonce="n"),
        "no_event": lambda: fake.logout_token(events={"other": {}}),
        "other_key": lambda: fake.sign(
            jwt.decode(fake.logout_token(), options={"verify_signature": False}), key=ATTACKER
        ),
        "wrong_aud": lambda: fake.logout_token(aud="other"),
        "no_sub_or_sid": lambda: fake.logout_token(sub=None, sid=None),
        "expired": lambda: fake.logout_token(iat=now - 400, exp=now - 100),
        "alg_none": lambda: jwt.encode(
            jwt.decode(fake.logout_token(), options={"verify_signature": False}),
            "",
            algorithm="none",
        ),
    }[how]()
    response = await backchannel(client, token)
    assert response.status == 400
    assert (await client.get("/api/x", headers=cookies(session))).status == 200
    logged = log_text()
    assert any(e["event"] == "oidc_logout_token_refused" for e in events(logged))
    assert token not in logged


async def test_a_back_channel_request_without_a_token_is_400(start: Start) -> None:
    client = await start()
    assert (await client.post("/login/corp/backchannel-logout", data={"x": "1"})).status == 400
    assert (await client.post("/login/corp/backchannel-logout", json={"a": 1})).status == 400
    assert (await client.get("/login/corp/backchannel-logout")).status == 405


# -- RP-initiated logout, sessions and readiness ----------------------------------------------


async def test_logout_of_a_provider_session_ends_it_at_the_provider_too(
    start: Start, fake: FakeProvider, http: aiohttp.ClientSession
) -> None:
    client = await start()
    session = session_of(await sign_in(client, http))
    response = await client.post(
        "/logout",
        headers={**cookies(session), **HTML, "Origin": SAME_ORIGIN},
        allow_redirects=False,
    )
    assert response.status == 303
    location = URL(response.headers["Location"])
    assert str(location).startswith(f"{fake.issuer}/end-session?")
    assert location.query["post_logout_redirect_uri"] == f"http://{client.host}:{client.port}/login"
    assert location.query["client_id"] == "gateway"
    hint = jwt.decode(location.query["id_token_hint"], options={"verify_signature": False})
    assert hint["sub"] == "idp-user-1"
    assert set_cookies(response)["access_token"]["value"] == ""
    assert (await client.get("/api/x", headers=cookies(session))).status == 401


async def test_sessions_and_readiness_name_the_provider(
    start: Start, fake: FakeProvider, http: aiohttp.ClientSession, aiohttp_client: Any
) -> None:
    client = await start()
    admin: TestClient[web.Request, web.Application] = await aiohttp_client(
        create_admin_app(runtime_of(client))
    )
    await sign_in(client, http)
    await client.post(
        "/login",
        data={"username": "idp-user-1", "password": "x"},
        headers={"Origin": SAME_ORIGIN},
    )
    listed = await (await admin.get("/sessions?user=idp-user-1")).json()
    assert [s["provider"] for s in listed["sessions"]] == ["corp"]
    ready = await admin.get("/readyz")
    assert ready.status == 200 and await ready.json() == {"status": "ready"}
    fake.mode = "down"
    home = runtime_of(client).oidc_home
    with pytest.raises(Exception, match="HTTP 500"):
        await home.state(runtime_of(client).snapshot.config.login.providers[0]).discover(
            home.session, again=True
        )
    ready = await admin.get("/readyz")
    assert ready.status == 200
    assert await ready.json() == {"status": "ready", "providers_unreachable": ["corp"]}


async def test_a_provider_down_at_start_is_found_once_it_is_up(fake: FakeProvider) -> None:
    fake.mode = "down"
    home = Home()
    config = _provider_config(fake)
    task = asyncio.create_task(home.keep_discovered(lambda: (config,)))
    try:
        await asyncio.sleep(0.3)
        assert home.unreachable((config,)) == ["corp"]
        fake.mode = "ok"
        for _ in range(40):
            await asyncio.sleep(0.1)
            if not home.unreachable((config,)):
                break
        assert home.unreachable((config,)) == []
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await home.close()


def _provider_config(fake: FakeProvider) -> ProviderConfig:
    return ProviderConfig(id="corp", issuer=fake.issuer, client_id="gateway", timeout=1)


@pytest.mark.parametrize("confidential", [True, False], ids=["confidential", "public"])
async def test_hs256_only_with_the_client_secret_of_a_confidential_client_that_asks_for_it(
    make_gateway: GatewayFactory,
    fake: FakeProvider,
    http: aiohttp.ClientSession,
    log_text: Callable[[], str],
    confidential: bool,
) -> None:
    fake.algorithms = ["RS256", "HS256"]
    provider = providers_yaml(fake.issuer)
    if not confidential:
        provider = provider.replace(f"      client_secret_env: {SECRET_VAR}\n", "")
        fake.client_secret = ""  # the fake then expects no client authentication
    client = await make_gateway("login:\n  providers:\n" + provider)
    fake.mint_id_token = lambda claims, header: jwt.encode(
        claims, fake.client_secret or "x" * 32, "HS256"
    )
    response = await sign_in(client, http)
    assert response.status == (303 if confidential else 401)
    if not confidential:
        refused = [e for e in events(log_text()) if e["event"] == "oidc_token_refused"]
        assert refused[0]["why"] == "algorithm not allowed: HS256"


async def test_a_public_client_signs_in_with_pkce_alone(
    make_gateway: GatewayFactory, fake: FakeProvider, http: aiohttp.ClientSession
) -> None:
    provider = providers_yaml(fake.issuer).replace(f"      client_secret_env: {SECRET_VAR}\n", "")
    fake.client_secret = ""  # the fake refuses any client authentication now
    client = await make_gateway("login:\n  providers:\n" + provider)
    assert (await sign_in(client, http)).status == 303
    exchange = fake.token_requests[-1]
    assert exchange["client_id"] == "gateway" and exchange["code_verifier"]


async def test_a_provider_refusing_the_gateway_itself_is_503_not_a_sign_out(
    start: Start, fake: FakeProvider, http: aiohttp.ClientSession
) -> None:
    client = await start()
    session = session_of(await sign_in(client, http))
    secret, fake.client_secret = fake.client_secret, "rotated-at-the-provider" * 2
    response = await client.get("/api/x", headers=refresh_only(session))
    assert response.status == 503  # invalid_client: the registration is wrong, not the user
    fake.client_secret = secret
    await asyncio.sleep(2.1)
    assert (await client.get("/api/x", headers=refresh_only(session))).status == 200


async def test_an_answer_naming_another_issuer_is_400(start: Start) -> None:
    client = await start()
    location, browser = await begin(client)
    state = URL(location).query["state"]
    response = await callback(
        client, f"/login/corp/callback?state={state}&code=x&iss=https://evil.example", browser
    )
    assert response.status == 400 and "another issuer" in await response.text()


@pytest.mark.parametrize(("size", "status"), [(300_000, 302), (600_000, 503)])
async def test_a_large_jwks_is_read_whole_and_an_oversized_one_refused(
    start: Start, fake: FakeProvider, size: int, status: int
) -> None:
    """A body arrives in pieces: read to its end (300 kB), or refused past 512 KiB."""
    fake.published = [*fake.published, {"kty": "oct", "kid": "pad", "k": "A" * size}]
    client = await start()
    response = await client.get("/login/corp?next=/x", headers=HTML, allow_redirects=False)
    assert response.status == status


def test_roles_from_a_list_or_a_string_and_never_a_comma_smuggled_in() -> None:
    assert roles(["ops", "staff", "ops"]) == ["ops", "staff"]
    assert roles("admins, auditors  viewers") == ["admins", "auditors", "viewers"]
    assert roles(["Domain Users", "admin,x", 7, None]) == ["Domain Users"]
    assert roles({"admin": True}) == [] and roles(None) == []


async def test_a_program_logging_out_of_a_provider_session_keeps_its_answer(
    start: Start, http: aiohttp.ClientSession
) -> None:
    client = await start()
    session = session_of(await sign_in(client, http))
    response = await client.post(
        "/logout",
        headers={**cookies(session), "Accept": "application/json", "Origin": SAME_ORIGIN},
        allow_redirects=False,
    )
    assert response.status == 303 and response.headers["Location"] == "/login"
    assert (await client.get("/api/x", headers=cookies(session))).status == 401


async def test_roles_changed_at_the_provider_apply_at_the_next_rotation(
    start: Start, fake: FakeProvider, http: aiohttp.ClientSession
) -> None:
    client = await start()
    session = session_of(await sign_in(client, http))
    fake.user = {**fake.user, "groups": ["auditors"]}
    response = await client.get("/x", headers=refresh_only(session))
    headers = {k.lower(): v for k, v in (await response.json())["headers"]}
    assert response.status == 200 and headers["x-user-roles"] == "auditors"


@pytest.mark.parametrize("how", ["other_key", "another_sub", "no_longer_admitted"])
async def test_a_refreshed_id_token_that_fails_ends_the_session(
    start: Start,
    fake: FakeProvider,
    http: aiohttp.ClientSession,
    log_text: Callable[[], str],
    how: str,
) -> None:
    client = await start("allowed_roles: [staff]")
    session = session_of(await sign_in(client, http))
    if how == "other_key":
        fake.mint_id_token = lambda claims, header: fake.sign(claims, key=ATTACKER)
    elif how == "another_sub":
        fake.user = {**fake.user, "sub": "idp-user-2"}
    else:
        fake.user = {**fake.user, "groups": ["ops"]}
    response = await client.get("/api/x", headers=refresh_only(session))
    assert response.status == 401
    assert (await client.get("/api/x", headers=cookies(session))).status == 401
    logged = log_text()
    assert any(e["event"] == "oidc_token_refused" for e in events(logged))


async def test_a_revoked_provider_session_never_reaches_the_provider_again(
    start: Start, fake: FakeProvider, http: aiohttp.ClientSession
) -> None:
    client = await start()
    session = session_of(await sign_in(client, http))
    assert await runtime_of(client).snapshot.sessions.revoke_user("idp-user-1") == 1
    response = await client.get("/api/x", headers=refresh_only(session))
    assert response.status == 401
    assert not [r for r in fake.token_requests if r["grant_type"] == "refresh_token"]


async def test_two_replicas_sharing_redis_finish_each_others_sign_ins_and_logouts(
    start: Start, fake: FakeProvider, http: aiohttp.ClientSession, redis_url: str, secret: str
) -> None:
    fake.user = {**fake.user, "sub": f"idp-{uuid.uuid4().hex[:8]}"}
    one, two = await start(store=redis_url), await start(store=redis_url)
    location, browser = await begin(one)  # started on one replica...
    response = await callback(two, await authorize(http, location), browser)  # ...ends on two
    assert response.status == 303
    session = session_of(response)
    assert (await one.get("/api/x", headers=cookies(session))).status == 200
    listing = await asyncio.to_thread(
        run_cli, "sessions", "--user", fake.user["sub"], "--config", str(config_of(one))
    )
    assert listing.returncode == 0 and listing.stdout.strip().endswith("via corp"), listing
    assert (await backchannel(two, fake.logout_token())).status == 200
    for replica in (one, two):  # ended on every replica at once
        assert (await replica.get("/api/x", headers=cookies(session))).status == 401


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA", "PS256"])
async def test_other_asymmetric_algorithms_the_provider_announces_verify(
    start: Start, fake: FakeProvider, http: aiohttp.ClientSession, algorithm: str
) -> None:
    key: Any
    if algorithm == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    elif algorithm == "EdDSA":
        key = ed25519.Ed25519PrivateKey.generate()
        jwk = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        key, jwk = fake.key, {k: v for k, v in fake.published[0].items() if k != "alg"}
    fake.published = [{**jwk, "kid": "other", "use": "sig"}]
    fake.algorithms = [algorithm]
    fake.mint_id_token = lambda claims, header: fake.sign(
        claims, key=key, algorithm=algorithm, kid="other"
    )
    client = await start()
    assert (await sign_in(client, http)).status == 303


async def test_sign_ins_started_per_client_are_bounded(
    start: Start, monkeypatch: pytest.MonkeyPatch, log_text: Callable[[], str]
) -> None:
    monkeypatch.setattr("gateway.oidc.flow.START_LIMIT", 3)
    client = await start()
    for _ in range(3):
        await begin(client)
    response = await client.get("/login/corp?next=/x", headers=HTML, allow_redirects=False)
    assert response.status == 429 and response.headers["Retry-After"] == "60"
    assert "Wait a minute" in await response.text() and not set_cookies(response)
    assert any(e["event"] == "oidc_throttled" for e in events(log_text()))


async def test_a_pooled_connection_the_provider_closed_is_retried_once_not_a_503(
    start: Start, fake: FakeProvider, http: aiohttp.ClientSession
) -> None:
    client = await start()
    location, browser = await begin(client)  # discovery and keys: a pooled connection
    path_qs = await authorize(http, location)
    fake.drop_reused = True
    response = await callback(client, path_qs, browser)
    assert fake.calls.get("dropped") == 1  # the exchange came on the reused connection
    assert response.status == 303


async def test_a_provider_removed_from_the_config_ends_its_sessions_at_rotation(
    start: Start, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    client = await start()
    session = session_of(await sign_in(client, http))
    runtime = runtime_of(client)
    text = config_of(client).read_text()
    without = text[: text.index("  providers:")]  # the users file stays
    (tmp_path / "reloaded.yaml").write_text(without)
    runtime.snapshot = Snapshot.build(
        load(tmp_path / "reloaded.yaml"), runtime.store, runtime.oidc_home
    )
    assert (await client.get("/api/x", headers=refresh_only(session))).status == 401
