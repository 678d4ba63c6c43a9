"""Calls to a provider: JSON in, JSON out, each bounded by the provider's `timeout`.

A provider that is down, slower than `timeout`, or answers something that is
not a JSON object (an HTML error page, a captive portal, a truncated body) is
one and the same failure to the caller: ProviderUnavailable, answered 503.
It subclasses StoreUnavailable on purpose: any code path that forgets to
catch it still fails closed (503), never lets a request through. Bodies are
read up to MAX_BODY, so a hostile provider cannot make the gateway buffer
gigabytes; nothing from a body reaches a log line.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiohttp import hdrs

from ..store import StoreUnavailable

MAX_BODY = 512 * 1024
KEEPALIVE = 4.0
_ACCEPT: dict[str, str] = {hdrs.ACCEPT: "application/json"}


class ProviderUnavailable(StoreUnavailable):
    """The provider did not answer in time, or not with JSON. `why` is safe to log."""


class ProviderRefused(Exception):
    """The provider answered an OAuth error (`invalid_grant`...): a refusal, not an outage."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def new_session() -> aiohttp.ClientSession:
    """The gateway's own client for providers: normal defaults, no cookies kept, and idle
    connections dropped after KEEPALIVE seconds, before servers drop them (Node's 5 s)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(keepalive_timeout=KEEPALIVE),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
        headers={hdrs.USER_AGENT: "gateway-oidc"},
    )


async def get_json(
    session: aiohttp.ClientSession, url: str, timeout: float, bearer: str | None = None
) -> dict[str, Any]:
    headers = dict(_ACCEPT)
    if bearer is not None:
        headers[hdrs.AUTHORIZATION] = f"Bearer {bearer}"
    status, body = await _call(session, "GET", url, timeout, headers=headers)
    if status != 200:
        raise ProviderUnavailable(f"HTTP {status} from {_where(url)}")
    return body


async def post_form(
    session: aiohttp.ClientSession,
    url: str,
    form: dict[str, str],
    timeout: float,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A token-endpoint call: the JSON object of a 200, ProviderRefused for an OAuth error
    (400/401 with `error`), ProviderUnavailable for anything else."""
    sent = {**_ACCEPT, **(headers or {})}
    status, body = await _call(session, "POST", url, timeout, headers=sent, data=form)
    if status == 200:
        return body
    error = body.get("error")
    if status in (400, 401) and isinstance(error, str) and error:
        raise ProviderRefused(error[:64])
    raise ProviderUnavailable(f"HTTP {status} from {_where(url)}")


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, timeout: float, **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    try:
        async with asyncio.timeout(timeout):
            async with await _send(session, method, url, kwargs) as response:
                data = await read_at_most(response.content, MAX_BODY)
                status = response.status
    except TimeoutError:
        raise ProviderUnavailable(f"no answer from {_where(url)} within {timeout:g}s") from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        raise ProviderUnavailable(f"{type(exc).__name__} calling {_where(url)}") from None
    if len(data) > MAX_BODY:
        raise ProviderUnavailable(f"an answer over {MAX_BODY} bytes from {_where(url)}")
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        if status >= 500 or status == 200:
            raise ProviderUnavailable(f"not JSON from {_where(url)} (HTTP {status})") from None
        body = {}
    if not isinstance(body, dict):
        raise ProviderUnavailable(f"not a JSON object from {_where(url)} (HTTP {status})")
    return status, body


async def _send(
    session: aiohttp.ClientSession, method: str, url: str, kwargs: dict[str, Any]
) -> aiohttp.ClientResponse:
    """The request, sent again once if a pooled connection ended before any answer: the
    provider closed it idle just as it was reused, which is no outage. Never after an
    answer began (a code must not be exchanged twice), nor for a refused connection."""
    for attempt in (1, 2):
        try:
            return await session.request(method, url, allow_redirects=False, **kwargs)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            if attempt == 2 or isinstance(exc, aiohttp.ClientConnectorError):
                raise
    raise AssertionError("not reached")


async def read_at_most(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The whole body, or its first limit + 1 bytes (too long); `read(n)` alone returns
    whatever has arrived, which may be part of a body split across packets."""
    data = b""
    while len(data) <= limit:
        chunk = await stream.read(limit + 1 - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _where(url: str) -> str:
    """scheme://host/path of a URL, for a log line: never its query (codes, tokens)."""
    return url.partition("?")[0][:200]
