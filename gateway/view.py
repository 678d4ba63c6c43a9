"""What a decision reads of a request: a frozen view, whichever door it came in by.

The proxy door builds it from the live request; a forward-auth door would build
it from a trusted outer proxy's `X-Forwarded-*`/`X-Original-*` headers, and
`gateway explain` from its command line. Everything that decides (routes,
cross-site rule, credentials, refresh) reads this view or anything else with a
method and headers (`Asking`), never the transport, so every door decides alike.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from multidict import CIMultiDictProxy


class Asking(Protocol):
    """A live `web.BaseRequest` or a `RequestView`: what the helpers that read headers need."""

    @property
    def method(self) -> str: ...

    @property
    def headers(self) -> CIMultiDictProxy[str]: ...


class RequestView(NamedTuple):
    """Built per request: a NamedTuple, immutable, and cheaper than a frozen dataclass."""

    method: str
    raw_path: str  # as the client sent it, no query
    path: str  # normalized (paths.normalize): what the upstream receives
    query: str  # raw, without '?'
    host: str  # the Host the client sent ("" when none)
    scheme: str  # as the browser used it (a trusted proxy's X-Forwarded-Proto), else ours
    client: str  # the client address per trusted_proxies
    headers: CIMultiDictProxy[str]
    websocket: bool = False

    @property
    def target(self) -> str:
        """Path and query: where a browser is sent back to after signing in."""
        return self.path + ("?" + self.query if self.query else "")
