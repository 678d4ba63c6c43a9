"""RP-initiated logout: signing out of the gateway also signs out at the provider.

Called by the logout page before it ends the gateway session: when the
session's cookies name a family that was signed in at a provider that
announces an `end_session_endpoint`, the browser is sent there (303) with
`id_token_hint`, `client_id` and `post_logout_redirect_uri` = this site's
login page (register that URL at the provider). The provider link is dropped
only after the gateway session has ended: a logout answered 503 (the store
could not end or confirm it) keeps the link, so the retry still signs out at
the provider. Without a provider session, or without the endpoint, nothing
changes: the gateway's own logout answer stands.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from yarl import URL

from ..auth import cookie_value
from ..errors import TokenError
from ..sessions import PROVIDER
from ..tokens import REFRESH, Verifier
from .http import ProviderUnavailable
from .links import Link, load
from .relying import Relying


@dataclass(frozen=True, slots=True)
class ProviderLogout:
    """Where to send the browser (None: the login page) and the family whose link goes."""

    location: str | None
    family: str
    subject: str

    async def forget(self, relying: Relying) -> None:
        """After the gateway session ended: the provider link (and its refresh token) goes."""
        await relying.store.drop_provider_link(self.family, self.subject)


async def provider_logout(
    relying: Relying, request: web.BaseRequest, verifier: Verifier
) -> ProviderLogout | None:
    """None when the cookies name no provider session. Nothing is changed here: a logout
    that fails after this (503, a store that could not confirm it) and is retried must
    still find the link and send the browser to the provider."""
    found = None
    for name, kind in ((relying.cookies.refresh, REFRESH), (relying.cookies.access, "access")):
        token = cookie_value(request, name)
        if token is None:
            continue
        try:
            claims = verifier.verify(token, kind).claims
        except TokenError:
            continue
        if PROVIDER in claims and isinstance(claims.get("fam"), str):
            found = (claims["fam"], str(claims["sub"]))
            break
    if found is None:
        return None
    family, subject = found
    link = await load(relying, family, subject)
    return ProviderLogout(await _location(relying, request, link), family, subject)


async def _location(relying: Relying, request: web.BaseRequest, link: Link | None) -> str | None:
    site = relying.site(request)
    if link is None or link.provider not in relying.providers or site is None:
        return None
    provider = relying.providers[link.provider]
    try:
        metadata = await relying.state(provider).discover(relying.home.session)
    except ProviderUnavailable:
        return None  # the gateway session ends anyway; the provider's may outlive it
    if metadata.end_session_endpoint is None:
        return None
    location = URL(metadata.end_session_endpoint).update_query(
        id_token_hint=link.id_token,
        client_id=provider.client_id,
        post_logout_redirect_uri=site + relying.login_path,
    )
    return str(location)
