"""What a gateway session keeps of its provider session, and staying in step with it.

The link record (one per refresh-token family, in the store, with the
family's TTL) holds the provider's refresh token, the ID token (for
`id_token_hint` at logout), and the provider's `sub` and `sid` as the
provider sent them; the `sid` and `sub` are also filed in an index so a
back-channel logout finds every family to end.

Each time the gateway rotates such a session, it first refreshes at the
provider with the provider's refresh token. `invalid_grant` (the user was
disabled or signed out there) ends the gateway session; a provider that is
down (or refuses the gateway itself: `invalid_client`) makes the request 503
and changes nothing, so the next try can succeed
(never a sign-out for an outage). Parallel requests of one page load present
the same gateway refresh token: one of them (across replicas: whoever sets the
store's once-marker) refreshes at the provider; the others wait for the link
to say it was done for that token, so the provider never sees its refresh
token twice (providers that rotate refresh tokens revoke on reuse).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from ..store import Session, Store
from .claims import NotAdmitted
from .http import ProviderRefused, ProviderUnavailable, post_form
from .recheck import claims_after_refresh
from .verify import Refused

if TYPE_CHECKING:
    from .relying import Relying

security = logging.getLogger("gateway.security")
_POLL = 0.05


@dataclass(frozen=True, slots=True)
class Link:
    provider: str
    sub: str  # the provider's own subject, before claim mapping
    sid: str | None
    refresh_token: str | None
    id_token: str
    refreshed_for: str = ""  # digest of the gateway refresh token last refreshed for

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def loads(cls, text: str | None) -> Link | None:
        if text is None:
            return None
        try:
            data = json.loads(text)
            return cls(**data)
        except (ValueError, TypeError):
            return None  # unreadable: treated as no link, which ends the session


def index_keys(link: Link) -> list[str]:
    keys = [f"{link.provider}\0sub\0{link.sub}"]
    if link.sid:
        keys.append(f"{link.provider}\0sid\0{link.sid}")
    return keys


async def save(relying: Relying, family: str, subject: str, link: Link) -> None:
    store, ttl = relying.store, relying.refresh_ttl
    await store.put_provider_link(family, subject, link.dumps(), ttl)
    for index in index_keys(link):
        await store.index_provider_session(index, family, subject, ttl)


async def load(relying: Relying, family: str, subject: str) -> Link | None:
    return Link.loads(await relying.store.provider_link(family, subject))


async def listed(store: Store, sessions: list[Session]) -> list[dict[str, Any]]:
    """Sessions as `gateway sessions` shows them: each with the provider it came from
    ("password" for a users_file or verify_url sign-in)."""
    rows = []
    for session in sessions:
        link = Link.loads(await store.provider_link(session.family, session.subject))
        rows.append({**asdict(session), "provider": link.provider if link else "password"})
    return rows


async def refresh(
    relying: Relying, family: str, subject: str, presented: str
) -> bool | dict[str, Any]:
    """Before rotating `family` for the token whose digest is `presented`: False when the
    provider refused (the caller ends the session); raises ProviderUnavailable when it did
    not answer. True when the provider still vouches for the user (or issued no refresh
    token, so there is nothing to ask: then the session lives as a password one does);
    the session's new claims when the provider answered with a new ID token (recheck.py)."""
    link = await load(relying, family, subject)
    if link is None or link.provider not in relying.providers:
        return False
    if link.refreshed_for == presented or not link.refresh_token:
        return True
    config = relying.providers[link.provider]
    if not await relying.store.mark_once(
        f"oidc-refresh\0{family}\0{presented}", config.timeout + 1
    ):
        return await _wait_for_other(relying, family, subject, presented, config.timeout + 1)
    state = relying.home.state(config)
    metadata = await state.discover(relying.home.session)
    form = {"grant_type": "refresh_token", "refresh_token": link.refresh_token}
    try:
        tokens = await post_form(
            relying.home.session,
            metadata.token_endpoint,
            *relying.client_auth(config, form, metadata),
        )
    except ProviderRefused as exc:
        if exc.error != "invalid_grant":
            # invalid_client and the like: the gateway's registration, not the user, is
            # wrong; fail closed (503) rather than sign every user of the provider out
            raise ProviderUnavailable(f"the provider refused the refresh: {exc.error}") from None
        await relying.store.drop_provider_link(family, subject)
        security.warning(
            "provider refused the refresh: session ended",
            extra={
                "event": "oidc_refresh_refused",
                "provider": config.id,
                "user": subject,
                "why": exc.error,
            },
        )
        return False
    try:
        claims = await claims_after_refresh(relying, config, tokens, link.sub, subject)
    except (Refused, NotAdmitted) as exc:
        await relying.store.drop_provider_link(family, subject)
        security.warning(
            "the provider's refreshed ID token is refused: session ended",
            extra={"event": "oidc_token_refused", "provider": config.id, "user": subject,
                   "why": getattr(exc, "reason", str(exc))[:100]},
        )  # fmt: skip
        return False
    new_refresh = tokens.get("refresh_token")
    new_id = tokens.get("id_token")
    updated = replace(
        link,
        refresh_token=new_refresh
        if isinstance(new_refresh, str) and new_refresh
        else link.refresh_token,
        id_token=new_id if isinstance(new_id, str) and new_id else link.id_token,
        refreshed_for=presented,
    )
    await relying.store.put_provider_link(family, subject, updated.dumps(), relying.refresh_ttl)
    return True if claims is None else claims


async def _wait_for_other(
    relying: Relying, family: str, subject: str, presented: str, seconds: float
) -> bool:
    """Another request is refreshing this session at the provider: its outcome is ours."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(_POLL)
        link = await load(relying, family, subject)
        if link is None:
            return False
        if link.refreshed_for == presented:
            return True
    raise ProviderUnavailable("a parallel refresh at the provider did not finish")


async def end_by_index(relying: Relying, provider: str, kind: str, value: str) -> int:
    """End every family filed under the provider's `sid` or `sub`; how many were live."""
    families = await relying.store.provider_sessions(f"{provider}\0{kind}\0{value}")
    ended = 0
    for family, subject in families.items():
        # the index key names provider, kind and value: every family filed there ends,
        # also one whose link is already gone (its access token may still be live)
        live = await relying.store.provider_link(family, subject) is not None
        await relying.store.end_family(family, subject, None, relying.deny_for)
        await relying.store.drop_provider_link(family, subject)
        ended += live
    return ended
