"""One table of requests, decided through every door: `authorize`, the proxy, `explain`.

Each row is a request and the decision the gateway must reach. The same row goes
through `decision.authorize` directly, through the running proxy (status, and
whether the upstream was reached), and through `gateway explain`'s report, all
sharing one store, so a door that decides differently fails here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.decision import authorize
from gateway.explain import report
from gateway.paths import normalize
from gateway.view import RequestView
from tests.conftest import GatewayFactory, mint, runtime_of

BROWSER = {"Accept": "text/html"}
SITE = "app.example"
STATUS = {
    "public": 200,
    "allow": 200,
    "anonymous": 200,
    "deny": 403,
    "forbidden": 403,
    "cross_site": 403,
    "redirect": 302,
    "unauthorized": 401,
}
# what explain's "decision:" line starts with, per decision
EXPLAINED = {
    "public": "forward (public",
    "allow": "forward with identity",
    "anonymous": "forward without identity",
    "deny": "403 (route denies",
    "forbidden": "403 (authenticated, but lacks",
    "cross_site": "403 (a state change",
    "redirect": "302 to /login?next=...",
    "unauthorized": "401 JSON",
}


@dataclass(frozen=True)
class Row:
    name: str
    method: str
    path: str
    decision: str
    token: str = ""  # "admin", "viewer", "expired", "revoked", "" (none)
    cookie: bool = False  # the token in the access cookie instead of Authorization
    origin: str | None = None
    browser: bool = False


TABLE = [
    Row("public route, anonymous", "GET", "/public/x", "public"),
    Row("public route ignores a bad token", "GET", "/public/x", "public", token="expired"),
    Row("deny route, admin", "GET", "/internal/x", "deny", token="admin"),
    Row("deny route, anonymous", "GET", "/internal/x", "deny"),
    Row("role route, admin", "GET", "/admin/x", "allow", token="admin"),
    Row("role route, viewer", "GET", "/admin/x", "forbidden", token="viewer"),
    Row("role route, anonymous program", "GET", "/admin/x", "unauthorized"),
    Row("role route, anonymous browser", "GET", "/admin/x", "redirect", browser=True),
    Row("dot segments resolved first", "GET", "/public/../admin/x", "forbidden", token="viewer"),
    Row("encoded letters decoded first", "GET", "/%61dmin/x", "unauthorized"),
    Row("case ignored", "GET", "/ADMIN/x", "unauthorized"),
    Row("status route never redirects", "GET", "/api/x", "unauthorized", browser=True),
    Row("redirect route always redirects", "POST", "/web/x", "redirect"),
    Row("optional route, anonymous", "GET", "/maybe/x", "anonymous"),
    Row("optional route, viewer", "GET", "/maybe/x", "allow", token="viewer"),
    Row("expired token is unauthenticated", "GET", "/api/x", "unauthorized", token="expired"),
    Row("expired token never forbidden", "GET", "/admin/x", "unauthorized", token="expired"),
    Row("revoked token", "GET", "/api/x", "unauthorized", token="revoked"),
    Row("revoked token on optional route", "GET", "/maybe/x", "anonymous", token="revoked"),
    Row("default route required", "GET", "/elsewhere", "allow", token="viewer"),
    Row(
        "cross-site POST with our cookie",
        "POST",
        "/api/x",
        "cross_site",
        token="admin",
        cookie=True,
        origin="https://evil.example",
    ),
    Row(
        "same-site POST with our cookie",
        "POST",
        "/api/x",
        "allow",
        token="admin",
        cookie=True,
        origin=f"https://{SITE}",
    ),
    Row(
        "cross-site POST with a bearer token (no cookie a browser would attach)",
        "POST",
        "/api/x",
        "allow",
        token="admin",
        origin="https://evil.example",
    ),
    Row(
        "cross-site POST to a public route",
        "POST",
        "/public/x",
        "public",
        token="admin",
        cookie=True,
        origin="https://evil.example",
    ),
]


@pytest.fixture
async def doors(make_gateway: GatewayFactory, secret: str) -> dict[str, Any]:
    client = await make_gateway()
    runtime = runtime_of(client)
    revoked = mint(secret, sub="carol", roles=["viewer"], iat=int(time.time()) - 5)
    await runtime.snapshot.sessions.revoke_user("carol")
    tokens = {
        "admin": mint(secret, roles=["admin"]),
        "viewer": mint(secret, roles=["viewer"]),
        "expired": mint(secret, exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
        "revoked": revoked,
    }
    return {"client": client, "runtime": runtime, "tokens": tokens}


def _headers(row: Row, token: str, cookie_name: str) -> dict[str, str]:
    headers = {"Host": SITE, **(BROWSER if row.browser else {})}
    if token and row.cookie:
        headers["Cookie"] = f"{cookie_name}={token}"
    elif token:
        headers["Authorization"] = f"Bearer {token}"
    if row.origin:
        headers["Origin"] = row.origin
    return headers


@pytest.mark.parametrize("row", TABLE, ids=[r.name for r in TABLE])
async def test_every_door_decides_alike(doors: dict[str, Any], row: Row) -> None:
    client, runtime = doors["client"], doors["runtime"]
    snapshot = runtime.snapshot
    config = snapshot.config
    token = doors["tokens"].get(row.token, "")
    headers = _headers(row, token, config.cookies.access)

    # door 1: the decision function itself
    path = normalize(row.path)
    view = RequestView(
        method=row.method,
        raw_path=row.path,
        path=path,
        query="",
        host=SITE,
        scheme="http",
        client="127.0.0.1",
        headers=CIMultiDictProxy(CIMultiDict(headers)),
    )
    verdict = await authorize(view, snapshot)
    assert verdict.decision == row.decision

    # door 2: the proxy, over HTTP (the upstream echoes what it received)
    response = await client.request(row.method, row.path, headers=headers, allow_redirects=False)
    assert response.status == STATUS[row.decision]
    reached = response.status == 200 and "headers" in await response.json()
    assert reached == verdict.passes

    # door 3: gateway explain, with the same store
    lines = await report(
        config,
        runtime.store,
        row.method,
        row.path,
        token=token or None,
        as_cookie=row.cookie,
        host=SITE,
        origin=row.origin,
        browser=row.browser,
    )
    decision_line = next(line for line in lines if line.startswith("  decision: "))
    assert decision_line.removeprefix("  decision: ").startswith(EXPLAINED[row.decision])


async def test_explain_reports_revocation_asked_of_a_redis_store(
    make_gateway: GatewayFactory, secret: str, redis_url: str
) -> None:
    client = await make_gateway(extra=f"store: {redis_url}\n")
    runtime = runtime_of(client)
    user = f"dora-{time.time_ns()}"
    token = mint(secret, sub=user, roles=["viewer"], iat=int(time.time()) - 5)
    before = await report(runtime.snapshot.config, runtime.store, "GET", "/api/x", token=token)
    assert "  revoked:  no (asked the store)" in before
    await runtime.snapshot.sessions.revoke_user(user)
    after = await report(runtime.snapshot.config, runtime.store, "GET", "/api/x", token=token)
    assert any(line.startswith("  revoked:  yes") for line in after)
    assert "  decision: 401 JSON" in after
