"""Sign-in, refresh rotation, logout and revocation through a real gateway on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.config import CookiesConfig
from gateway.cookies import clearing_cookies, session_cookies
from tests.conftest import (
    SAME_ORIGIN,
    Client,
    GatewayFactory,
    free_port,
    hash_of,
    mint,
    received,
    runtime_of,
    session_extra,
)
from tests.helpers import FORM_HEADERS, cookie_header, set_cookies, sign_in


@pytest.fixture
async def gateway(make_gateway: GatewayFactory, tmp_path: Path) -> Client:
    return await make_gateway(session_extra(tmp_path))


# -- the login page ---------------------------------------------------------------------


async def test_login_page_is_a_form_with_the_next_path_escaped(gateway: Client) -> None:
    response = await gateway.get("/login", params={"next": '/x"><script>alert(1)</script>'})
    assert response.status == 200
    body = await response.text()
    assert '<form method="post" action="/login">' in body
    assert "<script>alert(1)" not in body
    assert 'value="/x&#34;&gt;&lt;script&gt;' in body
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"


async def test_sign_in_sets_both_cookies_and_sends_the_browser_back(gateway: Client) -> None:
    response = await gateway.post(
        "/login",
        data={"username": "alice", "password": "wonderland", "next": "/dashboard?tab=2"},
        headers=FORM_HEADERS,
        allow_redirects=False,
    )
    assert response.status == 303
    assert response.headers["Location"] == "/dashboard?tab=2"
    cookies = set_cookies(response)
    access, refresh = cookies["access_token"], cookies["refresh_token"]
    for cookie in (access, refresh):
        assert cookie["httponly"] is True and cookie["path"] == "/"
        assert cookie["samesite"] == "Lax"
        assert "secure" not in cookie  # the test config says secure: false
    assert access["max-age"] == "900" and refresh["max-age"] == str(14 * 86400)
    page = await gateway.get("/dashboard", headers=cookie_header({"access_token": access["value"]}))
    seen = received(await page.json())
    assert seen["x-user-id"] == ["alice"] and seen["x-user-roles"] == ["admin"]
    assert "access_token" not in seen.get("cookie", [""])[0]


def test_cookie_attributes_follow_the_config() -> None:
    config = CookiesConfig(secure=True, same_site="strict", path="/app", domain="example.com")
    set_, clear = session_cookies(config, "A", 60, "R", 3600), clearing_cookies(config)
    assert set_ == [
        ("Set-Cookie", "access_token=A; Max-Age=60; Path=/app; Domain=example.com; HttpOnly;"
         " Secure; SameSite=Strict"),
        ("Set-Cookie", "refresh_token=R; Max-Age=3600; Path=/app; Domain=example.com; HttpOnly;"
         " Secure; SameSite=Strict"),
    ]  # fmt: skip
    # a clearing cookie repeats every attribute, or the browser keeps the original
    assert clear[0][1].replace("=;", "=A;", 1) == set_[0][1].replace("60", "0")


async def test_json_sign_in(gateway: Client) -> None:
    response = await gateway.post(
        "/login",
        json={"username": "bob", "password": "builder", "next": "/api/me"},
        headers=FORM_HEADERS,
        allow_redirects=False,
    )
    assert response.status == 303 and response.headers["Location"] == "/api/me"
    access = set_cookies(response)["access_token"]["value"]
    who = await gateway.get("/api/me", headers={"Authorization": f"Bearer {access}"})
    assert received(await who.json())["x-user-id"] == ["bob"]


async def test_wrong_password_and_unknown_user_look_the_same(gateway: Client) -> None:
    answers = []
    for user, password in (("alice", "wrong"), ("nobody", "wrong")):
        response = await gateway.post(
            "/login", json={"username": user, "password": password}, headers=FORM_HEADERS
        )
        answers.append((response.status, await response.json(), set_cookies(response)))
    assert answers[0] == answers[1]
    assert answers[0][0] == 401 and answers[0][2] == {}
    page = await gateway.post(
        "/login", data={"username": "nobody", "password": "x"}, headers=FORM_HEADERS
    )
    assert page.status == 401 and "Invalid username or password." in await page.text()


async def test_missing_fields_are_a_bad_request(gateway: Client) -> None:
    for body in ({"username": "alice"}, {"password": "x"}, {"username": ["a"], "password": "x"}):
        response = await gateway.post("/login", json=body, headers=FORM_HEADERS)
        assert response.status == 400
    response = await gateway.post("/login", data=b"junk", headers={"Content-Type": "text/plain"})
    assert response.status == 400


async def test_too_many_failures_get_429_with_retry_after(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    client = await make_gateway(session_extra(tmp_path, login="max_failures: 2"))
    for _ in range(2):
        bad = await client.post(
            "/login", json={"username": "alice", "password": "nope"}, headers=FORM_HEADERS
        )
        assert bad.status == 401
    # now even the right password waits: a guesser cannot tell which attempt was right
    blocked = await client.post(
        "/login", json={"username": "alice", "password": "wonderland"}, headers=FORM_HEADERS
    )
    assert blocked.status == 429
    assert 1 <= int(blocked.headers["Retry-After"]) <= 15 * 60
    other = await client.post(
        "/login",
        json={"username": "bob", "password": "builder"},
        headers=FORM_HEADERS,
        allow_redirects=False,
    )
    assert other.status == 303  # another user from the same client is not locked out


async def test_parallel_guesses_cannot_outrun_the_limit(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """40 wrong passwords at once: each is counted before its check, so only two are judged."""
    client = await make_gateway(session_extra(tmp_path, login="max_failures: 2"))
    answers = await asyncio.gather(
        *(
            client.post(
                "/login", json={"username": "alice", "password": f"guess-{i}"},
                headers=FORM_HEADERS,
            )
            for i in range(40)
        )
    )  # fmt: skip
    statuses = sorted(a.status for a in answers)
    assert statuses.count(401) == 2 and statuses.count(429) == 38


async def test_successful_sign_ins_never_add_up_to_a_lockout(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """A whole office behind one address signs in all morning: never 429."""
    client = await make_gateway(session_extra(tmp_path, login="max_failures: 1"))
    for _ in range(6):  # above the per-client limit (4 x max_failures)
        ok = await client.post(
            "/login",
            json={"username": "bob", "password": "builder"},
            headers=FORM_HEADERS,
            allow_redirects=False,
        )
        assert ok.status == 303


@pytest.mark.parametrize(
    "target",
    [
        "//evil.com",
        "/\\evil.com",
        "https://evil.com",
        "/%0d%0aSet-Cookie:x",
        "javascript:alert(1)",
        "/%2F%2Fevil.com",
        "http:/evil.com",
        "",
    ],
)
async def test_next_never_leaves_the_site(gateway: Client, target: str) -> None:
    response = await gateway.post(
        "/login",
        data={"username": "alice", "password": "wonderland", "next": target},
        headers=FORM_HEADERS,
        allow_redirects=False,
    )
    assert response.status == 303
    assert response.headers["Location"] == "/"
    assert "x" not in set_cookies(response)


async def test_login_from_another_site_is_refused(gateway: Client) -> None:
    for origin in ("https://evil.com", "null"):
        response = await gateway.post(
            "/login",
            data={"username": "alice", "password": "wonderland"},
            headers={"Origin": origin},
            allow_redirects=False,
        )
        assert response.status == 403
        assert set_cookies(response) == {}


async def test_without_a_credential_backend_login_is_not_here(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()
    assert (await client.get("/login")).status == 404


# -- refresh ----------------------------------------------------------------------------


async def test_missing_access_token_is_refreshed_in_the_same_request(gateway: Client) -> None:
    first = await sign_in(gateway)
    response = await gateway.get(
        "/dashboard",
        headers={"Accept": "text/html", **cookie_header({"refresh_token": first["refresh_token"]})},
        allow_redirects=False,
    )
    assert response.status == 200  # no redirect
    assert received(await response.json())["x-user-id"] == ["alice"]
    new = {name: c["value"] for name, c in set_cookies(response).items()}
    assert new["refresh_token"] != first["refresh_token"]
    assert new["access_token"] != first["access_token"]
    assert response.headers["Cache-Control"] == "no-store"
    again = await gateway.get("/api/x", headers=cookie_header(new))
    assert again.status == 200 and set_cookies(again) == {}


async def test_expired_access_token_is_refreshed(gateway: Client, secret: str) -> None:
    first = await sign_in(gateway)
    expired = mint(secret, exp=int(time.time()) - 120, iat=int(time.time()) - 1000)
    response = await gateway.get(
        "/api/x",
        headers=cookie_header({"access_token": expired, "refresh_token": first["refresh_token"]}),
    )
    assert response.status == 200
    assert set(set_cookies(response)) == {"access_token", "refresh_token"}


async def test_parallel_requests_of_one_page_load_all_succeed(gateway: Client) -> None:
    first = await sign_in(gateway)
    stale = cookie_header({"refresh_token": first["refresh_token"]})
    responses = await asyncio.gather(*(gateway.get(f"/api/{i}", headers=stale) for i in range(20)))
    assert [r.status for r in responses] == [200] * 20
    successors = {set_cookies(r)["refresh_token"]["value"] for r in responses}
    assert len(successors) == 1  # every racer was handed the same successor
    # nothing was revoked: the successor keeps working, and rotates again
    (successor,) = successors
    later = await gateway.get("/api/next", headers=cookie_header({"refresh_token": successor}))
    assert later.status == 200
    assert set_cookies(later)["refresh_token"]["value"] != successor


async def test_replay_after_grace_revokes_the_whole_login(
    make_gateway: GatewayFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_gateway(session_extra(tmp_path), tokens="refresh_reuse_grace: 200ms")
    first = await sign_in(client)
    rotated = await client.get(
        "/api/a", headers=cookie_header({"refresh_token": first["refresh_token"]})
    )
    newest = {n: c["value"] for n, c in set_cookies(rotated).items()}
    await asyncio.sleep(0.4)
    with caplog.at_level(logging.WARNING, logger="gateway.security"):
        replay = await client.get(
            "/api/b", headers=cookie_header({"refresh_token": first["refresh_token"]})
        )
    assert replay.status == 401
    cleared = set_cookies(replay)
    assert cleared["refresh_token"]["max-age"] == "0" and cleared["access_token"]["max-age"] == "0"
    events = [r for r in caplog.records if getattr(r, "event", "") == "refresh_reuse"]
    assert len(events) == 1 and vars(events[0])["user"] == "alice"
    # the newest refresh token of that login is dead, and so is its access token
    for cookies in (
        {"refresh_token": newest["refresh_token"]},
        {"access_token": newest["access_token"]},
    ):
        dead = await client.get("/api/c", headers=cookie_header(cookies))
        assert dead.status == 401


async def test_a_refresh_token_is_never_an_access_token(gateway: Client) -> None:
    first = await sign_in(gateway)
    for headers in (
        cookie_header({"access_token": first["refresh_token"]}),
        {"Authorization": f"Bearer {first['refresh_token']}"},
    ):
        response = await gateway.get("/api/x", headers=headers)
        assert response.status == 401
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


async def test_removed_user_cannot_refresh(make_gateway: GatewayFactory, tmp_path: Path) -> None:
    client = await make_gateway(session_extra(tmp_path))
    first = await sign_in(client, "bob", "builder")
    users = runtime_of(client).snapshot.config.login.users
    assert users is not None and isinstance(users.users, dict)
    del users.users["bob"]  # what a users-file reload without bob will do
    response = await client.get(
        "/api/x", headers=cookie_header({"refresh_token": first["refresh_token"]})
    )
    assert response.status == 401


# -- logout and revocation --------------------------------------------------------------


async def test_logout_ends_the_session_and_clears_cookies(gateway: Client) -> None:
    cookies = await sign_in(gateway)
    response = await gateway.post(
        "/logout", headers={**FORM_HEADERS, **cookie_header(cookies)}, allow_redirects=False
    )
    assert response.status == 303 and response.headers["Location"] == "/login"
    cleared = set_cookies(response)
    for name in ("access_token", "refresh_token"):
        assert cleared[name]["max-age"] == "0" and cleared[name]["value"] == ""
        assert cleared[name]["path"] == "/" and cleared[name]["httponly"] is True
        assert cleared[name]["samesite"] == "Lax"
    for alone in (
        {"access_token": cookies["access_token"]},
        {"refresh_token": cookies["refresh_token"]},
    ):
        after = await gateway.get("/api/x", headers=cookie_header(alone))
        assert after.status == 401
    bearer = await gateway.get(
        "/api/x", headers={"Authorization": f"Bearer {cookies['access_token']}"}
    )
    assert bearer.status == 401


async def test_logout_by_get_only_from_the_same_site(gateway: Client) -> None:
    cookies = await sign_in(gateway)
    cross = await gateway.get(
        "/logout",
        headers={"Sec-Fetch-Site": "cross-site", **cookie_header(cookies)},
        allow_redirects=False,
    )
    assert cross.status == 403
    still = await gateway.get("/api/x", headers=cookie_header(cookies))
    assert still.status == 200
    same = await gateway.get(
        "/logout",
        headers={"Sec-Fetch-Site": "same-origin", **cookie_header(cookies)},
        allow_redirects=False,
    )
    assert same.status == 303
    assert (await gateway.get("/api/x", headers=cookie_header(cookies))).status == 401


async def test_revoke_user_refuses_tokens_issued_before(gateway: Client) -> None:
    alice = await sign_in(gateway)
    bob = await sign_in(gateway, "bob", "builder")
    sessions = runtime_of(gateway).snapshot.sessions
    assert await sessions.revoke_user("alice") == 1
    for cookies in (
        {"access_token": alice["access_token"]},
        {"refresh_token": alice["refresh_token"]},
    ):
        assert (await gateway.get("/api/x", headers=cookie_header(cookies))).status == 401
    assert (await gateway.get("/api/x", headers=cookie_header(bob))).status == 200
    fresh = await sign_in(gateway)  # signing in again right away works
    assert (await gateway.get("/api/x", headers=cookie_header(fresh))).status == 200


# -- cross-site requests ----------------------------------------------------------------


async def test_cross_site_state_change_with_cookies_is_refused(gateway: Client) -> None:
    cookies = await sign_in(gateway)
    cases = [
        ({"Origin": "https://evil.com"}, 403),
        ({"Origin": "null"}, 403),
        ({"Referer": "https://evil.com/page"}, 403),
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Origin": SAME_ORIGIN}, 200),
        ({"Referer": SAME_ORIGIN + "/form"}, 200),
        ({}, 200),  # no browser sends a cross-site POST without Origin
    ]
    for headers, status in cases:
        response = await gateway.post("/api/x", headers={**headers, **cookie_header(cookies)})
        assert response.status == status, headers
    safe = await gateway.get(
        "/api/x", headers={"Origin": "https://evil.com", **cookie_header(cookies)}
    )
    assert safe.status == 200
    bearer = await gateway.post(
        "/api/x",
        headers={
            "Origin": "https://spa.example",
            "Authorization": f"Bearer {cookies['access_token']}",
        },
    )
    assert bearer.status == 200  # a bearer token is not sent by the browser on its own


async def test_cross_site_websocket_with_cookies_is_refused(gateway: Client) -> None:
    cookies = await sign_in(gateway)
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await gateway.ws_connect(
            "/ws", headers={"Origin": "https://evil.com", **cookie_header(cookies)}
        )
    assert caught.value.status == 403


async def test_websocket_is_closed_soon_after_logout(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    client = await make_gateway(session_extra(tmp_path), tokens="access_ttl: 2s")
    cookies = await sign_in(client)
    ws = await client.ws_connect("/ws", headers={"Origin": SAME_ORIGIN, **cookie_header(cookies)})
    assert json.loads((await ws.receive(timeout=5)).data)["x-user-id"] == "alice"
    await ws.send_str("hello")
    assert (await ws.receive(timeout=5)).data == "echo:hello"
    await client.post("/logout", headers={**FORM_HEADERS, **cookie_header(cookies)})
    message = await ws.receive(timeout=30)
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION


# -- the store down ---------------------------------------------------------------------


async def test_store_down_fails_closed_with_503(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    client = await make_gateway(session_extra(tmp_path, store=dead))
    issuer = runtime_of(client).snapshot.sessions.issuer
    assert issuer is not None
    token = issuer.access("alice", "fam", {}, time.time())[0]
    response = await client.get("/api/x", headers=cookie_header({"access_token": token}))
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    login = await client.post(
        "/login", json={"username": "alice", "password": "wonderland"}, headers=FORM_HEADERS
    )
    assert login.status == 503
    public = await client.get("/public/x")
    assert public.status == 200  # routes that need no store keep working


# -- verify_url -------------------------------------------------------------------------


async def _verify(request: web.Request) -> web.Response:
    if request.content_type != "application/json":  # as Express or Flask would insist
        return web.Response(status=415)
    body = await request.json()
    password = body.get("password")
    if body.get("username") == "carol" and password == "legacy":
        return web.json_response(
            {"sub": "u-42", "email": "carol@example.com", "roles": ["admin"], "exp": 1}
        )
    if password == "boom":
        return web.Response(status=500)
    if password == "odd-roles":
        return web.json_response({"sub": "u-7", "roles": 5})
    if password == "slow":
        await asyncio.sleep(3)
    return web.Response(status=401)


async def test_verify_url_signs_in_against_the_legacy_app(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    legacy_app = web.Application()
    legacy_app.router.add_post("/check", _verify)
    legacy: TestServer = await aiohttp_server(legacy_app)
    client = await make_gateway(
        f"login:\n  verify_url: {legacy.make_url('/check')}\n  verify_timeout: 500ms\n"
    )
    ok = await client.post(
        "/login",
        json={"username": "carol", "password": "legacy"},
        headers=FORM_HEADERS,
        allow_redirects=False,
    )
    assert ok.status == 303
    access = set_cookies(ok)["access_token"]["value"]
    seen = received(
        await (await client.get("/api/x", headers=cookie_header({"access_token": access}))).json()
    )
    assert seen["x-user-id"] == ["u-42"] and seen["x-user-email"] == ["carol@example.com"]
    for password, status in (("wrong", 401), ("boom", 503), ("slow", 503), ("odd-roles", 503)):
        response = await client.post(
            "/login", json={"username": "carol", "password": password}, headers=FORM_HEADERS
        )
        assert response.status == status, password
        assert set_cookies(response) == {}


async def test_issued_access_token_carries_the_claims(gateway: Client, secret: str) -> None:
    cookies = await sign_in(gateway)
    claims = jwt.decode(cookies["access_token"], secret, algorithms=["HS256"], audience="upstream")
    assert {"sub", "iat", "nbf", "exp", "jti", "iss", "aud", "typ", "fam"} <= set(claims)
    assert claims["sub"] == "alice" and claims["typ"] == "access" and claims["iss"] == "gateway"
    assert claims["email"] == "alice@example.com" and claims["roles"] == ["admin"]
    assert claims["exp"] - claims["nbf"] == 900
    refresh = jwt.decode(
        cookies["refresh_token"], secret, algorithms=["HS256"], audience="upstream"
    )
    assert refresh["typ"] == "refresh" and refresh["fam"] == claims["fam"]
    assert refresh["jti"] != claims["jti"]


async def test_bcrypt_hashes_are_accepted(make_gateway: GatewayFactory, tmp_path: Path) -> None:
    digest = bcrypt.hashpw(b"old-app-password", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "legacy.yaml").write_text(f'dave:\n  password_hash: "{digest}"\n  roles: [ops]\n')
    client = await make_gateway(f"login:\n  users_file: {tmp_path / 'legacy.yaml'}\n")
    cookies = await sign_in(client, "dave", "old-app-password")
    seen = received(await (await client.get("/api/x", headers=cookie_header(cookies))).json())
    assert seen["x-user-id"] == ["dave"] and seen["x-user-roles"] == ["ops"]
    wrong = await client.post(
        "/login", json={"username": "dave", "password": "nope"}, headers=FORM_HEADERS
    )
    assert wrong.status == 401


async def test_an_empty_users_file_keeps_sign_in_on_for_nobody(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    (tmp_path / "none.yaml").write_text("# nobody yet\n")
    client = await make_gateway(f"login:\n  users_file: {tmp_path / 'none.yaml'}\n")
    assert (await client.get("/login")).status == 200
    response = await client.post(
        "/login", json={"username": "alice", "password": "x"}, headers=FORM_HEADERS
    )
    assert response.status == 401


async def test_disabled_user_cannot_sign_in(make_gateway: GatewayFactory, tmp_path: Path) -> None:
    digest = hash_of("pw-of-eve")
    (tmp_path / "u.yaml").write_text(f'eve:\n  password_hash: "{digest}"\n  disabled: true\n')
    client = await make_gateway(f"login:\n  users_file: {tmp_path / 'u.yaml'}\n")
    response = await client.post(
        "/login", json={"username": "eve", "password": "pw-of-eve"}, headers=FORM_HEADERS
    )
    assert response.status == 401
    assert (await response.json())["message"] == "Invalid username or password."


async def test_rotated_cookies_reach_the_browser_even_when_the_upstream_is_down(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    client = await make_gateway(
        session_extra(tmp_path), upstream_url=f"http://127.0.0.1:{free_port()}"
    )
    first = await sign_in(client)
    response = await client.get(
        "/api/x", headers=cookie_header({"refresh_token": first["refresh_token"]})
    )
    assert response.status == 502
    rotated = set_cookies(response)
    assert rotated["refresh_token"]["value"] not in ("", first["refresh_token"])
    assert response.headers["X-Request-Id"]


@pytest.mark.parametrize("trusted", [True, False])
async def test_trusted_proxies_tell_clients_apart(
    make_gateway: GatewayFactory, tmp_path: Path, trusted: bool
) -> None:
    more = "trusted_proxies: [127.0.0.1/32]\n" if trusted else ""
    client = await make_gateway(session_extra(tmp_path, login="max_failures: 1", more=more))

    async def attempt(forwarded_for: str) -> int:
        response = await client.post(
            "/login",
            json={"username": "alice", "password": "wrong"},
            headers={**FORM_HEADERS, "X-Forwarded-For": forwarded_for},
        )
        return response.status

    assert await attempt("203.0.113.7") == 401
    assert await attempt("203.0.113.7") == 429
    # a forged entry on the left changes nothing: the hop the proxy saw is on the right
    assert await attempt("198.51.100.1, 203.0.113.7") == 429
    # another client behind the same proxy is its own client only when the proxy is trusted
    assert await attempt("198.51.100.9") == (401 if trusted else 429)
    echo = await client.get("/public/x", headers={"X-Forwarded-Proto": "https"})
    assert received(await echo.json())["x-forwarded-proto"] == ["https" if trusted else "http"]


async def test_the_login_template_is_replaceable(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    (tmp_path / "mine.html").write_text(
        "<h1>ACME sign-in</h1><p class=err>{{ error }}</p>"
        '<form method="post" action="{{ action }}"><input name="next" value="{{ next }}">'
        '<input name="username" value="{{ username }}"></form>\n'
    )
    client = await make_gateway(
        session_extra(tmp_path, login=f"template: {tmp_path / 'mine.html'}")
    )
    page = await client.get("/login", params={"next": "/reports"})
    body = await page.text()
    assert page.status == 200 and "<h1>ACME sign-in</h1>" in body
    assert 'value="/reports"' in body and 'action="/login"' in body
    failed = await client.post(
        "/login",
        data={"username": "<b>x</b>", "password": "nope"},
        headers=FORM_HEADERS,
    )
    text = await failed.text()
    assert failed.status == 401 and "Invalid username or password." in text
    assert "&lt;b&gt;x&lt;/b&gt;" in text and "<b>x</b>" not in text


async def test_logout_without_a_session_still_clears_and_redirects(gateway: Client) -> None:
    response = await gateway.post("/logout", headers=FORM_HEADERS, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/login"
    assert set(set_cookies(response)) == {"access_token", "refresh_token"}
    assert (await gateway.put("/logout", headers=FORM_HEADERS)).status == 405
    assert (await gateway.delete("/login", headers=FORM_HEADERS)).status == 405


async def test_a_revoked_bearer_token_never_reaches_the_upstream(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """On an optional route the request goes on anonymously, without the revoked token:
    an app that also checks it must not accept what the gateway refused."""
    client = await make_gateway(session_extra(tmp_path))
    signin = await client.post(
        "/login",
        json={"username": "alice", "password": "wonderland"},
        headers=FORM_HEADERS,
        allow_redirects=False,
    )
    access = set_cookies(signin)["access_token"]["value"]
    out = await client.post(
        "/logout",
        headers={**FORM_HEADERS, **cookie_header(set_cookies_values(signin))},
        allow_redirects=False,
    )
    assert out.status == 303
    response = await client.get("/maybe/x", headers={"Authorization": f"Bearer {access}"})
    assert response.status == 200
    seen = received(await response.json())
    assert "authorization" not in seen and "x-user-id" not in seen
    # an app's own bearer credential (not a token of ours) still passes on optional routes
    response = await client.get("/maybe/x", headers={"Authorization": "Bearer app-api-key"})
    assert received(await response.json())["authorization"] == ["Bearer app-api-key"]


def set_cookies_values(response: Any) -> dict[str, str]:
    return {name: c["value"] for name, c in set_cookies(response).items()}
