"""A provider's discovery document and JWKS: fetched, checked, cached, refetched.

Discovery (`{issuer}/.well-known/openid-configuration`) is trusted only as far
as it agrees with the config: its `issuer` must be the configured one exactly
(OpenID Connect Discovery 4.3), and every endpoint must be https:// (http://
only on a loopback host, and only when the issuer itself is such an http://
one). A document that fails is refused whole: the provider stays unreachable,
with the reason in one `oidc_unreachable` log line. The JWKS is refetched when a token
names a `kid` the cached set lacks (the provider rotated its keys), at most
once per REFETCH_EVERY per provider, so a flood of tokens with made-up kids
cannot make the gateway hammer the provider. `oct` (shared-secret) keys and
encryption keys in a JWKS are dropped: a public document never holds an HMAC
key the gateway would accept.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from asyncio import Future
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import jwt
from yarl import URL

from ..config.providers import ProviderConfig
from .http import ProviderUnavailable, get_json

REFETCH_EVERY = 60.0  # seconds between two JWKS fetches for an unknown kid
ASYMMETRIC = frozenset(
    ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
)
HMAC = frozenset(("HS256", "HS384", "HS512"))

log = logging.getLogger("gateway.oidc")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Metadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    end_session_endpoint: str | None
    algorithms: frozenset[str]  # id_token_signing_alg_values_supported
    secret_basic: bool  # client_secret_basic is offered (the default when none is named)


def parse_metadata(doc: dict[str, Any], issuer: str) -> Metadata:
    """The parts of a discovery document the gateway uses; ProviderUnavailable if unfit."""
    if doc.get("issuer") != issuer:
        raise ProviderUnavailable("the discovery document names another issuer")
    https = URL(issuer).scheme == "https"
    urls: dict[str, str | None] = {}
    for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        urls[name] = _endpoint(doc, name, required=True, https=https)
    for name in ("userinfo_endpoint", "end_session_endpoint"):
        urls[name] = _endpoint(doc, name, required=False, https=https)
    announced = doc.get("id_token_signing_alg_values_supported", ["RS256"])
    if not isinstance(announced, list) or not all(isinstance(a, str) for a in announced):
        raise ProviderUnavailable("id_token_signing_alg_values_supported is not a list")
    methods = doc.get("token_endpoint_auth_methods_supported", ["client_secret_basic"])
    return Metadata(
        issuer=issuer,
        authorization_endpoint=str(urls["authorization_endpoint"]),
        token_endpoint=str(urls["token_endpoint"]),
        jwks_uri=str(urls["jwks_uri"]),
        userinfo_endpoint=urls["userinfo_endpoint"],
        end_session_endpoint=urls["end_session_endpoint"],
        algorithms=frozenset(announced) - {"none"},
        secret_basic=isinstance(methods, list) and "client_secret_basic" in methods,
    )


def _endpoint(doc: dict[str, Any], name: str, *, required: bool, https: bool) -> str | None:
    """An https:// endpoint; http:// only on loopback, and only for an http:// (loopback)
    issuer: an https issuer's document naming http://127.0.0.1 would have the gateway send
    its client secret, codes and tokens in clear to whatever listens on this host."""
    value = doc.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not safe_url(value):
        raise ProviderUnavailable(f"the discovery document's {name} is missing or not https")
    if https and URL(value).scheme != "https":
        raise ProviderUnavailable(
            f"the discovery document's {name} is not https like the issuer: refused"
        )
    return value


def safe_url(text: str) -> bool:
    """https://host..., or http:// to a loopback host (tests, local development)."""
    try:
        url = URL(text)
    except ValueError:
        return False
    if not url.host or url.user or url.password:
        return False
    if url.scheme == "https":
        return True
    if url.scheme != "http":
        return False
    host = url.host.strip("[]")
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_jwks(doc: dict[str, Any]) -> jwt.PyJWKSet:
    keys = doc.get("keys")
    if not isinstance(keys, list):
        raise ProviderUnavailable("the JWKS has no keys list")
    usable = [
        k
        for k in keys
        if isinstance(k, dict) and k.get("kty") in ("RSA", "EC", "OKP") and k.get("use") != "enc"
    ]
    try:
        return jwt.PyJWKSet(usable)
    except jwt.PyJWTError:
        raise ProviderUnavailable("the JWKS holds no usable signing key") from None


class ProviderState:
    """One provider's discovery and keys, kept for the process (across reloads).

    Callers never queue behind each other's network calls: all who need discovery
    (or a JWKS refetch) while one is under way await that one (a shared future,
    shielded so that a caller's cancelled request does not cancel it for the rest),
    so a slow or dead provider costs each of them one `timeout` at most. While the
    background retry (home.py) holds the provider down (`down_until`), a provider never
    discovered answers ProviderUnavailable at once, without a call. It holds it only
    after a slow failure (`failed_slowly`: no answer within half the timeout): a refused
    connection costs nothing to try again, and a provider that has just come up is then
    found by the next sign-in, not by the next background retry."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.metadata: Metadata | None = None
        self.keys: jwt.PyJWKSet | None = None
        self.error: str | None = None  # why the last attempt failed, for /readyz and logs
        self.down_until = 0.0  # monotonic; set by the background retry after a failure
        self.failed_slowly = False  # the last discovery failed after half its timeout or more
        self._keys_at = -REFETCH_EVERY  # the last refetch for an unknown kid (not discovery)
        self._discovery: asyncio.Future[Metadata] | None = None
        self._refetch: asyncio.Future[bool] | None = None

    @property
    def reachable(self) -> bool:
        return self.metadata is not None and self.error is None

    async def discover(self, session: aiohttp.ClientSession, *, again: bool = False) -> Metadata:
        """The metadata and keys, fetched once (or `again`); ProviderUnavailable if not."""
        if self.metadata is not None and self.keys is not None and not again:
            return self.metadata
        if not again and time.monotonic() < self.down_until:
            raise ProviderUnavailable(self.error or "the provider is down")
        if self._discovery is None:
            self._discovery = _shared(self._fetch(session), self._landed)
        return await asyncio.shield(self._discovery)

    async def _fetch(self, session: aiohttp.ClientSession) -> Metadata:
        timeout = self.config.timeout
        url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
        began = time.monotonic()
        try:
            metadata = parse_metadata(await get_json(session, url, timeout), self.config.issuer)
            keys = parse_jwks(await get_json(session, metadata.jwks_uri, timeout))
        except ProviderUnavailable as exc:
            self.failed_slowly = time.monotonic() - began >= timeout / 2
            self._failed(str(exc))
            raise
        self.metadata, self.keys, self.error = metadata, keys, None
        return metadata

    async def refetch_keys(self, session: aiohttp.ClientSession) -> bool:
        """An unknown kid: fetch the JWKS again unless that was done within REFETCH_EVERY.
        True when a new set was fetched (also by another caller's refetch under way)."""
        metadata = await self.discover(session)
        if self._refetch is None:
            if time.monotonic() - self._keys_at < REFETCH_EVERY:
                return False
            self._keys_at = time.monotonic()
            self._refetch = _shared(self._fetch_keys(session, metadata), self._landed)
        return await asyncio.shield(self._refetch)

    async def _fetch_keys(self, session: aiohttp.ClientSession, metadata: Metadata) -> bool:
        try:
            self.keys = parse_jwks(await get_json(session, metadata.jwks_uri, self.config.timeout))
        except ProviderUnavailable as exc:
            self._failed(str(exc))
            raise
        self.error = None
        return True

    def _landed(self, future: asyncio.Future[Any]) -> None:
        """The call under way is over: the next caller starts a new one."""
        if future is self._discovery:
            self._discovery = None
        if future is self._refetch:
            self._refetch = None
        if not future.cancelled():
            future.exception()  # retrieved: its waiters, if any, got it already

    def _failed(self, why: str) -> None:
        """Logged once per new reason (never a body, a token or a query string)."""
        if why != self.error:
            log.warning(
                "OpenID provider unreachable",
                extra={"event": "oidc_unreachable", "provider": self.config.id, "why": why},
            )
        self.error = why


def _shared(
    call: Coroutine[Any, Any, T], landed: Callable[[asyncio.Future[Any]], None]
) -> Future[T]:
    task = asyncio.ensure_future(call)
    task.add_done_callback(landed)
    return task
