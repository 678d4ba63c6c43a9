"""The matcher: Next.js (path-to-regexp v6) patterns, order, methods, shadowing."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.routing import Route, RouteTable, compile_pattern, default_route, shadowing

# (pattern, path, matches) -- what Next.js's matcher does with the same pattern.
NEXTJS_CASES = [
    ("/dashboard/:path*", "/dashboard", True),
    ("/dashboard/:path*", "/dashboard/", True),
    ("/dashboard/:path*", "/dashboard/a", True),
    ("/dashboard/:path*", "/dashboard/a/b/c", True),
    ("/dashboard/:path*", "/dashboardx", False),
    ("/dashboard/:path*", "/dash", False),
    ("/dashboard/:path*", "/DASHBOARD/Settings", True),
    ("/about/:path+", "/about", False),
    ("/about/:path+", "/about/a", True),
    ("/about/:path+", "/about/a/b", True),
    ("/users/:id", "/users/42", True),
    ("/users/:id", "/users/42/", True),
    ("/users/:id", "/users", False),
    ("/users/:id", "/users/42/edit", False),
    ("/docs/:slug?", "/docs", True),
    ("/docs/:slug?", "/docs/intro", True),
    ("/docs/:slug?", "/docs/intro/more", False),
    ("/a/:x/b/:y", "/a/1/b/2", True),
    ("/a/:x/b/:y", "/a/1/b", False),
    ("/files/:name.:ext", "/files/report.pdf", True),
    ("/files/:name.:ext", "/files/report", False),
    ("/static/:file(.*\\.js)", "/static/app.js", True),
    ("/static/:file(.*\\.js)", "/static/app.css", False),
    ("/v:major(\\d+)/ping", "/v2/ping", True),
    ("/v:major(\\d+)/ping", "/vx/ping", False),
    ("/shop{/:category}?", "/shop", True),
    ("/shop{/:category}?", "/shop/shoes", True),
    ("/shop{-:category}?", "/shop-shoes", True),
    ("/:path*", "/", True),
    ("/:path*", "/anything/at/all", True),
    ("/", "/", True),
    ("/", "/x", False),
    ("/_next/static/:path*", "/_next/static/chunks/main.js", True),
    ("/api/(.*)", "/api/users", True),
    ("/api/(.*)", "/api", False),
    ("/a\\:b", "/a:b", True),
    ("/exact", "/exact", True),
    ("/exact", "/exact/more", False),
]


@pytest.mark.parametrize(("pattern", "path", "expected"), NEXTJS_CASES)
def test_nextjs_pattern_semantics(pattern: str, path: str, expected: bool) -> None:
    assert bool(compile_pattern(pattern).match(path)) is expected


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("dashboard", "must start with '/'"),
        ("/users/:", "missing parameter name"),
        ("/x/(unclosed", "unbalanced"),
        ("/x/(a(b))", "capturing groups"),
        ("/x/{:id", "'}'"),
        ("/x/()", "missing pattern"),
    ],
)
def test_bad_patterns_are_refused_with_a_reason(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        compile_pattern(pattern)


def _route(index: int, source: str, **kw: Any) -> Route:
    is_regex = bool(kw.pop("is_regex", False))
    regex = re.compile(source, re.I) if is_regex else compile_pattern(source)
    return Route(index=index, source=source, line=index + 1, regex=regex, is_regex=is_regex, **kw)


def test_first_match_wins_then_default() -> None:
    table = RouteTable(
        (
            _route(0, "/admin/public", auth="public"),
            _route(1, "/admin/:path*", roles=frozenset({"admin"})),
            _route(2, "/api/:path*", methods=frozenset({"GET", "HEAD"}), auth="public"),
        ),
        default_route("required"),
    )
    assert table.match("GET", "/admin/public").index == 0
    assert table.match("GET", "/admin/other").index == 1
    assert table.match("GET", "/api/x").index == 2
    assert table.match("HEAD", "/api/x").index == 2
    assert table.match("POST", "/api/x").source == "(default)"
    assert table.match("GET", "/elsewhere").auth == "required"


def test_regex_routes_search_and_ignore_case() -> None:
    route = _route(0, "^/v[0-9]+/", is_regex=True)
    assert route.matches("GET", "/v1/users")
    assert route.matches("GET", "/V2/x")
    assert not route.matches("GET", "/api/v1/x")


@pytest.mark.parametrize(
    ("earlier", "later", "shadowed"),
    [
        ("/:path*", "/anything", True),
        ("/:path*", "/a/:id", True),
        ("/api/:path*", "/api/users", True),
        ("/api/:path*", "/api", True),
        ("/api/:path*", "/api/:id", True),
        ("/api/:path+", "/api", False),
        ("/api/:path+", "/api/users", True),
        ("/api/:path*", "/apix", False),
        ("/api/:path*", "/API/:rest*", True),
        ("/users/:id", "/users/:id", True),
        ("/users/:id", "/users/me", True),
        ("/users/:id", "/users/:id/edit", False),
        ("/a", "/b", False),
    ],
)
def test_shadowed_routes_are_detected(earlier: str, later: str, shadowed: bool) -> None:
    assert shadowing(_route(0, earlier), _route(1, later)) is shadowed


def test_method_restricted_route_does_not_shadow_all_methods() -> None:
    earlier = _route(0, "/:path*", methods=frozenset({"GET", "HEAD"}))
    assert not shadowing(earlier, _route(1, "/x"))
    assert shadowing(earlier, _route(1, "/x", methods=frozenset({"GET"})))


def test_literal_route_shadowed_by_earlier_regex() -> None:
    assert shadowing(_route(0, "^/static/", is_regex=True), _route(1, "/static/app.js"))
    assert not shadowing(_route(0, "^/static/", is_regex=True), _route(1, "/other"))
    # '/health' also matches '/health/', which '^/health$' does not
    assert not shadowing(_route(0, "^/health$", is_regex=True), _route(1, "/health"))
    assert shadowing(_route(0, "^/health/?$", is_regex=True), _route(1, "/health"))


def test_parameter_glued_to_a_literal_is_not_under_that_directory() -> None:
    assert not shadowing(_route(0, "/api/:path*"), _route(1, "/api:version"))
    assert shadowing(_route(0, "/api/:path*"), _route(1, "/api/v:version"))


_TABLE = RouteTable(
    (
        _route(0, "/api/:path*", methods=frozenset({"POST"})),
        _route(1, "^/api/v\\d+/", is_regex=True),
        _route(2, "/users/:id", methods=frozenset({"GET", "HEAD"})),
        _route(3, "admin", is_regex=True),
        _route(4, "/files/:name.:ext"),
    ),
    default_route("deny"),
)
_SEGMENTS = st.sampled_from(["api", "v1", "v2", "users", "42", "admin", "files", "a.pdf", "x"])


@settings(max_examples=400, deadline=None)
@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "DELETE"]),
    segments=st.lists(_SEGMENTS, max_size=4),
)
def test_the_table_picks_the_first_route_that_matches(method: str, segments: list[str]) -> None:
    """RouteTable.match has Route.matches written out: both must pick the same route."""
    path = "/" + "/".join(segments)
    expected = next((r for r in _TABLE.routes if r.matches(method, path)), _TABLE.default)
    assert _TABLE.match(method, path) is expected
