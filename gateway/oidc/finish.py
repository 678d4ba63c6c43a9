"""The end of a callback: code exchange, ID token, claims, and the gateway's session.

Reached only with a valid, single-use state of this browser (flow.py). The
code is exchanged server to server (with the PKCE verifier, and the client
secret where there is one); the ID token is verified (verify.py), after one
rate-limited JWKS refetch if its `kid` is new; claims the ID token lacks come
from the userinfo endpoint, whose `sub` must match. Then the claims are
mapped and admitted (claims.py); a mapped subject that is a users_file user's
name is refused (403, `oidc_subject_collision`): the provider's user would
otherwise become that user. Then the session starts as after a password
sign-in, its provider link saved (links.py). A refusal is a page and a
security event; ProviderUnavailable propagates to the caller (503).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import hdrs, web

from .. import metrics, responses
from ..clientaddr import client_address
from ..config.providers import ProviderConfig
from ..credentials import UsersFile
from ..errors import TokenError
from ..login import Result
from ..runtime import Snapshot
from . import claims as mapping
from .answers import refused
from .http import ProviderRefused, ProviderUnavailable, get_json, post_form
from .links import Link, save
from .relying import Relying
from .verify import Refused

log = logging.getLogger("gateway.security")


@dataclass(frozen=True, slots=True)
class Pending:
    provider: str
    nonce: str
    verifier: str
    browser: str  # digest of the STATE_COOKIE value
    next: str
    redirect_uri: str


async def finish(
    request: web.BaseRequest,
    snapshot: Snapshot,
    provider: ProviderConfig,
    pending: Pending,
    code: str,
) -> Result:
    relying = _relying(snapshot)
    session = relying.home.session
    metadata = await relying.state(provider).discover(session)
    address = client_address(request, relying.trusted)

    def deny(status: int, event: str, why: str, error: str = "", exchange: bool = False) -> Result:
        """One security event (never a token), counted, and the login page saying so."""
        log.warning(
            "OpenID sign-in refused",
            extra={"event": event, "provider": provider.id, "why": why, "client": address},
        )
        metrics.LOGINS.labels("failure").inc()
        page = refused(
            request, snapshot, provider, pending.next, error, status=status, exchange=exchange
        )
        return Result(page, event)

    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": pending.redirect_uri,
        "code_verifier": pending.verifier,
    }
    try:
        tokens = await post_form(
            session, metadata.token_endpoint, *relying.client_auth(provider, form, metadata)
        )
    except ProviderRefused as exc:  # a code used twice, expired, or PKCE that does not match
        return deny(401, "oidc_code_refused", exc.error, exc.error, exchange=True)
    id_token = tokens.get("id_token")
    if not isinstance(id_token, str) or not id_token:
        raise ProviderUnavailable("the token endpoint sent no id_token")
    try:
        raw = await relying.verified(provider, id_token, nonce=pending.nonce)
    except Refused as exc:
        return deny(401, "oidc_token_refused", exc.reason)
    access = tokens.get("access_token")
    if mapping.missing(provider, raw) and metadata.userinfo_endpoint and isinstance(access, str):
        info = await get_json(session, metadata.userinfo_endpoint, provider.timeout, bearer=access)
        if info.get("sub") != raw["sub"]:  # OpenID Connect Core 5.3.2
            return deny(401, "oidc_token_refused", "userinfo for another subject")
        raw = {**info, **raw}  # the signed ID token wins
    try:
        claims = mapping.gateway_claims(provider, raw)
        mapping.admit(provider, claims, raw)
    except (ValueError, mapping.NotAdmitted) as exc:
        return deny(403, "oidc_not_admitted", str(exc)[:100])
    users = snapshot.credentials
    if isinstance(users, UsersFile) and mapping.collides(claims["sub"], users.users):
        # never become a password user by carrying the name: give the provider a prefix
        return deny(403, "oidc_subject_collision", "the subject is a users_file user")
    try:
        issued = await relying.sessions.start(
            claims, address, request.headers.get(hdrs.USER_AGENT, "")
        )
    except TokenError as exc:  # claims that do not make a valid token
        log.error(
            "OpenID sign-in refused: claims do not fit a token",
            extra={"event": "oidc_claims", "why": str(exc)},
        )
        metrics.LOGINS.labels("unavailable").inc()
        return Result(responses.service_unavailable(request), "oidc_unavailable")
    subject = issued.principal.subject
    refresh_token = tokens.get("refresh_token")
    sid = raw.get("sid")
    link = Link(
        provider=provider.id,
        sub=str(raw["sub"]),
        sid=sid if isinstance(sid, str) and sid else None,
        refresh_token=refresh_token if isinstance(refresh_token, str) and refresh_token else None,
        id_token=id_token,
    )
    await save(relying, str(issued.principal.claims["fam"]), subject, link)
    metrics.LOGINS.labels("success").inc()
    log.info(
        "login",
        extra={"event": "login", "user": subject, "client": address, "provider": provider.id},
    )
    response = web.Response(status=303, headers={hdrs.LOCATION: pending.next})
    response.headers[hdrs.CACHE_CONTROL] = "no-store"
    for name, value in issued.set_cookies:
        response.headers.add(name, value)
    return Result(response, "login", subject)


def _relying(snapshot: Snapshot) -> Relying:
    assert snapshot.oidc is not None  # noqa: S101 - routed only when providers are configured
    return snapshot.oidc
