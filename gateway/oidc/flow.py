"""The authorization code flow with PKCE: start, and the callback that finishes it.

Start: `state`, `nonce` and the PKCE verifier are random (`secrets`), kept in
the store (so any replica can finish) under the state's digest for
STATE_TTL, single use (taken with an atomic get-and-delete), and bound to
this browser: the record holds the digest of a random value in the
STATE_COOKIE cookie (HttpOnly, SameSite=Lax, Path = `{login.path}/{id}`,
which covers the start and its callback), which the callback must present. A
browser keeps one such value while it lives (each start sees it and reuses
it), so two sign-ins in two tabs both finish.

Callback: state first (missing, unknown, expired, used, another provider's or
another browser's: 400), then the provider's answer (`error=...`: the login
page, 401), then the code exchanged server to server and the ID token
verified (verify.py; a failure is 401 and a security event), the claims
mapped and admitted (403), and a gateway session started exactly as after a
password sign-in. Every failure leaves no session and no session cookie.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import logging
import secrets

from aiohttp import hdrs, web
from yarl import URL

from .. import metrics, responses
from ..clientaddr import client_address
from ..config.providers import ProviderConfig
from ..login import Result, safe_next
from ..runtime import Snapshot
from ..store import digest
from .answers import bad_state, refused, unavailable
from .finish import Pending, finish
from .http import ProviderUnavailable
from .relying import Relying

STATE_COOKIE = "gateway_oidc"
STATE_TTL = 600.0
START_LIMIT, START_WINDOW = 600, 60.0  # per client network per minute: a big NAT signs in too
MAX_NEXT = 512  # bytes of `next` kept with a start; a longer one comes back as "/"
_COOKIE_VALUE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_MAX_PARAM = 2048
log = logging.getLogger("gateway.security")


async def start(request: web.BaseRequest, snapshot: Snapshot, provider: ProviderConfig) -> Result:
    relying = _relying(snapshot)
    site = relying.site(request)
    if site is None:
        return Result(bad_state(request, "the request's Host is not a host name"), "oidc_bad_host")
    try:
        metadata = await relying.state(provider).discover(relying.home.session)
    except ProviderUnavailable:
        next_path = safe_next(request.query.get("next"))
        return Result(unavailable(request, snapshot, provider, next_path), "oidc_unavailable")
    # each start writes a record for 10 minutes: bounded per client network, so nobody fills
    # the store with sign-ins never finished
    client = client_address(request, relying.trusted)
    counted = f"oidc-start\0{start_network(client)}"
    if await relying.store.bump(counted, START_WINDOW) > START_LIMIT:
        log.warning(
            "OpenID sign-ins throttled",
            extra={"event": "oidc_throttled", "provider": provider.id, "client": client},
        )
        page = "Too many sign-ins were started from here. Wait a minute, then try again."
        return Result(responses.too_many(request, int(START_WINDOW), page), "oidc_throttled")
    browser = request.cookies.get(STATE_COOKIE, "")
    if not (43 <= len(browser) <= 64 and set(browser) <= _COOKIE_VALUE):
        browser = secrets.token_urlsafe(32)
    state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
    pending = Pending(
        provider=provider.id,
        nonce=nonce,
        verifier=verifier,
        browser=digest(browser),
        next=_kept_next(request.query.get("next")),
        redirect_uri=relying.redirect_uri(site, provider),
    )
    record = json.dumps(_as_dict(pending))
    await relying.store.put_login_state(digest(state), record, STATE_TTL)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    location = URL(metadata.authorization_endpoint).update_query(
        response_type="code",
        client_id=provider.client_id,
        redirect_uri=pending.redirect_uri,
        scope=" ".join(provider.scopes),
        state=state,
        nonce=nonce,
        code_challenge=challenge.rstrip(b"=").decode(),
        code_challenge_method="S256",
    )
    response = web.Response(status=302, headers={hdrs.LOCATION: str(location)})
    response.headers[hdrs.CACHE_CONTROL] = "no-store"
    response.headers.add(hdrs.SET_COOKIE, _state_cookie(relying, provider, browser))
    return Result(response, "oidc_start")


def start_network(client: str) -> str:
    """What the start limit counts: an IPv4 address, or an IPv6 address's /64. One host
    is usually given a whole /64 and picks addresses in it at will, so counting per
    IPv6 address would multiply the limit by 2**64."""
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return client
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _kept_next(value: str | None) -> str:
    """`next` as kept in the store: a safe path of at most MAX_NEXT bytes, else "/"; the
    anonymous record each start writes stays a few hundred bytes."""
    kept = safe_next(value)
    return kept if len(kept.encode()) <= MAX_NEXT else "/"


def _as_dict(pending: Pending) -> dict[str, str]:
    return {name: getattr(pending, name) for name in Pending.__slots__}


def _state_cookie(relying: Relying, provider: ProviderConfig, value: str) -> str:
    # the start's own path and the callback below it: the next start in this browser sees
    # the value and keeps it, so a sign-in begun in another tab still finishes
    path = f"{relying.login_path.rstrip('/')}/{provider.id}"
    secure = "; Secure" if relying.cookies.secure else ""
    attributes = f"Max-Age={int(STATE_TTL)}; Path={path}; HttpOnly{secure}; SameSite=Lax"
    return f"{STATE_COOKIE}={value}; {attributes}"


async def callback(
    request: web.BaseRequest, snapshot: Snapshot, provider: ProviderConfig
) -> Result:
    relying = _relying(snapshot)
    pending, why = await _take_state(request, relying, provider)
    if pending is None:
        log.warning(
            "OpenID sign-in refused: bad state",
            extra={"event": "oidc_state_refused", "provider": provider.id, "why": why},
        )
        return Result(bad_state(request, why), "oidc_bad_state")
    iss = request.query.get("iss")
    if iss is not None and iss != provider.issuer:  # RFC 9207: a mix-up of providers
        log.warning(
            "OpenID sign-in refused: answer from another issuer",
            extra={"event": "oidc_state_refused", "provider": provider.id, "why": "iss"},
        )
        return Result(bad_state(request, "the answer came from another issuer"), "oidc_bad_state")
    error = request.query.get("error")
    if error is not None:
        log.warning(
            "OpenID sign-in refused by the provider",
            extra={"event": "oidc_denied", "provider": provider.id, "why": error[:64]},
        )
        metrics.LOGINS.labels("failure").inc()
        return Result(refused(request, snapshot, provider, pending.next, error), "oidc_denied")
    code = request.query.get("code", "")
    if not code or len(code) > _MAX_PARAM:
        return Result(bad_state(request, "the provider sent no code"), "oidc_bad_state")
    try:
        return await finish(request, snapshot, provider, pending, code)
    except ProviderUnavailable as exc:
        metrics.LOGINS.labels("unavailable").inc()
        log.error(
            "OpenID provider unavailable: sign-in refused",
            extra={"event": "oidc_unavailable", "provider": provider.id, "why": str(exc)},
        )
        return Result(unavailable(request, snapshot, provider, pending.next), "oidc_unavailable")


async def _take_state(
    request: web.BaseRequest, relying: Relying, provider: ProviderConfig
) -> tuple[Pending | None, str]:
    state = request.query.get("state", "")
    if not state or len(state) > _MAX_PARAM:
        return None, "the sign-in has no state; start it again"
    record = await relying.store.take_login_state(digest(state))
    if record is None:
        return None, "this sign-in expired or was already used; start it again"
    try:
        pending = Pending(**json.loads(record))
    except (ValueError, TypeError):
        return None, "this sign-in cannot be finished; start it again"
    if pending.provider != provider.id:
        return None, "this sign-in was started for another provider; start it again"
    browser = request.cookies.get(STATE_COOKIE, "")
    if not browser or not secrets.compare_digest(digest(browser), pending.browser):
        return None, "this sign-in was started in another browser; start it again here"
    return pending, ""


def _relying(snapshot: Snapshot) -> Relying:
    assert snapshot.oidc is not None  # noqa: S101 - routed only when providers are configured
    return snapshot.oidc
