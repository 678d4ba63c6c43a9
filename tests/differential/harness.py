"""Send raw requests through gateway -> relay -> real upstream, then check three things.

1. FRAMING: what the gateway put on each upstream connection parses strictly,
   request for request, with nothing left over; it carries one request per
   request the gateway forwarded, each with the method, body (byte for byte,
   never decoded) and Content-Encoding the client sent; the upstream's own log
   shows the same requests and nothing else.
2. PATH: every path an upstream executed falls under a route that lets this
   identity through, and under the same route the gateway matched for the
   path it forwarded (decoded once, as the gateway matches).
3. HEADERS: nothing the gateway must strip reaches the wire or the upstream;
   X-Real-IP is there once, set by the gateway to the client's address.

Which client requests the gateway forwarded is read off the answers: the
upstreams stamp `X-Upstream` on theirs, and a 502 or 504 is the gateway
giving up on a request it did send.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from gateway.routing import Route, RouteTable

from .recorder import Recording, Relay, WireError, WireRequest, parse_requests
from .upstreams import Executed, Upstream

CLIENT_ADDRESS = "127.0.0.1"
CLIENT_HOST = "app.example.test"
ANSWER_TIMEOUT = 8.0
REFUSALS = frozenset((400, 401, 403))

# Never forwarded from a client, in any spelling (compared lower-case, '_' read as '-').
METHOD_OVERRIDES = ("x-http-method-override", "x-http-method", "x-method-override")
URL_OVERRIDES = (
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-forwarded-prefix",
    "x-envoy-original-path",
)
CLIENT_ADDRESS_HEADERS = (
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
)
STRIPPED = frozenset(METHOD_OVERRIDES + URL_OVERRIDES + CLIENT_ADDRESS_HEADERS) - {"x-real-ip"}
IDENTITY_HEADERS = {
    "x-user-id": "sub",
    "x-user-email": "email",
    "x-user-name": "name",
    "x-user-roles": "roles",
}


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the client is: anonymous, or the claims of a valid token it presents."""

    name: str
    claims: dict[str, Any] | None = None

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(self.claims["roles"]) if self.claims else frozenset()

    def expected_header(self, name: str) -> str | None:
        if self.claims is None:
            return None
        value = self.claims[IDENTITY_HEADERS[name]]
        return ",".join(value) if isinstance(value, list) else str(value)


ANONYMOUS = Identity("anonymous")
VIEWER = Identity(
    "viewer", {"sub": "bob", "email": "bob@example.com", "name": "Bob", "roles": ["viewer"]}
)
ADMIN = Identity(
    "admin", {"sub": "alice", "email": "alice@example.com", "name": "Alice", "roles": ["admin"]}
)


@dataclass(frozen=True, slots=True)
class Request:
    """One client request. `body` is what the upstream must receive, byte for byte."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    chunks: tuple[int, ...] | None = None  # send chunked, in pieces of these sizes
    raw: bytes | None = None  # send exactly these bytes instead (malformed on purpose)
    must_refuse: frozenset[int] | None = None  # the gateway must answer one of these itself

    def wire(self, authorization: str | None) -> bytes:
        if self.raw is not None:
            return self.raw
        names = {name.lower() for name, _ in self.headers}
        lines = [f"{self.method} {self.target} HTTP/1.1"]
        if "host" not in names:
            lines.append(f"Host: {CLIENT_HOST}")
        lines += [f"{name}: {value}" for name, value in self.headers]
        if authorization:
            lines.append(f"Authorization: Bearer {authorization}")
        if self.chunks is not None:
            lines.append("Transfer-Encoding: chunked")
        elif self.body and "content-length" not in names:
            lines.append(f"Content-Length: {len(self.body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
        if self.chunks is None:
            return head + self.body
        out, rest = bytearray(head), self.body
        for size in self.chunks:
            piece, rest = rest[:size], rest[size:]
            if piece:
                out += b"%x\r\n" % len(piece) + piece + b"\r\n"
        if rest:
            out += b"%x\r\n" % len(rest) + rest + b"\r\n"
        return bytes(out + b"0\r\n\r\n")

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass(frozen=True, slots=True)
class Case:
    """Requests per client connection; each connection's requests are pipelined in one write,
    connections run one after the other (each stays open until the case ends)."""

    name: str
    connections: tuple[tuple[Request, ...], ...]
    identity: Identity = ANONYMOUS

    @classmethod
    def single(cls, request: Request, identity: Identity = ANONYMOUS, name: str = "") -> Case:
        return cls(name or f"{request.method} {request.target}", ((request,),), identity)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


@dataclass(slots=True)
class Stack:
    """One upstream with its relay and the gateway in front of it."""

    upstream: Upstream
    relay: Relay
    gateway_port: int
    routes: RouteTable
    tokens: dict[str, str]

    @property
    def name(self) -> str:
        return self.upstream.name


@dataclass(slots=True)
class Outcome:
    stack: Stack
    case: Case
    sent: list[list[Request]]
    answers: list[list[Response | None]]
    recordings: list[Recording]
    executed: list[Executed]
    notes: list[str] = field(default_factory=list)

    def pairs(self) -> Iterable[tuple[Request, Response | None]]:
        for requests, answers in zip(self.sent, self.answers, strict=True):
            yield from zip(requests, answers, strict=True)

    def forwarded(self) -> list[Request]:
        return [request for request, answer in self.pairs() if _forwarded(self.stack, answer)]


# The error pages of nginx's and http.server's own parsers carry no X-Upstream; their
# Server header still tells them from the gateway's own answers. (Node's carry neither.)
_SERVER = {"nginx": "nginx", "python": "BaseHTTP"}


def _forwarded(stack: Stack, answer: Response | None) -> bool:
    if answer is None:
        return False
    server = _SERVER.get(stack.name)
    return (
        answer.header("X-Upstream") == stack.name
        or answer.status in (502, 504)
        or (server is not None and (answer.header("Server") or "").startswith(server))
    )


# -- running a case ----------------------------------------------------------------------


async def run(stack: Stack, case: Case) -> Outcome:
    notes = [
        f"[FRAMING] {e.upstream} executed {e.method} {e.target!r} after the case that sent "
        "it had ended"
        for e in stack.upstream.new_entries()
    ]
    answers: list[list[Response | None]] = []
    writers: list[asyncio.StreamWriter] = []
    token = stack.tokens.get(case.identity.name)
    try:
        await _send(stack, case, token, answers, writers, notes)
    except BaseException:
        await stack.relay.reset()  # the next case starts clean even after an error here
        raise
    finally:
        for writer in writers:
            writer.close()
    outcome = Outcome(stack, case, [list(c) for c in case.connections], answers, [], [], notes)
    expected = len(outcome.forwarded())
    executed = await _collect(stack.upstream, expected)
    # closing the upstream connections lets a server finish what it still holds (a body
    # it waits for, bytes after a request): anything it executes then counts too
    outcome.recordings = await stack.relay.reset()
    executed += await _collect(stack.upstream, 0, quiet=0.06)
    outcome.executed = executed
    return outcome


async def _send(
    stack: Stack,
    case: Case,
    token: str | None,
    answers: list[list[Response | None]],
    writers: list[asyncio.StreamWriter],
    notes: list[str],
) -> None:
    """Each connection's requests in one write, then its answers, one connection at a time."""
    for requests in case.connections:
        reader, writer = await asyncio.open_connection("127.0.0.1", stack.gateway_port)
        writers.append(writer)
        writer.write(b"".join(request.wire(token) for request in requests))
        await writer.drain()
        got: list[Response | None] = []
        for request in requests:
            try:
                answer = await asyncio.wait_for(
                    read_response(reader, request.method), ANSWER_TIMEOUT
                )
            except TimeoutError:
                label = f"{request.method} {request.target!r}"
                notes.append(f"[ANSWER] no answer to {label} within {ANSWER_TIMEOUT}s")
                answer = None
            got.append(answer)
            if answer is None:
                break
        answers.append(got + [None] * (len(requests) - len(got)))


async def _collect(upstream: Upstream, expected: int, quiet: float = 0.0) -> list[Executed]:
    """Log entries until there are `expected`, then until none came for `quiet` seconds."""
    loop = asyncio.get_running_loop()
    entries: list[Executed] = []
    deadline = loop.time() + 3.0
    last_new = loop.time()
    while loop.time() < deadline:
        new = upstream.new_entries()
        if new:
            entries += new
            last_new = loop.time()
        if len(entries) >= expected and loop.time() - last_new >= quiet:
            break
        await asyncio.sleep(0.01)
    return entries


async def read_response(reader: asyncio.StreamReader, method: str) -> Response | None:
    """One response, or None if the connection ended first; 1xx answers are skipped."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            return None
        status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
        version, _, rest = status_line.partition(" ")
        if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
            # not a response: the client connection is out of step with the gateway
            return Response(0, (), head + await reader.read(4096))
        status = int(rest[:3])
        headers = tuple(
            (name.strip(), value.strip())
            for name, _, value in (line.partition(":") for line in lines)
        )
        if not 100 <= status < 200:
            break
    response = Response(status, headers, b"")
    try:
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif (response.header("Transfer-Encoding") or "").lower() == "chunked":
            body = b""
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                body += (await reader.readexactly(size + 2))[:-2]
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
        elif (length := response.header("Content-Length")) is not None:
            body = await reader.readexactly(int(length))
        else:
            body = await reader.read()
    except (asyncio.IncompleteReadError, ConnectionError):
        body = b"<cut short>"
    return Response(status, headers, body)


# -- the checks --------------------------------------------------------------------------


def check(outcome: Outcome) -> None:
    """Raise AssertionError listing every problem found, with what was seen."""
    problems = problems_of(outcome)
    if problems:
        raise AssertionError(describe(outcome, problems))


def problems_of(outcome: Outcome) -> list[str]:
    stack, identity = outcome.stack, outcome.case.identity
    problems = list(outcome.notes)
    problems += _answer_problems(outcome)
    wire: list[WireRequest] = []
    for number, recording in enumerate(outcome.recordings, 1):
        try:
            wire += parse_requests(bytes(recording.sent))
        except WireError as exc:
            problems.append(f"[FRAMING] upstream connection {number}: {exc}")
    forwarded = outcome.forwarded()
    problems += _framing_problems(forwarded, wire, outcome.executed)
    for executed in outcome.executed:
        problems += _path_problems(stack.routes, identity, executed, wire)
    for request in wire:
        problems += [
            f"[HEADERS] on the wire, {request.method} {request.target}: {p}"
            for p in header_problems(request.headers, identity)
        ]
    for executed in outcome.executed:
        partial = executed.upstream == "nginx"  # nginx logs only the headers of interest
        problems += [
            f"[HEADERS] {executed.upstream} received, {executed.method} {executed.target}: {p}"
            for p in header_problems(executed.headers, identity, partial=partial)
        ]
    return problems


def _answer_problems(outcome: Outcome) -> list[str]:
    problems = []
    for requests, answers in zip(outcome.sent, outcome.answers, strict=True):
        previous: Response | None = None
        for request, answer in zip(requests, answers, strict=True):
            label = f"{request.method} {request.target!r}"
            if answer is None:
                # fine after an answer that ended the connection; else the gateway hung or cut
                if previous is None or not (
                    previous.status == 400
                    or (previous.header("Connection") or "").lower() == "close"
                ):
                    problems.append(f"[ANSWER] the gateway never answered {label}")
                break
            if answer.status == 0:
                problems.append(f"[ANSWER] {label}: not an HTTP response: {_short(answer.body)}")
                break
            if answer.status >= 500 and answer.status not in (502, 504):
                problems.append(f"[ANSWER] {label} got {answer.status}")
            forwarded = _forwarded(outcome.stack, answer)
            if request.must_refuse is not None:
                if forwarded or answer.status not in request.must_refuse:
                    problems.append(
                        f"[ANSWER] {label} must be refused with one of "
                        f"{sorted(request.must_refuse)}, got {answer.status}"
                        + (f" from {outcome.stack.name}" if forwarded else "")
                    )
            elif not forwarded and answer.status not in REFUSALS:
                problems.append(f"[ANSWER] {label}: unexpected {answer.status} from the gateway")
            previous = answer
    return problems


def _framing_problems(
    forwarded: Sequence[Request], wire: Sequence[WireRequest], executed: Sequence[Executed]
) -> list[str]:
    problems = []
    if len(wire) != len(forwarded):
        problems.append(
            f"[FRAMING] {len(wire)} request(s) on the upstream wire "
            f"({', '.join(f'{w.method} {w.target}' for w in wire) or 'none'}), "
            f"but the gateway forwarded {len(forwarded)}"
        )

    def encoding(values: Iterable[str]) -> str:
        return ",".join(v.strip().lower() for v in values)

    expected = Counter(
        (r.method, r.body, encoding(r.header("Content-Encoding"))) for r in forwarded
    )
    got = Counter((w.method, w.body, encoding(w.values("Content-Encoding"))) for w in wire)
    for (method, body, coding), count in (expected - got).items():
        problems.append(
            f"[FRAMING] a forwarded {method} with Content-Encoding {coding or '-'} and a body of "
            f"{len(body)} bytes {_short(body)} never reached the upstream as sent ({count}x)"
        )
    for (method, body, coding), count in (got - expected).items():
        problems.append(
            f"[FRAMING] the upstream received a {method} with Content-Encoding {coding or '-'} "
            f"and a body of {len(body)} bytes {_short(body)} that no client sent ({count}x)"
        )
    ran = Counter(e.method for e in executed)
    meant = Counter(r.method for r in forwarded)
    if ran != meant:
        problems.append(
            f"[FRAMING] the upstream executed {sum(ran.values())} request(s) "
            f"{sorted(ran.elements())}, the gateway forwarded {sorted(meant.elements())}: "
            + "; ".join(f"{e.method} {e.target}" for e in executed)
        )
    bodies = Counter(len(r.body) for r in forwarded)
    read = Counter(e.body_bytes for e in executed if e.body_bytes is not None)
    if read and read != bodies:
        problems.append(
            f"[FRAMING] the upstream read bodies of {sorted(read.elements())} bytes, "
            f"the clients sent {sorted(bodies.elements())}"
        )
    for e in executed:
        if not e.complete:
            problems.append(f"[FRAMING] {e.upstream} never got the whole body of "
                            f"{e.method} {e.target} (read {e.body_bytes} bytes)")  # fmt: skip
    return problems


def permits(route: Route, identity: Identity) -> bool:
    """The gateway's decision for this identity on this route (gateway.auth.decide)."""
    if route.auth == "deny":
        return False
    if route.auth == "public" or (route.auth == "optional" and identity.claims is None):
        return True
    if identity.claims is None:
        return False
    return not route.roles or not route.roles.isdisjoint(identity.roles)


def _path_problems(
    routes: RouteTable, identity: Identity, executed: Executed, wire: Sequence[WireRequest]
) -> list[str]:
    problems = []
    sent = [w for w in wire if w.target == executed.target and w.method == executed.method]
    decided = routes.match(sent[0].method, unquote(sent[0].path)) if sent else None
    for path in executed.paths:
        route = routes.match(executed.method, path)
        where = f"{executed.upstream} executed {executed.method} {path!r}"
        where += f" (sent as {executed.target!r})"
        if not permits(route, identity):
            problems.append(
                f"[PATH] {where}: route {route.label} ({route.auth}) refuses {identity.name}"
            )
        first = path.lower().lstrip("/").split("/", 1)[0]
        if identity.claims is None and first in ("internal", "admin"):
            problems.append(f"[PATH] {where}: an anonymous request reached /{first}/")
        if decided is not None and route.index != decided.index:
            problems.append(
                f"[PATH] {where} under route {route.label}, but the gateway matched "
                f"{decided.label} for the path it forwarded"
            )
    return problems


def header_problems(
    headers: Sequence[tuple[str, str]], identity: Identity, *, partial: bool = False
) -> list[str]:
    """`partial`: only some headers were reported (nginx's log); absence proves nothing there."""
    problems = []
    real_ips = []
    for name, value in headers:
        lname = name.lower()
        alias = lname.replace("_", "-")
        if alias in STRIPPED:
            problems.append(f"{name}: {value!r} was not stripped")
        elif alias == "x-real-ip":
            real_ips.append((name, value))
        elif alias.startswith("x-user-"):
            expected = identity.expected_header(alias) if alias in IDENTITY_HEADERS else None
            if expected is None or value != expected or (lname != alias and not partial):
                problems.append(f"{name}: {value!r} is not the gateway's identity header")
    spelled = partial or all(name.lower() == "x-real-ip" for name, _ in real_ips)
    if (not partial or real_ips) and (
        [value for _, value in real_ips] != [CLIENT_ADDRESS] or not spelled
    ):
        problems.append(
            f"X-Real-IP must be the gateway's one {CLIENT_ADDRESS!r}, got {real_ips or 'none'}"
        )
    return problems


# -- reporting ---------------------------------------------------------------------------


def _short(data: bytes, limit: int = 80) -> str:
    return repr(data[:limit]) + ("..." if len(data) > limit else "")


def describe(outcome: Outcome, problems: Sequence[str]) -> str:
    lines = [
        f"{outcome.case.name!r} through the gateway to {outcome.stack.name} "
        f"as {outcome.case.identity.name}:",
        *(f"  {p}" for p in problems),
        "  client answers:",
    ]
    for request, answer in outcome.pairs():
        got = "none" if answer is None else f"{answer.status} {_short(answer.body, 40)}"
        lines.append(f"    {request.method} {request.target!r} -> {got}")
    for number, recording in enumerate(outcome.recordings, 1):
        lines.append(f"  upstream connection {number} carried {len(recording.sent)} bytes: "
                     f"{_short(bytes(recording.sent), 600)}")  # fmt: skip
    lines.append(f"  {outcome.stack.name} executed:")
    for e in outcome.executed:
        lines.append(f"    {e.method} {e.target!r} paths={list(e.paths)} body={e.body_bytes}")
    return "\n".join(lines)
