"""From the provider's claims to the gateway's, and who may sign in.

`claims:` in the config maps each gateway claim to a provider claim; the ID
token is read first, the userinfo endpoint only for what it lacks. `roles`
may be a list or one string of names split at spaces and commas (Entra ID
and Keycloak send lists, some providers a "a,b" string); a list item holding
a comma is dropped (see `roles`). A provider claim
that is not a string (or list of strings) is left out, never stringified.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..config.providers import ProviderConfig
from ..sessions import PROVIDER

_SPLIT = re.compile(r"[\s,]+")
_MAX = 512  # a claim longer than this is not a name or an address


class NotAdmitted(Exception):
    """Signed in at the provider, but not someone this site admits (403)."""


def missing(provider: ProviderConfig, claims: Mapping[str, Any]) -> bool:
    """Whether the userinfo endpoint should be asked for mapped claims the ID token lacks."""
    wanted = (provider.claims.sub, provider.claims.email, provider.claims.name)
    return any(name not in claims for name in (*wanted, provider.claims.roles))


def gateway_claims(provider: ProviderConfig, claims: Mapping[str, Any]) -> dict[str, Any]:
    """The claims the gateway session carries; ValueError when no usable sub. The gateway's
    `sub` is the provider's mapped claim behind the provider's `subject_prefix`."""
    mapping = provider.claims
    sub = claims.get(mapping.sub)
    if not isinstance(sub, str) or not sub or len(sub) > _MAX:
        raise ValueError(f"the claim {mapping.sub!r} is not a usable subject")
    if mapping.sub in ("email", mapping.email) and not email_verified(provider, claims):
        # an address the user typed but does not own must never name an account
        raise ValueError("an unverified email as the subject")
    found: dict[str, Any] = {"sub": (provider.subject_prefix or "") + sub, PROVIDER: provider.id}
    for name, source in (("email", mapping.email), ("name", mapping.name)):
        value = claims.get(source)
        if isinstance(value, str) and value and len(value) <= _MAX:
            found[name] = value
    found["roles"] = roles(claims.get(mapping.roles))
    return found


def roles(value: Any) -> list[str]:
    if isinstance(value, str):
        items = _SPLIT.split(value)
    elif isinstance(value, list):
        # a name holding a comma would read as two roles to an upstream that splits
        # X-User-Roles: such a name is dropped, never split into a role it did not name
        items = [v for v in value if isinstance(v, str) and "," not in v]
    else:
        return []
    return sorted({item.strip() for item in items if item.strip() and len(item) <= _MAX})


def email_verified(provider: ProviderConfig, raw: Mapping[str, Any]) -> bool:
    """Whether the provider vouches for the address: `email_verified` is true (a boolean, or
    the string "true" some providers send). Missing counts as unverified: Entra ID sends
    none, and an address anyone may set must neither admit nor name a user (nOAuth);
    `trust_unverified_email` is the provider's owner saying the claim needs no such flag."""
    value = raw.get("email_verified")
    return value is True or value == "true" or provider.trust_unverified_email


def collides(subject: str, users: Iterable[str]) -> bool:
    """Whether a provider user's gateway subject names a users_file user (whatever the case:
    an upstream may compare names without it). Such a sign-in would become that user: the
    same X-User-Id, the same sessions and revocation."""
    folded = subject.casefold()
    return any(name.casefold() == folded for name in users)


def admit(provider: ProviderConfig, claims: Mapping[str, Any], raw: Mapping[str, Any]) -> None:
    """Raises NotAdmitted for a user outside allowed_email_domains or allowed_roles;
    `claims` are the gateway's, `raw` the provider's.

    A domain check needs a verified address (see email_verified): an address someone
    typed but does not own never admits by domain."""
    if provider.allowed_email_domains:
        email = claims.get("email")
        domain = email.rpartition("@")[2].lower() if isinstance(email, str) and "@" in email else ""
        if not email_verified(provider, raw) or domain not in provider.allowed_email_domains:
            raise NotAdmitted("email domain")
    if provider.allowed_roles and not set(provider.allowed_roles) & set(claims.get("roles", ())):
        raise NotAdmitted("roles")
