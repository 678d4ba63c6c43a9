"""Per-route decisions: public, required, optional, deny, roles; redirect vs 401 negotiation."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import GatewayFactory, mint, raw_request, received

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


async def test_browser_navigation_without_session_is_redirected_to_login(
    make_gateway: GatewayFactory,
) -> None:
    client = await make_gateway()
    response = await client.get(
        "/dashboard/a?x=1&y=2", headers={"Accept": BROWSER_ACCEPT}, allow_redirects=False
    )
    assert response.status == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == "/login"
    assert parse_qs(location.query)["next"] == ["/dashboard/a?x=1&y=2"]
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("GET", {"Accept": "application/json"}),
        ("GET", {"Accept": "*/*"}),
        ("GET", {}),
        ("GET", {"Accept": BROWSER_ACCEPT, "X-Requested-With": "XMLHttpRequest"}),
        ("GET", {"Accept": "application/json, text/html;q=0.5"}),
        ("POST", {"Accept": BROWSER_ACCEPT}),
        ("DELETE", {"Accept": BROWSER_ACCEPT}),
    ],
)
async def test_programs_get_401_json(
    make_gateway: GatewayFactory, method: str, headers: dict[str, str]
) -> None:
    client = await make_gateway()
    response = await client.request(method, "/dashboard", headers=headers, allow_redirects=False)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert await response.json() == {"error": "unauthorized", "login": "/login"}


async def test_head_navigation_is_a_browser_navigation(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()
    response = await client.head(
        "/dashboard", headers={"Accept": BROWSER_ACCEPT}, allow_redirects=False
    )
    assert response.status == 302


async def test_on_unauthenticated_status_and_redirect_override_negotiation(
    make_gateway: GatewayFactory,
) -> None:
    client = await make_gateway()
    api = await client.get("/api/x", headers={"Accept": BROWSER_ACCEPT}, allow_redirects=False)
    assert api.status == 401
    web = await client.get("/web/x", headers={"Accept": "application/json"}, allow_redirects=False)
    assert web.status == 302


async def test_role_missing_is_403_role_present_passes(
    make_gateway: GatewayFactory, secret: str
) -> None:
    client = await make_gateway()
    viewer = mint(secret, roles=["viewer"])
    assert (await client.get("/admin/x", cookies={"access_token": viewer})).status == 403
    admin = mint(secret, roles=["viewer", "admin"])
    response = await client.get("/admin/x", cookies={"access_token": admin})
    assert response.status == 200
    assert received(await response.json())["x-user-roles"] == ["viewer,admin"]


async def test_deny_route_is_403_for_everyone(make_gateway: GatewayFactory, secret: str) -> None:
    client = await make_gateway()
    assert (await client.get("/internal/x")).status == 403
    assert (await client.get("/internal/x", cookies={"access_token": mint(secret)})).status == 403


async def test_optional_route_forwards_identity_when_present_and_never_redirects(
    make_gateway: GatewayFactory, secret: str
) -> None:
    client = await make_gateway()
    anonymous = await client.get("/maybe/x", headers={"Accept": BROWSER_ACCEPT})
    assert anonymous.status == 200
    assert "x-user-id" not in received(await anonymous.json())
    expired = mint(secret, exp=1, iat=0, nbf=0)
    still = await client.get("/maybe/x", cookies={"access_token": expired})
    assert still.status == 200
    assert "x-user-id" not in received(await still.json())
    known = await client.get("/maybe/x", cookies={"access_token": mint(secret)})
    assert received(await known.json())["x-user-id"] == ["alice"]


async def test_public_route_verifies_nothing(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()
    response = await client.get("/public/x", cookies={"access_token": "garbage"})
    assert response.status == 200
    assert "x-user-id" not in received(await response.json())


async def test_unmatched_path_falls_to_default_required(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()
    assert (await client.get("/anything/else")).status == 401


async def test_default_public_when_configured(make_gateway: GatewayFactory) -> None:
    client = await make_gateway(routes="routes: []\ndefault: public\n")
    assert (await client.get("/anything")).status == 200


async def test_methods_restrict_a_route(make_gateway: GatewayFactory) -> None:
    routes = """
    routes:
      - path: /docs/:path*
        methods: [GET]
        auth: public
    default: required
    """
    client = await make_gateway(routes=routes)
    assert (await client.get("/docs/x")).status == 200
    assert (await client.head("/docs/x")).status == 200
    assert (await client.post("/docs/x")).status == 401


@pytest.mark.parametrize(
    "path",
    [
        "/admin/../admin/x",
        "//admin/x",
        "/%61dmin/x",
        "/ADMIN/x",
        "/Admin/",
        "/admin",
        "/public/../admin/x",
        "/public/%2e%2e/admin/x",
    ],
)
async def test_path_tricks_cannot_reach_admin(
    make_gateway: GatewayFactory, secret: str, path: str
) -> None:
    client = await make_gateway()
    viewer = mint(secret, roles=["viewer"])
    response = await raw_request(client, path, headers={"Cookie": f"access_token={viewer}"})
    assert response.status == 403, path
    anonymous = await raw_request(client, path)
    assert anonymous.status == 401, path


@pytest.mark.parametrize(
    "path",
    ["/admin%2Fx", "/admin;x", "/public/..;/admin/x", "/admin%5cx", "/%2e%2e/admin", "/a%00"],
)
async def test_ambiguous_paths_get_400(make_gateway: GatewayFactory, path: str) -> None:
    client = await make_gateway()
    response = await raw_request(client, path)
    assert response.status == 400, path
    assert json.loads(response.body)["error"] == "bad_request"


async def test_normalized_path_is_what_the_upstream_receives(
    make_gateway: GatewayFactory, secret: str
) -> None:
    client = await make_gateway()
    response = await raw_request(client, "/public/a/../b//c/%7Ed?q=%2F..%2F&x=1")
    assert json.loads(response.body)["path"] == "/public/b/c/~d?q=%2F..%2F&x=1"


async def test_query_string_never_takes_part_in_matching(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()
    assert (await client.get("/dashboard?/public/x")).status == 401
    assert (await client.get("/public/x?/admin/")).status == 200


async def test_login_and_logout_paths_are_never_proxied(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()
    for path in ("/login", "/logout"):
        response = await client.get(path)
        assert response.status == 404
        assert "path" not in await response.json()  # the echo upstream was not reached
