"""Header hygiene and streaming to and from the upstream.

The upstream trusts `X-User-*` because only the gateway can have set them:
every incoming copy is dropped on every route before the verified identity
is written. Bodies are streamed in both directions so memory stays flat for a
1 GiB upload or download.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from contextvars import ContextVar
from types import SimpleNamespace
from typing import Any, TypeAlias
from urllib.parse import quote

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDictProxy
from yarl import URL

from . import responses
from .tokens import Principal

log = logging.getLogger("gateway.proxy")

HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection",
        "TE", "Trailer", "Transfer-Encoding", "Upgrade",
    )
)  # fmt: skip
# Set by the gateway itself; a client's copy is never forwarded.
_OWN = frozenset(
    ("host", "x-forwarded-proto", "x-forwarded-host", "x-request-id", "forwarded", "expect",
     "x-real-ip")
)  # fmt: skip
# Headers that make an app execute another request than the one the route table decided on
# (another method, another URL), or believe another client address or scheme. Symfony,
# Laravel, IIS, Rack, Spring and Express middleware honour these: never forwarded.
REWRITING = frozenset(
    h.lower()
    for h in (
        "X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override",
        "X-Original-URL", "X-Original-URI", "X-Rewrite-URL", "X-Forwarded-Uri",
        "X-Forwarded-Path", "X-Forwarded-Prefix", "X-Envoy-Original-Path",
        "X-Real-IP", "True-Client-IP", "X-Client-IP", "CF-Connecting-IP", "Fastly-Client-IP",
        "X-Cluster-Client-IP", "X-Forwarded", "Forwarded-For", "X-Forwarded-Server",
        "X-Forwarded-Port", "X-Forwarded-Scheme", "X-Forwarded-Ssl", "X-Url-Scheme",
        "Front-End-Https", "X-Host",
    )
)  # fmt: skip
_NEVER_FORWARDED = HOP_BY_HOP | _OWN | REWRITING
_MANAGED = frozenset(("x-forwarded-for", "authorization", "cookie"))  # rewritten or checked
_NOT_RETURNED = HOP_BY_HOP | {"content-length"}  # aiohttp sets the length it really sends
_NOT_RETURNED_BUT_OURS = _NOT_RETURNED | {"x-request-id"}
Headers = list[tuple[str, str]]
Socket: TypeAlias = web.WebSocketResponse | aiohttp.ClientWebSocketResponse
# The WebSocket handshake is redone by the client session toward the upstream.
_WS_HANDSHAKE = frozenset(
    (
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-accept",
        "sec-websocket-protocol",
    )
)
_BUFFER_LIMIT = 64 * 1024  # bodies up to this size are read whole: one write instead of a stream
_PRINTABLE_NO_PERCENT = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def header_value(value: Any) -> str | None:
    """A claim as a header value. CR/LF and non-ASCII can never reach the wire raw."""
    if value is None:
        return None
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, list | tuple):
        text = ",".join(str(item) for item in value)
    else:
        text = str(value)
    if text.isascii() and text.isprintable():
        return text
    return quote(text, safe=_PRINTABLE_NO_PERCENT)


def strip_cookies(header: str, names: frozenset[str]) -> str:
    """Remove the gateway's cookies from a Cookie header, leaving the rest byte-for-byte."""
    kept = [
        pair
        for pair in header.split(";")
        if pair.strip() and pair.split("=", 1)[0].strip() not in names
    ]
    return ";".join(kept).strip()


# What the message means end to end: a sender may not name these in Connection (RFC 9110
# 7.6.1), and dropping them would change how the other side reads the body.
_END_TO_END = frozenset(("content-encoding", "content-length", "content-type", "content-range"))


def connection_tokens(headers: CIMultiDictProxy[str]) -> set[str]:
    """Headers named in Connection are hop-by-hop for this message too (RFC 9110 7.6.1)."""
    if hdrs.CONNECTION not in headers:
        return set()
    return {
        token.strip().lower()
        for value in headers.getall(hdrs.CONNECTION, ())
        for token in value.split(",")
    } - _END_TO_END


def upstream_headers(
    request: web.BaseRequest,
    *,
    request_id: str,
    principal: Principal | None,
    identity_headers: tuple[tuple[str, str], ...],
    identity_names: frozenset[str],
    cookie_names: frozenset[str],
    drop_authorization: bool,
    client: str,
    preserve_host: bool,
    proto: str = "",
) -> Headers:
    """A plain list: built once, read once by the client session, no multidict lookups.

    `client` is the client address as `trusted_proxies` determines it, sent as X-Real-IP;
    `proto` is the scheme the browser used when a trusted proxy said so, else ours.
    With `preserve_host` the client's Host goes upstream (else the client session sets the
    upstream URL's own).
    """
    drop = identity_names
    if hdrs.CONNECTION in request.headers:
        drop = drop | connection_tokens(request.headers)
    forwarded_for: list[str] = []
    out: Headers = []
    for name, value in request.headers.items():
        lname = name.lower()
        if lname in _NEVER_FORWARDED or lname in drop or lname.startswith("x-user-"):
            continue
        if "_" in lname:
            # CGI-style servers (PHP, WSGI, Rack) read X_User_Id as HTTP_X_USER_ID, the
            # same variable as X-User-Id: such a spelling of our headers is a forgery too
            alias = lname.replace("_", "-")
            if alias in _NEVER_FORWARDED or alias in drop or alias in _MANAGED:
                continue
            if alias.startswith("x-user-"):
                continue
        if lname == "cookie":
            value = strip_cookies(value, cookie_names)
            if not value:
                continue
        elif lname == "x-forwarded-for":
            forwarded_for.append(value)
            continue
        elif lname == "authorization" and drop_authorization:
            continue
        out.append((name, value))
    # the names below were all skipped above, so appending cannot duplicate them
    remote = request.remote
    if remote:
        forwarded_for.append(remote)
    if forwarded_for:
        out.append(("X-Forwarded-For", ", ".join(forwarded_for)))
    out.append(("X-Forwarded-Proto", proto or request.scheme))
    if client:
        out.append(("X-Real-IP", client))
    host = request.headers.get(hdrs.HOST)
    if host:
        out.append(("X-Forwarded-Host", host))
        if preserve_host:
            out.append((hdrs.HOST, host))
    out.append(("X-Request-Id", request_id))
    if principal is not None:
        out.extend(encoded_identity(principal, identity_headers))
    return out


def encoded_identity(
    principal: Principal, identity_headers: tuple[tuple[str, str], ...]
) -> tuple[tuple[str, str], ...]:
    """The identity headers with a value, encoded once per verified token (its memo)."""
    encoded: tuple[tuple[str, str], ...] | None = principal.memo.get(identity_headers)
    if encoded is None:
        encoded = principal.memo[identity_headers] = identity_values(principal, identity_headers)
    return encoded


def identity_values(
    principal: Principal, identity_headers: tuple[tuple[str, str], ...]
) -> tuple[tuple[str, str], ...]:
    pairs = (
        (header, header_value(principal.claims.get(claim))) for header, claim in identity_headers
    )
    return tuple((header, value) for header, value in pairs if value is not None)


def response_headers(upstream: CIMultiDictProxy[str], extra: Headers) -> Headers:
    """Upstream headers less hop-by-hop ones, then `extra`, which replaces same-named
    upstream headers (but Set-Cookie, which only ever adds)."""
    if len(extra) == 1 and extra[0][0] == "X-Request-Id":
        drop = _NOT_RETURNED_BUT_OURS  # the common case, worked out once
    else:
        drop = _NOT_RETURNED | {name.lower() for name, _ in extra if name.lower() != "set-cookie"}
    if hdrs.CONNECTION in upstream:
        drop = drop | connection_tokens(upstream)
    out: Headers = [(name, value) for name, value in upstream.items() if name.lower() not in drop]
    out.extend(extra)
    return out


# A refused WebSocket handshake: status, reason, headers and (the start of) the body, kept by
# a trace hook, since aiohttp's ws_connect raises without the body.
_Refusal: TypeAlias = tuple[int, str | None, CIMultiDictProxy[str], bytes]
_REFUSAL: ContextVar[list[_Refusal] | None] = ContextVar("ws_refusal", default=None)
_REFUSAL_LIMIT = 64 * 1024


async def _keep_refusal(
    session: aiohttp.ClientSession,
    context: SimpleNamespace,
    params: aiohttp.TraceRequestEndParams,
) -> None:
    box = _REFUSAL.get()
    response = params.response
    if box is None or response.status == 101:
        return
    body = b""
    try:
        while len(body) < _REFUSAL_LIMIT:
            chunk = await response.content.read(_REFUSAL_LIMIT - len(body))
            if not chunk:
                break
            body += chunk
    except (aiohttp.ClientError, OSError):
        pass  # what arrived is still the app's answer
    box.append((response.status, response.reason, response.headers, body))


REFUSAL_TRACE = aiohttp.TraceConfig()
REFUSAL_TRACE.on_request_end.append(_keep_refusal)
REFUSAL_TRACE.freeze()


def failed(request: web.BaseRequest, exc: BaseException) -> web.Response:
    """504 for a timeout, else 502; either way one warning naming the cause, which is what
    an operator needs to tell a down app from a slow one (never the URL: its query may
    carry secrets)."""
    timeout = isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError)
    log.warning(
        "upstream timed out: answering 504" if timeout else "upstream failed: answering 502",
        extra={"cause": _cause(exc), "error": type(exc).__name__},
    )
    return responses.gateway_timeout(request) if timeout else responses.bad_gateway(request)


def _cause(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "dns"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "connection refused"
        return "cannot connect"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "connection closed by the upstream"
    if isinstance(exc, ConnectionResetError | aiohttp.ClientOSError):
        return "connection reset"
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        return "malformed response"
    return "error"


async def continue_if_expected(request: web.BaseRequest) -> bool:
    """Answer `Expect: 100-continue` once the request is allowed; False for any other expectation.

    Only after the auth decision: a client about to upload a large body learns it is
    unauthorized before sending it. The upstream is not asked (Expect is not forwarded).
    """
    expect = request.headers.get(hdrs.EXPECT)
    if expect is None:
        return True
    if expect.lower() != "100-continue":
        return False
    if request.version >= aiohttp.HttpVersion11:
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the interim response is not the response
    return True


async def forward(
    request: web.BaseRequest,
    session: aiohttp.ClientSession,
    url: URL,
    headers: Headers,
    timeout: aiohttp.ClientTimeout,
    extra_headers: Headers,
    close: bool = False,
) -> tuple[web.StreamResponse, int]:
    """Send the request upstream and stream the answer back. Returns (response, upstream status).

    `close`: the client connection ends after this answer (aiohttp's parser took the
    request's Upgrade for a protocol switch and reads no further request on it).
    """
    data = request.content if request.body_exists else None
    try:
        upstream = await session.request(
            request.method, url, headers=headers, data=data, allow_redirects=False, timeout=timeout
        )
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        return failed(request, exc), 0
    except (aiohttp.ClientError, OSError) as exc:
        return failed(request, exc), 0
    try:
        out_headers = response_headers(upstream.headers, extra_headers)
        status, length = upstream.status, upstream.content_length
        if request.method != "HEAD" and length is not None and length <= _BUFFER_LIMIT:
            try:
                body = await upstream.read()
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                return failed(request, exc), status
            buffered = web.Response(
                status=status, reason=upstream.reason, headers=out_headers, body=body
            )
            if close:
                buffered.force_close()
            return buffered, status
        response = web.StreamResponse(status=status, reason=upstream.reason, headers=out_headers)
        if close:
            response.force_close()
        if length is not None:
            response.content_length = length
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            # Headers are gone already: cutting the connection is the only honest signal,
            # a clean end would pass a truncated body off as complete.
            log.warning("upstream broke off mid-response: %s", type(exc).__name__)
            if request.transport is not None:
                request.transport.close()
            return response, status
        await response.write_eof()
        return response, status
    finally:
        upstream.release()


async def forward_websocket(
    request: web.BaseRequest,
    session: aiohttp.ClientSession,
    url: URL,
    headers: Headers,
    timeout: aiohttp.ClientTimeout,
    extra_headers: Headers,
    ended: Coroutine[Any, Any, None] | None = None,
) -> tuple[web.StreamResponse, int]:
    """Handshake with the upstream first, then with the client, then pump frames both ways.

    `ended` completes when the session behind the socket is logged out or revoked:
    both sides are then closed (1008 to the client, 1001 to the upstream).
    """
    protocols = [
        p.strip()
        for p in request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "").split(",")
        if p.strip()
    ]
    headers = [(name, value) for name, value in headers if name.lower() not in _WS_HANDSHAKE]
    ws_url = url.with_scheme("wss" if url.scheme == "https" else "ws")
    box: list[_Refusal] = []
    token = _REFUSAL.set(box)
    try:
        async with asyncio.timeout(timeout.sock_read):
            upstream = await session.ws_connect(
                ws_url,
                headers=headers,
                protocols=protocols,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10),
                autoping=True,
            )
    except aiohttp.WSServerHandshakeError as exc:
        _discard(ended)
        refusal = box.pop() if box else None
        if refusal is None or exc.status == 101:  # a 101 without a proper handshake
            return responses.bad_gateway(request), exc.status
        # the app said no (403, 404, 401...): its answer is the client's, never a 502
        status, reason, upstream_headers, body = refusal
        return web.Response(
            status=status,
            reason=reason,
            headers=response_headers(upstream_headers, extra_headers),
            body=body,
        ), status
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        _discard(ended)
        return failed(request, exc), 0
    finally:
        _REFUSAL.reset(token)
    client = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else ())
    for name, value in extra_headers:
        client.headers.add(name, value)
    try:
        await client.prepare(request)
        await _pump(client, upstream, ended)
    finally:
        _discard(ended)
        await upstream.close()
        await client.close()
    return client, 101


def _discard(coroutine: Coroutine[Any, Any, None] | None) -> None:
    if coroutine is not None:
        coroutine.close()  # never started, or already done: no "never awaited" warning


async def _pump(
    client: web.WebSocketResponse,
    upstream: aiohttp.ClientWebSocketResponse,
    ended: Coroutine[Any, Any, None] | None,
) -> None:
    """Copy frames both ways until one side closes, then close the other with the same code."""

    async def copy(source: Socket, sink: Socket) -> Socket:
        async for message in source:
            if message.type == aiohttp.WSMsgType.TEXT:
                await sink.send_str(message.data)
            elif message.type == aiohttp.WSMsgType.BINARY:
                await sink.send_bytes(message.data)
        return source

    tasks: dict[asyncio.Future[Socket], Socket] = {
        asyncio.ensure_future(copy(client, upstream)): upstream,
        asyncio.ensure_future(copy(upstream, client)): client,
    }
    running: list[asyncio.Future[Any]] = list(tasks)
    if ended is not None:
        running.append(asyncio.ensure_future(ended))
    try:
        done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
    finally:
        # only one reader per socket: stop the other direction before closing its sink
        for future in running:
            future.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    for task in tasks:
        if task in done and not task.cancelled() and task.exception() is None:
            source = task.result()
            await tasks[task].close(code=source.close_code or aiohttp.WSCloseCode.OK)
            return
    if ended is not None and running[-1] in done:  # the session ended under the open socket
        await client.close(code=aiohttp.WSCloseCode.POLICY_VIOLATION, message=b"session ended")
        await upstream.close(code=aiohttp.WSCloseCode.GOING_AWAY)
