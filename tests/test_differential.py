"""A faithful proxy (SPEC §7.1), judged by real upstreams with their own HTTP parsers.

Each of nginx, Node's `http` and Python's `http.server` sits behind its own
in-process gateway, with a recording relay in between. Attacks go in as raw
bytes; `tests.differential.harness` then checks that every upstream received
exactly the requests the gateway decided on (framing), executed them under the
route the gateway matched (path), and saw none of the headers the gateway
must strip (headers). Run just these with `pytest -m differential`.
"""

from __future__ import annotations

import asyncio
import gzip
import secrets
import struct
import zlib
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from gateway.config import load
from gateway.runtime import Runtime
from tests.conftest import SECRET_ENV, GatewayTestServer, config_text, mint
from tests.differential import upstreams
from tests.differential.harness import (
    ADMIN,
    ANONYMOUS,
    CLIENT_HOST,
    METHOD_OVERRIDES,
    STRIPPED,
    URL_OVERRIDES,
    VIEWER,
    Case,
    Identity,
    Outcome,
    Request,
    Stack,
    check,
    describe,
    problems_of,
    run,
)
from tests.differential.recorder import Relay, WireError, parse_requests

pytestmark = [pytest.mark.differential, pytest.mark.asyncio(loop_scope="module")]

IDENTITIES = (ANONYMOUS, VIEWER, ADMIN)
FEW = settings(
    max_examples=30,
    deadline=None,
    database=None,
    # a failing example is reported as found: shrinking would replay it hundreds of times
    phases=(Phase.explicit, Phase.generate),
    report_multiple_bugs=False,
    suppress_health_check=(HealthCheck.too_slow,),
)


# -- the stacks: upstream <- relay <- gateway, one per upstream, for the whole module ----


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stacks(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, Stack]]:
    directory = tmp_path_factory.mktemp("differential")
    secret = secrets.token_urlsafe(48)
    tokens = {
        identity.name: mint(secret, **identity.claims)
        for identity in IDENTITIES
        if identity.claims is not None
    }
    built: dict[str, Stack] = {}
    servers: list[GatewayTestServer] = []
    relays: list[Relay] = []
    started: list[upstreams.Upstream] = []
    with pytest.MonkeyPatch.context() as env:
        env.setenv(SECRET_ENV, secret)
        try:
            for name in upstreams.NAMES:
                if upstreams.missing(name):
                    continue
                upstream = upstreams.start(name, directory / name)
                started.append(upstream)
                relay = Relay(upstream.port)
                relays.append(relay)
                port = await relay.start()
                config = directory / f"gateway-{name}.yaml"
                # no test here waits for a timeout: a generous one keeps a loaded machine
                # (parallel workers, other runs) from turning a slow answer into a 504
                text = config_text(f"http://127.0.0.1:{port}")
                config.write_text(text.replace("upstream_timeout: 1s", "upstream_timeout: 10s"))
                loaded = load(config)
                server = GatewayTestServer(Runtime(loaded))
                servers.append(server)
                await server.start_server()
                assert server.port is not None
                built[name] = Stack(upstream, relay, server.port, loaded.routes, tokens)
            yield built
        finally:
            for server in servers:
                await server.close()
            for relay in relays:
                await relay.close()
            for upstream in started:
                upstream.stop()


@pytest.fixture(params=upstreams.NAMES)
def stack(request: pytest.FixtureRequest, stacks: dict[str, Stack]) -> Stack:
    name: str = request.param
    why = upstreams.missing(name)
    if why:
        pytest.skip(f"differential test against {name} skipped: {why}")
    return stacks[name]


@pytest.fixture(scope="module")
def every_stack(stacks: dict[str, Stack]) -> Iterator[list[Stack]]:
    """For the generated tests, which judge every example by all three upstreams."""
    absent = [f"{name}: {why}" for name in upstreams.NAMES if (why := upstreams.missing(name))]
    if absent:
        pytest.skip("differential tests need every upstream; " + "; ".join(absent))
    yield list(stacks.values())


async def run_everywhere(stacks: list[Stack], case: Case) -> None:
    outcomes: list[Outcome] = await asyncio.gather(*(run(stack, case) for stack in stacks))
    failures = [describe(o, problems) for o in outcomes if (problems := problems_of(o))]
    assert not failures, "\n\n".join(failures)


# -- bodies ------------------------------------------------------------------------------

SMUGGLED = (
    f"GET /internal/secret HTTP/1.1\r\nHost: {CLIENT_HOST}\r\nX-User-Id: admin\r\n"
    "X-User-Roles: admin\r\nContent-Length: 0\r\n\r\n"
).encode()


def empty_gzip_member(size: int) -> bytes:
    """A gzip member of exactly `size` bytes that inflates to nothing: the rest is FCOMMENT."""
    head = b"\x1f\x8b\x08\x10\x00\x00\x00\x00\x00\xff"  # deflate, FCOMMENT, no mtime
    tail = b"\x03\x00" + struct.pack("<II", 0, 0)  # an empty final block, CRC32 and ISIZE of b""
    member = head + b"c" * (size - len(head) - len(tail) - 1) + b"\x00" + tail
    assert len(member) == size and gzip.decompress(member) == b""
    return member


def deflate_raw(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-15)
    return compressor.compress(data) + compressor.flush()


TEXT = b"hello differential world\n" * 40
GZIP_BODY = gzip.compress(TEXT)
BOMB = gzip.compress(b"\0" * (1024 * 1024))


def post(
    target: str, body: bytes, encoding: str | None = None, chunks: tuple[int, ...] | None = None
) -> Request:
    headers = [("Content-Type", "application/octet-stream")]
    if encoding:
        headers.append(("Content-Encoding", encoding))
    return Request("POST", target, tuple(headers), body, chunks=chunks)


BODY_CASES = [
    Case.single(post("/public/x", GZIP_BODY, "gzip"), name="gzip body, Content-Length"),
    Case.single(post("/public/x", zlib.compress(TEXT), "deflate"), name="deflate (zlib) body"),
    Case.single(post("/public/x", deflate_raw(TEXT), "deflate"), name="deflate (raw) body"),
    Case.single(post("/public/x", secrets.token_bytes(300), "br"), name="br-labelled body"),
    Case.single(post("/public/x", secrets.token_bytes(300), "zstd"), name="zstd-labelled body"),
    Case.single(post("/public/x", b"not gzip at all", "gzip"), name="gzip label, not gzip"),
    Case.single(post("/public/x", BOMB, "gzip"), name="gzip of 1 MiB of zeros"),
    Case.single(
        post("/public/x", GZIP_BODY, "gzip", chunks=(7, 100, 1)), name="gzip body, chunked"
    ),
    Case.single(
        Request("GET", "/public/x", (("Content-Encoding", "gzip"),), GZIP_BODY),
        name="GET with a gzip body",
    ),
    Case.single(Request("GET", "/public/x", (), b"0123456789"), name="GET with a body"),
    Case(
        "empty-inflating gzip, chunked, then a request",
        (
            (
                post("/public/x", empty_gzip_member(1000), "gzip", chunks=(500, 500)),
                Request("GET", "/public/after"),
            ),
        ),
    ),
    Case(
        "Content-Length and Transfer-Encoding together (CL.TE)",
        (
            (
                Request(
                    "POST",
                    "/public/x",
                    raw=(
                        f"POST /public/x HTTP/1.1\r\nHost: {CLIENT_HOST}\r\nContent-Length: 4\r\n"
                        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                    ).encode()
                    + SMUGGLED,
                    must_refuse=frozenset({400}),
                ),
            ),
        ),
    ),
    Case(
        "two Content-Lengths",
        (
            (
                Request(
                    "POST",
                    "/public/x",
                    raw=(
                        f"POST /public/x HTTP/1.1\r\nHost: {CLIENT_HOST}\r\nContent-Length: 0\r\n"
                        f"Content-Length: {len(SMUGGLED)}\r\n\r\n"
                    ).encode()
                    + SMUGGLED,
                    must_refuse=frozenset({400}),
                ),
            ),
        ),
    ),
]


@pytest.mark.parametrize("case", BODY_CASES, ids=lambda case: case.name)
async def test_request_bodies_reach_the_upstream_undecoded(stack: Stack, case: Case) -> None:
    check(await run(stack, case))


def literal_smuggle(second_connection: bool) -> Case:
    """An empty-inflating gzip body with its exact Content-Length, then a forged request."""
    first = post("/public/x", empty_gzip_member(1000 + 21), "gzip")
    forged = Request(
        "GET", "/internal/secret", (("X-User-Id", "admin"),), must_refuse=frozenset({403})
    )
    layout = ((first,), (forged,)) if second_connection else ((first, forged),)
    return Case(
        "gzip FCOMMENT body, then GET /internal/secret"
        + (" on a second connection" if second_connection else " pipelined"),
        layout,
    )


@pytest.mark.parametrize("second_connection", [False, True], ids=["pipelined", "second-conn"])
async def test_gzip_comment_body_then_forged_request(stack: Stack, second_connection: bool) -> None:
    check(await run(stack, literal_smuggle(second_connection)))


async def aligned_smuggle(stack: Stack, second_connection: bool) -> Case:
    """The working exploit: the empty-inflating body is exactly as long as the next request's
    head as the gateway forwards it, so an upstream that was promised that many body bytes
    and got none takes that head as the body, and reads the next body as a request."""
    follow_up = Request(
        "POST",
        "/public/y",
        (("X-Request-Id", "differential-follow-up"), ("X-Pad", "p" * 900)),
        SMUGGLED,
    )
    probe = await run(stack, Case.single(follow_up, name="calibration"))
    sent = b"".join(bytes(r.sent) for r in probe.recordings)
    head = sent.find(b"\r\n\r\n")
    assert head > 0, "calibration: the gateway did not forward the follow-up request\n" + describe(
        probe, ["(calibration)"]
    )
    first = post("/public/x", empty_gzip_member(head + 4), "gzip")
    layout = ((first,), (follow_up,)) if second_connection else ((first, follow_up),)
    return Case(
        f"gzip body inflating to nothing, {head + 4} bytes, then a request "
        + ("on a second connection" if second_connection else "pipelined"),
        layout,
    )


@pytest.mark.parametrize("second_connection", [False, True], ids=["pipelined", "second-conn"])
async def test_gzip_comment_body_cannot_smuggle_a_request(
    stack: Stack, second_connection: bool
) -> None:
    check(await run(stack, await aligned_smuggle(stack, second_connection)))


@st.composite
def bodies(draw: st.DrawFn) -> Case:
    content = draw(st.binary(min_size=0, max_size=2000))
    kind = draw(st.sampled_from(["gzip", "deflate", "raw-deflate", "br", "empty-gzip", "none"]))
    body, encoding = {
        "gzip": (gzip.compress(content), "gzip"),
        "deflate": (zlib.compress(content), "deflate"),
        "raw-deflate": (deflate_raw(content), "deflate"),
        "br": (content, "br"),
        "empty-gzip": (empty_gzip_member(21 + len(content)), "gzip"),
        "none": (content, None),
    }[kind]
    method = draw(st.sampled_from(["POST", "PUT", "PATCH", "GET", "DELETE"]))
    chunks = draw(st.none() | st.lists(st.integers(1, 700), min_size=1, max_size=4).map(tuple))
    headers = (("Content-Encoding", encoding),) if encoding else ()
    first = Request(method, "/public/" + kind, headers, body, chunks=chunks)
    after = Request("GET", "/public/after")
    return Case(f"{method} {kind} body, chunks={chunks}", ((first, after),))


@FEW
@given(case=bodies())
async def test_generated_bodies_pass_through_byte_for_byte(
    every_stack: list[Stack], case: Case
) -> None:
    await run_everywhere(every_stack, case)


# -- paths -------------------------------------------------------------------------------

PATH_TRICKS = [
    "/public/%%32%65%%32%65/internal/x",
    "/public/%2%65%2e/internal/x",
    "/public/%2e%2e/internal/x",
    "/public/%2E%2E/internal/x",
    "/public/%2e%2e%2finternal",
    "/public/..%2finternal",
    "/public/..%2Finternal/x",
    "/public/%252e%252e/internal/x",
    "/public/%25%32%65%25%32%65/internal/x",
    "/public/%252e%252e%252finternal/x",
    "/PUBLIC/../internal/x",
    "/public/.%2e/admin/x",
    "/public/%2e./admin/x",
    "/public/x/../../internal/x",
    "/public/./../internal/x",
    "//internal/x",
    "///internal/x",
    "/public/;/../internal",
    "/public/..;/internal/x",
    "/public/..\\internal\\x",
    "/public\\..\\internal\\x",
    "/public/%5c../internal/x",
    "/public/%c0%ae%c0%ae/internal/x",
    "/public/%ef%bc%8e%ef%bc%8e/internal/x",
    "/public/%u002e%u002e/internal/x",
    "/public/%00/../../internal/x",
    "/public/%3f/../../internal/x",
    "/public/%23/../../internal/x",
    "/public/x?/../../internal/x",
    "/public/x#/../../internal/x",
    "/%69nternal/x",
    "/Internal/x",
    "/internal/x",
    "/admin/x",
    "/maybe/..%252f..%252finternal",
    "/maybe/%2e%2e/admin/x",
    "/public/%2e%2e/%2e%2e/internal",
    "/public/caf%C3%A9/../../internal",
    "/public/café/../../internal",
    "http://evil.example/internal/x",
    "*",
]


@pytest.mark.parametrize("target", PATH_TRICKS)
async def test_path_tricks_execute_under_the_route_decided(stack: Stack, target: str) -> None:
    check(await run(stack, Case.single(Request("GET", target))))


@pytest.mark.parametrize("target", ["/public/%2e%2e/admin/x", "/maybe/%%32%65%%32%65/admin/x"])
async def test_path_tricks_do_not_lift_a_viewer_to_admin(stack: Stack, target: str) -> None:
    check(await run(stack, Case.single(Request("GET", target), identity=VIEWER)))


SEGMENT_TOKENS = [
    "public", "PUBLIC", "internal", "Internal", "%69nternal", "admin", "maybe", "x", "é",
    ".", "..", "%2e", "%2E", "%2e%2e", "%252e", "%25", "%", "%%", "%2", "%32", "%65", "%u002e",
    "%2f", "%2F", "%5c", "\\", ";", "..;", "%3b", "%00", "%C3%A9", "%c0%ae", "?", "%3f", "",
]  # fmt: skip


# A dot as some upstream may read it after decoding once more; two make a '..'.
DOT = [".", "%2e", "%2E", "%%32%65", "%2%65", "%252e", "%25%32%65", "%c0%ae", "%u002e"]
DOT_SUFFIX = ["", "", "", "", ";", "%2f", "%5c", "\\"]


@st.composite
def free_paths(draw: st.DrawFn) -> str:
    segments = draw(
        st.lists(
            st.lists(st.sampled_from(SEGMENT_TOKENS), min_size=1, max_size=3).map("".join),
            min_size=1,
            max_size=6,
        )
    )
    prefix = draw(st.sampled_from(["/public/", "/maybe/", "/", "/x/", "//"]))
    return prefix + "/".join(segments)


@st.composite
def traversals(draw: st.DrawFn) -> str:
    """From a route the identity may use, one level up and into one it may not."""
    start = draw(st.sampled_from(["public", "maybe", "x", "PUBLIC"]))
    up = draw(st.sampled_from(DOT)) + draw(st.sampled_from(DOT)) + draw(st.sampled_from(DOT_SUFFIX))
    joiner = draw(st.sampled_from(["/", "//", "/./", "%2f"]))
    goal = draw(st.sampled_from(["internal", "admin", "Internal", "%69nternal"]))
    return f"/{start}/{up}{joiner}{goal}/x"


def paths() -> st.SearchStrategy[str]:
    return st.one_of(traversals(), traversals(), free_paths())


@settings(FEW, max_examples=60)
@given(target=paths(), identity=st.sampled_from([ANONYMOUS, VIEWER]))
async def test_generated_paths_execute_under_the_route_decided(
    every_stack: list[Stack], target: str, identity: Identity
) -> None:
    await run_everywhere(every_stack, Case.single(Request("GET", target), identity))


# -- headers -----------------------------------------------------------------------------

FORGED = [
    ("X-HTTP-Method-Override", "DELETE"),
    ("X-HTTP-Method", "PUT"),
    ("X-Method-Override", "PATCH"),
    ("X-Original-URL", "/internal/x"),
    ("X-Original-URI", "/internal/x"),
    ("X-Rewrite-URL", "/internal/x"),
    ("X-Forwarded-Uri", "/internal/x"),
    ("X-Forwarded-Path", "/internal/x"),
    ("X-Forwarded-Prefix", "/internal"),
    ("X-Envoy-Original-Path", "/internal/x"),
    ("X-Real-IP", "6.6.6.6"),
    ("True-Client-IP", "6.6.6.6"),
    ("X-Client-IP", "6.6.6.6"),
    ("CF-Connecting-IP", "6.6.6.6"),
    ("Fastly-Client-IP", "6.6.6.6"),
    ("X-Cluster-Client-IP", "6.6.6.6"),
    ("X-User-Id", "admin"),
    ("X-User-Roles", "admin"),
]
SPELLINGS = [
    ("x_original_url", "/internal/x"),
    ("X_HTTP_Method_Override", "DELETE"),
    ("X-REAL-IP", "6.6.6.6"),
    ("x_real_ip", "6.6.6.6"),
    ("x-real-ip", "6.6.6.6"),
    ("X_User_Id", "admin"),
    ("x-user-roles", "admin"),
    ("X_FORWARDED_PREFIX", "/internal"),
]
HEADER_CASES = [
    Case.single(
        Request("POST", "/public/x", (("X-HTTP-Method-Override", "DELETE"),), b"{}"),
        name="method override on a POST",
    ),
    Case.single(
        Request("GET", "/public/x", (("X-Original-URL", "/internal/x"),)),
        name="X-Original-URL on a public GET",
    ),
    Case.single(Request("GET", "/public/x", (("X-Real-IP", "6.6.6.6"),)), name="forged X-Real-IP"),
    Case.single(Request("GET", "/public/x", tuple(FORGED)), name="every stripped header"),
    Case.single(Request("GET", "/public/x", tuple(SPELLINGS)), name="other spellings"),
    Case.single(Request("GET", "/maybe/x", tuple(FORGED + SPELLINGS)), name="optional route"),
    Case.single(Request("GET", "/x", tuple(FORGED + SPELLINGS)), VIEWER, name="viewer"),
    Case.single(Request("GET", "/admin/x", tuple(FORGED + SPELLINGS)), ADMIN, name="admin"),
]


@pytest.mark.parametrize("case", HEADER_CASES, ids=lambda case: case.name)
async def test_rewriting_headers_never_reach_the_upstream(stack: Stack, case: Case) -> None:
    check(await run(stack, case))


def spelling(name: str) -> st.SearchStrategy[str]:
    """Any case per letter, '-' or '_' per separator."""
    parts = [
        st.sampled_from(["-", "_"]) if ch == "-" else st.sampled_from([ch.lower(), ch.upper()])
        for ch in name
    ]
    return st.tuples(*parts).map("".join)


FORGED_VALUES = ["6.6.6.6", "/internal/x", "admin", "DELETE"]
FORBIDDEN = sorted(STRIPPED | {"x-real-ip", "x-user-id", "x-user-roles", "x-user-email"})


@FEW
@given(
    forged=st.lists(
        st.sampled_from(FORBIDDEN)
        .flatmap(spelling)
        .flatmap(lambda name: st.tuples(st.just(name), st.sampled_from(FORGED_VALUES))),
        min_size=1,
        max_size=5,
    ),
    where=st.sampled_from([("/public/x", ANONYMOUS), ("/maybe/x", ANONYMOUS), ("/x", VIEWER)]),
)
async def test_generated_header_spellings_are_stripped(
    every_stack: list[Stack], forged: list[tuple[str, str]], where: tuple[str, Identity]
) -> None:
    target, identity = where
    await run_everywhere(every_stack, Case.single(Request("GET", target, tuple(forged)), identity))


async def test_host_reaches_the_upstream_unchanged(stack: Stack) -> None:
    """preserve_host: true is the default; X-Forwarded-Host is the client's Host as well."""
    outcome = await run(stack, Case.single(Request("GET", "/public/host")))
    check(outcome)
    (sent,) = parse_requests(b"".join(bytes(r.sent) for r in outcome.recordings))
    assert sent.values("Host") == [CLIENT_HOST], sent.headers
    assert sent.values("X-Forwarded-Host") == [CLIENT_HOST], sent.headers
    (executed,) = outcome.executed
    assert [v for k, v in executed.headers if k.lower() == "host"] == [CLIENT_HOST]


# -- methods -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target", ["/public/x", "127.0.0.1:22", f"{CLIENT_HOST}:443", "/internal/x"]
)
async def test_connect_never_reaches_the_upstream(stack: Stack, target: str) -> None:
    request = Request("CONNECT", target, must_refuse=frozenset({400}))
    check(await run(stack, Case.single(request, name=f"CONNECT {target}")))


# -- the harness itself ------------------------------------------------------------------


async def test_harness_sees_a_request_the_gateway_did_not_send(stack: Stack) -> None:
    """Self-test: the relay slips a request onto the upstream connection; every check
    that should notice does (the wire count, the upstream's log, the path)."""
    stack.relay.inject = f"GET /internal/injected HTTP/1.1\r\nHost: {CLIENT_HOST}\r\n\r\n".encode()
    try:
        outcome = await run(stack, Case.single(Request("GET", "/public/x"), name="injection"))
    finally:
        stack.relay.inject = None
    problems = problems_of(outcome)
    text = "\n".join(problems)
    assert "[FRAMING] 2 request(s) on the upstream wire" in text, text
    assert any(p.startswith("[FRAMING] the upstream executed 2") for p in problems), text
    assert "an anonymous request reached /internal/" in text, text
    assert "route /internal/:path* (deny) refuses anonymous" in text, text


async def test_harness_sees_forged_headers_when_they_arrive() -> None:
    from tests.differential.harness import header_problems

    forged = [("Host", CLIENT_HOST), ("X_Original_URL", "/internal"), ("X-Real-IP", "6.6.6.6")]
    found = header_problems(forged, ANONYMOUS)
    assert any("X_Original_URL" in p for p in found), found
    assert any("X-Real-IP must be" in p for p in found), found
    assert header_problems([("X-Real-IP", "127.0.0.1")], ANONYMOUS) == []
    assert header_problems([("X-Real-IP", "127.0.0.1"), ("X-User-Id", "bob")], ANONYMOUS)
    assert (
        header_problems(
            [("X-Real-IP", "127.0.0.1"), ("X-User-Id", "bob"), ("X-User-Roles", "viewer")], VIEWER
        )
        == []
    )
    assert header_problems([("X-Real-IP", "127.0.0.1"), ("X_User_Id", "bob")], VIEWER)
    assert METHOD_OVERRIDES[0] in STRIPPED and URL_OVERRIDES[0] in STRIPPED


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nabc", "only 3 body bytes"),
        (b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\nGET /x HTTP/1.1\r\n", "incomplete head"),
        (b"GET / HTTP/1.1\r\n\r\nxyz", "incomplete head"),
        (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nab", "ambiguous"),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "both",
        ),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "cut short"),
        (b"GET / HTTP/1.1\nHost: x\r\n\r\n", "bare CR or LF"),
        (b"GET  / HTTP/1.1\r\n\r\n", "request line"),
        (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", "malformed header"),
    ],
)
async def test_strict_parser_refuses_unclean_wire(data: bytes, why: str) -> None:
    with pytest.raises(WireError, match=why):
        parse_requests(data)


async def test_strict_parser_reads_clean_wire() -> None:
    data = (
        b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
        b"PUT /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n1\r\nz\r\n0\r\n\r\n"
        b"GET /c?q=1 HTTP/1.1\r\nX-A:  v \r\n\r\n"
    )
    a, b, c = parse_requests(data)
    assert (a.method, a.target, a.body, a.framing) == ("POST", "/a", b"abc", "length")
    assert (b.body, b.framing) == (b"xyz", "chunked")
    assert (c.path, c.values("x-a")) == ("/c", ["v"])
