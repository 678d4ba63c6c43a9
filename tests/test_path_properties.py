"""Properties of path normalization (SPEC 7.1 "One path, a fixed point").

The gateway matches on one reading of the path and forwards exactly that
reading. An upstream that decodes and resolves the forwarded path once more
(nginx, Node, Python all decode once) must land on the path that was matched:
so normalization is idempotent, its output decodes to a path without dot
segments or new separators, and no generated path reaches a denied or
role-guarded route anonymously through a real gateway.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway import paths
from gateway.config import load
from gateway.errors import BadPath
from gateway.paths import normalize
from tests.conftest import GatewayFactory, config_text, raw_request, upstream_app, write_config

# Segments that mean something to some server: route names, dots and encoded dots,
# stray and partial escapes, double encoding, encoded separators, raw specials.
BENIGN = [
    "public", "internal", "admin", "maybe", "x", ".", "..", "%2e", "%2E", "%32", "%65",
    "%C3%A9", "%c3%a9", "", "%61dmin", "%69nternal", "%21", "%3B", "%20", "%7e", "%25", "%FF",
]  # fmt: skip
HOSTILE = [
    "%", "%%", "%2", "%252e", "%252E", "%2f", "%2F", "%5c", ";", "é", "%%32%65", "%2%65",
    "%25%32%65", "%00", "\\", "#", " ",
]  # fmt: skip
ATOMS = BENIGN * 2 + HOSTILE  # mostly paths a server might accept, often a hostile piece

segments = st.lists(st.sampled_from(ATOMS), min_size=1, max_size=3).map("".join)
raw_paths = st.builds(
    lambda parts, slash: "/" + "/".join(parts) + slash,
    st.lists(segments, min_size=1, max_size=5),
    st.sampled_from(["", "/"]),
)

# Tricks that worked against earlier normalizers, tried on every run.
KNOWN = [
    "/public/%%32%65%%32%65/admin",
    "/public/%2%65%2%65/internal",
    "/public/%25%32%65%25%32%65/admin",
    "/public/%252e%252e/admin",
    "/public/.%2e/admin",
    "/public/%2e%2E/internal/x",
    "/maybe/..%2fadmin",
    "/public/..;/admin",
    "/%61dmin",
    "/public/%2e%2e%5cadmin",
]

PROPERTY = settings(max_examples=400, deadline=None, database=None)
THROUGH_GATEWAY = settings(max_examples=150, deadline=None, database=None)

# A path segment may hold these raw (RFC 3986 pchar less ';'); escapes of them are decoded.
ALLOWED_RAW = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,=:@"
)


def accepted(raw: str) -> str | None:
    try:
        return normalize(raw)
    except BadPath:
        return None


def decode_once(path: str) -> str:
    """What an upstream that percent-decodes once sees."""
    return unquote(path, encoding="utf-8", errors="replace")


def resolve_dots(path: str) -> list[str]:
    """The segments an upstream ends up with after decoding once and resolving dots,
    treating '\\' as a separator as IIS and some frameworks do."""
    out: list[str] = []
    for segment in re.split(r"[/\\]", decode_once(path)):
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    return out


# -- the rules, case by case ---------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ["/%%32%65", "/%2%65", "/x/%2%65%2%65/admin", "/a%", "/a%2", "/a%%", "/%%2e", "/%g0", "/%2g"],
)
def test_a_percent_not_followed_by_two_hex_digits_is_refused(raw: str) -> None:
    with pytest.raises(BadPath):
        normalize(raw)


@pytest.mark.parametrize(
    "raw", ["/%252e", "/%252E%252E/admin", "/public/%252e%252e/admin", "/%2541", "/a%252fb"]
)
def test_double_encoding_is_refused(raw: str) -> None:
    with pytest.raises(BadPath):
        normalize(raw)


@pytest.mark.parametrize("raw", ["/a%2fb", "/a%2Fb", "/a%5cb", "/a%5Cb", "/a%00b"])
def test_encoded_separators_and_nul_are_refused(raw: str) -> None:
    with pytest.raises(BadPath):
        normalize(raw)


@pytest.mark.parametrize(
    "raw", ["/a;b", "/a\\b", "/a#b", "/a b", "/a\tb", "/a\x00b", "/a\x01b", "/a\x7fb", "/é"]
)
def test_raw_characters_that_servers_read_differently_are_refused(raw: str) -> None:
    with pytest.raises(BadPath):
        normalize(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/%21%24%26%27%28%29%2A%2B%2C%3D%3A%40", "/!$&'()*+,=:@"),
        ("/%2a%2b%2c%3d%3a%40", "/*+,=:@"),
        ("/%41%61%30%2D%2E%5F%7E", "/Aa0-._~"),
    ],
)
def test_escapes_of_characters_allowed_raw_are_decoded(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/%3b", "/%3B"),
        ("/%3f", "/%3F"),
        ("/%23", "/%23"),
        ("/%20", "/%20"),
        ("/%22%3c%3e%7b%7d", "/%22%3C%3E%7B%7D"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/%ff", "/%FF"),
        ("/100%25", "/100%25"),
        ("/%25zz", "/%25zz"),
    ],
)
def test_other_escapes_stay_encoded_with_uppercase_hex(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/a/%2e%2e/b", "/b"),
        ("/a/.%2e/b", "/b"),
        ("/a/%2E./b", "/b"),
        ("/a/%2e/b", "/a/b"),
        ("//a///b", "/a/b"),
        ("/a//./%2e/b", "/a/b"),
    ],
)
def test_dot_segments_resolve_and_empty_segments_collapse(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize("raw", ["/..", "/%2e%2e", "/a/../..", "/a/%2E%2E/.%2e", "/.%2E/x"])
def test_climbing_above_the_root_is_refused(raw: str) -> None:
    with pytest.raises(BadPath):
        normalize(raw)


@pytest.mark.parametrize(
    ("canonical", "expected"),
    [
        ("/caf%C3%A9", "/café"),
        ("/%FF", "/\ufffd"),
        ("/100%25", "/100%"),
        ("/a%3Fb%23c", "/a?b#c"),
        ("/plain", "/plain"),
    ],
)
def test_decoded_is_the_canonical_path_decoded_once(canonical: str, expected: str) -> None:
    assert paths.decoded(canonical) == expected


# -- the properties ------------------------------------------------------------------------


def test_normalization_is_a_fixed_point() -> None:
    """normalize(normalize(p)) == normalize(p), and the result is canonical."""
    checked = [0]

    @PROPERTY
    @given(raw_paths)
    @example("/public/%%32%65%%32%65/admin")
    @example("/public/%25%32%65/x")
    @example("/%2%65%2%65/x")
    def check(raw: str) -> None:
        once = accepted(raw)
        if once is None:
            return
        checked[0] += 1
        assert normalize(once) == once
        assert once.startswith("/") and "//" not in once
        for segment in once.split("/"):
            assert segment not in (".", ".."), once
            for escape in re.findall(r"%(..)", segment):
                assert re.fullmatch("[0-9A-F]{2}", escape), once  # uppercase hex
                char = chr(int(escape, 16))
                assert char not in ALLOWED_RAW, f"{once}: %{escape} should have been decoded"
                assert escape not in ("2F", "5C", "00"), once
            assert set(re.sub(r"%[0-9A-F]{2}", "", segment)) <= ALLOWED_RAW, once

    check()
    assert checked[0] > 50  # enough accepted paths to mean something


def test_an_upstream_that_decodes_once_sees_no_dot_segment_and_no_new_separator() -> None:
    checked = [0]

    @PROPERTY
    @given(raw_paths)
    @example("/public/%%32%65%%32%65/admin")
    @example("/public/%2%65/x")
    def check(raw: str) -> None:
        canonical = accepted(raw)
        if canonical is None:
            return
        checked[0] += 1
        seen = decode_once(canonical)
        assert seen.count("/") == canonical.count("/"), (raw, canonical, seen)
        assert "\\" not in seen, (raw, canonical, seen)
        assert not {".", ".."} & set(seen.split("/")), (raw, canonical, seen)
        # resolving dots changes nothing: the upstream acts on the path that was matched
        assert resolve_dots(canonical) == [s for s in seen.split("/") if s], (raw, seen)

    check()
    assert checked[0] > 50


def test_decoded_agrees_with_decoding_once() -> None:
    @PROPERTY
    @given(raw_paths)
    def check(raw: str) -> None:
        canonical = accepted(raw)
        if canonical is not None:
            assert paths.decoded(canonical) == decode_once(canonical)

    check()


def test_the_route_matched_is_the_route_of_the_path_the_upstream_resolves(
    tmp_path: Path, secret: str
) -> None:
    """Route-table level: the route chosen for the decoded canonical path is the route of
    the path an upstream resolves it to."""
    config = load(write_config(tmp_path, config_text("http://127.0.0.1:9")))
    routes = config.routes

    @PROPERTY
    @given(raw_paths)
    @example("/public/%%32%65%%32%65/admin")
    def check(raw: str) -> None:
        canonical = accepted(raw)
        if canonical is None:
            return
        matched = routes.match("GET", paths.decoded(canonical))
        upstream_view = "/" + "/".join(resolve_dots(canonical))
        assert routes.match("GET", upstream_view).label == matched.label, (raw, canonical)

    check()


# -- through a real gateway ----------------------------------------------------------------


def _recording_upstream(seen: list[str]) -> web.Application:
    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        seen.append(request.raw_path)
        return await handler(request)

    app = upstream_app()
    app.middlewares.append(record)
    return app


async def test_no_generated_path_reaches_a_denied_or_role_route_anonymously(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    seen: list[str] = []
    server: TestServer = await aiohttp_server(_recording_upstream(seen))
    client = await make_gateway(upstream_url=str(server.make_url("")).rstrip("/"))
    loop = asyncio.get_running_loop()

    @THROUGH_GATEWAY
    @given(raw_paths)
    def check(raw: str) -> None:
        before = len(seen)
        future = asyncio.run_coroutine_threadsafe(raw_request(client, raw), loop)
        response = future.result(timeout=30)
        reached = seen[before:]
        assert response.status in (200, 302, 400, 401, 403), (raw, response.status)
        assert b"Traceback" not in response.body
        # the request-line parser takes "GET /x  HTTP/1.1" as /x: trailing spaces never
        # reach the gateway
        canonical = accepted(raw.rstrip(" "))
        if canonical is None:
            assert response.status == 400, (raw, response.status)
        if response.status != 200:
            assert reached == [], (raw, response.status, reached)
            return
        assert reached == [canonical], (raw, reached)
        resolved = resolve_dots(reached[0])
        first = resolved[0].lower() if resolved else ""
        assert first not in ("internal", "admin"), (raw, reached)
        assert first in ("public", "maybe"), (raw, reached)  # the only anonymous routes

    for raw in KNOWN:  # tricks that worked against earlier normalizers: tried on every run
        check = example(raw)(check)
    # Hypothesis drives from a worker thread; requests run on this loop, beside the servers
    await loop.run_in_executor(None, check)


async def test_routes_match_the_decoded_path(make_gateway: GatewayFactory) -> None:
    routes = "routes:\n  - path: /café/:path*\n    auth: deny\ndefault: public\n"
    client = await make_gateway(routes=routes)
    for target in ("/caf%C3%A9/x", "/caf%c3%a9/", "/CAF%C3%A9/x/y", "/x/../caf%C3%A9"):
        response = await raw_request(client, target)
        assert response.status == 403, target
    assert (await raw_request(client, "/cafe/x")).status == 200
