"""Sign-in with OpenID Connect, attacked where the first review found it weak.

Each test is an attack or a failure that once worked, on real parts: the fake
provider (tests/fake_provider.py, a real HTTP server), a real gateway, a real
Redis whose permissions are taken away mid-way. The fixtures and helpers are
test_oidc_hostile.py's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from aiohttp import ClientSession, CookieJar

from gateway.oidc.discovery import parse_metadata
from gateway.oidc.http import ProviderUnavailable
from tests import test_oidc_hostile as hostile
from tests.conftest import SAME_ORIGIN, Client, GatewayFactory, runtime_of
from tests.fake_provider import FakeProvider
from tests.redis_server import RedisServer

fake, start, http, log_text = hostile.fake, hostile.start, hostile.http, hostile.log_text
Start = hostile.Start


# -- 1. a back-channel logout survives a store that fails while ending --------------------


async def test_a_back_channel_logout_the_store_failed_to_apply_succeeds_on_the_retry(
    start: Start, fake: FakeProvider, http: ClientSession, redis_server: RedisServer
) -> None:
    client = await start(store=redis_server.url)
    session = hostile.session_of(await hostile.sign_in(client, http))
    token = fake.logout_token()
    admin = redis.Redis(port=redis_server.port)
    # the store answers reads and plain writes but refuses the scripts that end a family:
    # a node failing between the two steps of the logout
    admin.execute_command("ACL", "SETUSER", "default", "-evalsha", "-eval")  # type: ignore[no-untyped-call]
    try:
        assert (await hostile.backchannel(client, token)).status == 503
    finally:
        admin.execute_command("ACL", "SETUSER", "default", "+@all")  # type: ignore[no-untyped-call]
        admin.close()
    retry = await hostile.backchannel(client, token)  # the provider retries a 503
    assert retry.status == 200, await retry.text()
    for headers in (hostile.cookies(session), hostile.refresh_only(session)):
        assert (await client.get("/api/x", headers=headers)).status == 401
    assert (await hostile.backchannel(client, token)).status == 400  # now spent


# -- 2. a provider's user never becomes a users_file user, nor another provider's ---------


@pytest.mark.parametrize("name", ["alice", "ALICE"])
async def test_a_provider_user_named_like_a_password_user_is_refused(
    start: Start,
    fake: FakeProvider,
    http: ClientSession,
    log_text: Callable[[], str],
    name: str,
) -> None:
    client = await start()  # the users file holds alice (an admin) and bob
    fake.user = {**fake.user, "sub": name}
    response = await hostile.sign_in(client, http)
    page = await response.text()
    assert response.status == 403 and not hostile.session_of(response)
    assert "does not admit that account" in page
    refused = [e for e in hostile.events(log_text()) if e["event"] == "oidc_subject_collision"]
    assert refused and refused[0]["provider"] == "corp"


async def test_a_subject_prefix_keeps_a_providers_alice_apart_and_logout_matches_its_sub(
    start: Start, fake: FakeProvider, http: ClientSession
) -> None:
    client = await start("subject_prefix: 'corp:'")
    fake.user = {**fake.user, "sub": "alice"}
    response = await hostile.sign_in(client, http)
    assert response.status == 303
    session = hostile.session_of(response)
    echo = await (await client.get("/x", headers=hostile.cookies(session))).json()
    assert {k.lower(): v for k, v in echo["headers"]}["x-user-id"] == "corp:alice"
    # the provider names its own sub, before the prefix (SPEC 7.4)
    assert (await hostile.backchannel(client, fake.logout_token(sid=None))).status == 200
    assert (await client.get("/api/x", headers=hostile.cookies(session))).status == 401


# -- 3. only an address the provider vouches for admits or names a user -------------------

UNVERIFIED: list[Any] = [None, "false", False, "False", 0, 1, "yes", {}]


@pytest.mark.parametrize("flag", UNVERIFIED, ids=repr)
@pytest.mark.parametrize(
    "more", ["allowed_email_domains: [example.com]", "claims: {sub: email, roles: groups}"]
)
async def test_an_address_the_provider_does_not_vouch_for_neither_admits_nor_names_a_user(
    start: Start,
    fake: FakeProvider,
    http: ClientSession,
    log_text: Callable[[], str],
    flag: Any,
    more: str,
) -> None:
    client = await start(more)
    user = {k: v for k, v in fake.user.items() if k != "email_verified"}
    fake.user = user if flag is None else {**user, "email_verified": flag}
    response = await hostile.sign_in(client, http)
    assert response.status == 403 and not hostile.session_of(response)
    assert any(e["event"] == "oidc_not_admitted" for e in hostile.events(log_text()))


@pytest.mark.parametrize(
    ("flag", "more"),
    [(True, ""), ("true", ""), (None, "trust_unverified_email: true")],
    ids=["true", "string-true", "trusted-without-flag"],
)
async def test_a_vouched_for_address_admits_by_domain_and_may_be_the_subject(
    start: Start, fake: FakeProvider, http: ClientSession, flag: Any, more: str
) -> None:
    client = await start(
        "allowed_email_domains: [example.com]\nclaims: {sub: email, roles: groups}\n" + more
    )
    user = {k: v for k, v in fake.user.items() if k != "email_verified"}
    fake.user = user if flag is None else {**user, "email_verified": flag}
    response = await hostile.sign_in(client, http)
    assert response.status == 303, await response.text()
    echo = await client.get("/x", headers=hostile.cookies(hostile.session_of(response)))
    headers = {k.lower(): v for k, v in (await echo.json())["headers"]}
    assert headers["x-user-id"] == "carol@example.com"


# -- 4. a slow or dead provider costs each sign-in one timeout at most, not a queue -------


async def _parallel_starts(client: Client, count: int) -> tuple[list[int], float]:
    """`count` sign-ins started at once: their statuses and the slowest one's seconds."""

    async def one() -> tuple[int, float]:
        begun = time.monotonic()
        response = await client.get("/login/corp?next=/x", headers=hostile.HTML)
        return response.status, time.monotonic() - begun

    answers = await asyncio.gather(*(one() for _ in range(count)))
    return [status for status, _ in answers], max(seconds for _, seconds in answers)


async def test_parallel_sign_ins_with_a_slow_provider_share_one_discovery(
    start: Start, fake: FakeProvider
) -> None:
    fake.mode, fake.slow_seconds = "slow", 30.0
    client = await start()  # timeout: 1s, the provider never discovered
    statuses, slowest = await _parallel_starts(client, 15)
    assert statuses == [503] * 15
    assert slowest < 3.0  # each waited for the one call under way; queued, the last took 15 s
    assert fake.calls["discovery"] == 1


async def test_a_provider_the_background_retry_holds_down_answers_503_at_once(
    start: Start, fake: FakeProvider
) -> None:
    fake.mode, fake.slow_seconds = "slow", 30.0
    client = await start()
    home = runtime_of(client).oidc_home
    config = runtime_of(client).snapshot.config.login.providers[0]
    retry = asyncio.create_task(home.keep_discovered(lambda: (config,)))
    try:
        for _ in range(100):  # its first attempt ends after the 1 s timeout
            await asyncio.sleep(0.05)
            state = home.state(config)
            if state.error is not None and getattr(state, "down_until", 1.0) > 0:
                break
        calls = fake.calls["discovery"]
        statuses, slowest = await _parallel_starts(client, 15)
        assert statuses == [503] * 15 and slowest < 0.5  # no call: well under the timeout
        assert fake.calls["discovery"] == calls
    finally:
        retry.cancel()
        await asyncio.gather(retry, return_exceptions=True)


# -- 5. what an anonymous start may leave in the store ------------------------------------


@pytest.mark.parametrize(("length", "kept"), [(500, True), (513, False), (2000, False)])
async def test_a_long_next_is_not_kept_with_the_start_and_the_sign_in_lands_on_slash(
    start: Start, http: ClientSession, length: int, kept: bool
) -> None:
    client = await start()
    next_path = "/" + "a" * (length - 1)
    location, browser = await hostile.begin(client, next_path)
    response = await hostile.callback(client, await hostile.authorize(http, location), browser)
    assert response.status == 303
    assert response.headers["Location"] == (next_path if kept else "/")


async def test_sign_ins_started_are_counted_per_ipv6_64_not_per_address(
    make_gateway: GatewayFactory, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.oidc.flow.START_LIMIT", 3)
    client = await make_gateway(
        "trusted_proxies: [127.0.0.1/32]\nlogin:\n  providers:\n"
        + hostile.providers_yaml(fake.issuer)
    )

    async def start_from(address: str) -> int:
        headers = {"X-Forwarded-For": address}
        response = await client.get("/login/corp?next=/x", headers=headers, allow_redirects=False)
        return response.status

    # one host, a new address of its /64 for each start
    statuses = [await start_from(f"2001:db8:1:2::{n:x}") for n in range(1, 6)]
    assert statuses == [302, 302, 302, 429, 429]
    assert await start_from("2001:db8:1:3::1") == 302  # the next /64 is someone else
    assert [await start_from(f"192.0.2.{n}") for n in (1, 2, 3, 4)] == [302] * 4


# -- 6. an https issuer's endpoints are all https -------------------------------------------


def _document(issuer: str, **endpoints: str) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/jwks",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "end_session_endpoint": f"{issuer}/end-session",
        **endpoints,
    }


ENDPOINTS = [
    "authorization_endpoint",
    "token_endpoint",
    "jwks_uri",
    "userinfo_endpoint",
    "end_session_endpoint",
]


@pytest.mark.parametrize("name", ENDPOINTS)
@pytest.mark.parametrize("url", ["http://127.0.0.1:9/x", "http://localhost/x", "http://[::1]/x"])
def test_an_https_issuers_document_naming_a_loopback_http_endpoint_is_refused(
    name: str, url: str
) -> None:
    issuer = "https://idp.example.com"
    with pytest.raises(ProviderUnavailable, match=f"{name} is not https like the issuer"):
        parse_metadata(_document(issuer, **{name: url}), issuer)
    assert parse_metadata(_document(issuer), issuer).token_endpoint == f"{issuer}/token"


def test_a_loopback_http_issuer_may_name_loopback_http_endpoints() -> None:
    issuer = "http://127.0.0.1:8080"
    metadata = parse_metadata(_document(issuer, jwks_uri="http://localhost:8081/k"), issuer)
    assert metadata.jwks_uri == "http://localhost:8081/k"
    with pytest.raises(ProviderUnavailable):
        parse_metadata(_document(issuer, token_endpoint="http://10.0.0.1/token"), issuer)


# -- 7. two tabs, and a logout retried -------------------------------------------------------


async def test_two_tabs_of_one_browser_signing_in_at_once_both_finish(
    start: Start, http: ClientSession
) -> None:
    client = await start()
    # a browser's cookie jar: it sends each cookie only where its Path says
    async with ClientSession(
        str(client.make_url("")), cookie_jar=CookieJar(unsafe=True)
    ) as browser:
        locations = []
        for next_path in ("/one", "/two"):
            response = await browser.get(f"/login/corp?next={next_path}", allow_redirects=False)
            assert response.status == 302
            locations.append(response.headers["Location"])
        for location, next_path in zip(locations, ("/one", "/two"), strict=True):
            path_qs = await hostile.authorize(http, location)
            response = await browser.get(path_qs, headers=hostile.HTML, allow_redirects=False)
            assert response.status == 303, await response.text()
            assert response.headers["Location"] == next_path


async def test_a_logout_the_store_failed_to_end_still_logs_out_at_the_provider_when_retried(
    start: Start, fake: FakeProvider, http: ClientSession, redis_server: RedisServer
) -> None:
    client = await start(store=redis_server.url)
    session = hostile.session_of(await hostile.sign_in(client, http))
    headers = {**hostile.cookies(session), **hostile.HTML, "Origin": SAME_ORIGIN}
    admin = redis.Redis(port=redis_server.port)
    admin.execute_command("ACL", "SETUSER", "default", "-evalsha", "-eval")  # type: ignore[no-untyped-call]
    try:  # ending the family fails: the logout is a 503, to be retried
        response = await client.post("/logout", headers=headers, allow_redirects=False)
        assert response.status == 503
    finally:
        admin.execute_command("ACL", "SETUSER", "default", "+@all")  # type: ignore[no-untyped-call]
        admin.close()
    retry = await client.post("/logout", headers=headers, allow_redirects=False)
    assert retry.status == 303
    assert retry.headers["Location"].startswith(f"{fake.issuer}/end-session?")
    assert (await client.get("/api/x", headers=hostile.cookies(session))).status == 401
