"""The claims a provider vouches for at a refresh: its new ID token, verified again.

When a refresh at the provider answers with an ID token, the gateway verifies
it as at sign-in (signature, algorithm, iss, aud/azp, exp, iat; no nonce: a
refresh carries none to compare), requires the same provider `sub` as the
session's (OpenID Connect Core 12.2), maps the claims again (the userinfo
endpoint for what the token lacks) and admits the user again. So a role taken
away at the provider, or a user moved out of `allowed_roles`, takes effect at
the next rotation, as an edit of the users file does. A token that fails, a
changed subject, or a user no longer admitted ends the session (Refused or
NotAdmitted, raised to links.refresh); no ID token keeps the claims as they were.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config.providers import ProviderConfig
from . import claims as mapping
from .http import get_json
from .verify import Refused

if TYPE_CHECKING:
    from .relying import Relying


async def claims_after_refresh(
    relying: Relying,
    provider: ProviderConfig,
    tokens: dict[str, Any],
    provider_sub: str,
    subject: str,
) -> dict[str, Any] | None:
    """The session's new gateway claims; None when the answer has no ID token."""
    id_token = tokens.get("id_token")
    if not isinstance(id_token, str) or not id_token:
        return None
    state = relying.state(provider)
    raw = await relying.verified(provider, id_token, refreshed=True)
    if raw.get("sub") != provider_sub:
        raise Refused("refreshed ID token for another subject")
    access = tokens.get("access_token")
    userinfo = state.metadata.userinfo_endpoint if state.metadata else None
    if mapping.missing(provider, raw) and userinfo and isinstance(access, str):
        info = await get_json(relying.home.session, userinfo, provider.timeout, bearer=access)
        if info.get("sub") == provider_sub:
            raw = {**info, **raw}
    try:
        found = mapping.gateway_claims(provider, raw)
    except ValueError as exc:
        raise Refused(str(exc)[:100]) from None
    if found["sub"] != subject:
        raise Refused("the mapped subject changed")
    mapping.admit(provider, found, raw)
    return found
