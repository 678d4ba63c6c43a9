"""login.providers: OpenID Connect providers to sign in with (SPEC 7.4).

Each item names an issuer; nothing here contacts it (`check-config --online`
and `serve` do). What is checked now: the id is URL-safe and unique (it
appears in `{login.path}/{id}/callback`), the issuer is https:// (http://
only on a loopback host, for tests and local development), and the client
secret comes from an environment variable or a file, never the YAML. A
provider with neither is a public client that proves itself by PKCE alone.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from yarl import URL

from .. import keys
from ..yamlsource import Section
from .declare import key, read
from .endpoints import parse_url, shown

PROVIDER_ID = r"^[a-z0-9-]+$"
ISSUER_URL = r"^([Hh][Tt][Tt][Pp][Ss]://|[Hh][Tt][Tt][Pp]://(127\.|\[::1\]|localhost))[^?#\s]+$"
SUBJECT_PREFIX = r"^[A-Za-z0-9._:/@+-]{1,64}$"
_ID = re.compile(PROVIDER_ID)
_PREFIX = re.compile(SUBJECT_PREFIX)
_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimsMap:
    """Gateway claim <- the provider's claim (ID token first, else the userinfo endpoint)."""

    sub: str = field(default="sub", metadata=key("The provider claim that becomes sub."))
    email: str = field(default="email", metadata=key("The provider claim that becomes email."))
    name: str = field(default="name", metadata=key("The provider claim that becomes name."))
    roles: str = field(
        default="roles",
        metadata=key(
            "The provider claim that becomes roles: a list, or a string split at spaces and"
            " commas (groups, for example)."
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderSecret:
    """Where a confidential client's secret comes from; never the YAML itself."""

    client_secret_env: str | None = field(
        default=None, metadata=key("Environment variable holding the client secret.")
    )
    client_secret_file: str | None = field(
        default=None, metadata=key("File holding the client secret (a Kubernetes Secret).")
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderConfig:
    """An OpenID Connect provider: a button on the login page."""

    MORE_KEYS = (ProviderSecret,)

    id: str = field(
        metadata=key(
            "Short name in URLs: {login.path}/{id}, .../callback, .../backchannel-logout.",
            required="a short name like corp ([a-z0-9-]+)",
            pattern=PROVIDER_ID,
        )
    )
    name: str | None = field(default=None, metadata=key("The button's label; default: the id."))
    issuer: str = field(
        metadata=key(
            "The issuer URL; discovery at {issuer}/.well-known/openid-configuration. https://"
            " (http:// only on a loopback host).",
            required="the provider's issuer URL, like https://idp.example.com",
            pattern=ISSUER_URL,
        )
    )
    client_id: str = field(
        metadata=key(
            "The client id the provider registered for the gateway.",
            required="the client id registered at the provider",
        )
    )
    client_secret: keys.Secret | None = field(default=None)  # from client_secret_env/_file
    scopes: tuple[str, ...] = field(
        default=("openid", "email", "profile"),
        metadata=key("Scopes asked for; openid is always included."),
    )
    claims: ClaimsMap = field(
        default_factory=ClaimsMap,
        metadata=key("Gateway claim: provider claim (sub, email, name, roles)."),
    )
    allowed_email_domains: tuple[str, ...] = field(
        default=(),
        metadata=key("Only users whose (verified) email is in one of these domains may sign in."),
    )
    allowed_roles: tuple[str, ...] = field(
        default=(), metadata=key("Only users with any of these roles may sign in.")
    )
    timeout: float = field(
        default=5, metadata=key("The most each call to the provider may take.", minimum=0.001)
    )
    trust_unverified_email: bool = field(
        default=False,
        metadata=key(
            "Let the mapped email admit by domain, or be the sub, without email_verified: true"
            " (only for a provider that vouches for that claim itself; see sso.md)."
        ),
    )
    subject_prefix: str | None = field(
        default=None,
        metadata=key(
            "Put before the mapped sub (corp: makes alice corp:alice), so this provider's users"
            " are never another provider's, nor users_file users, of the same name.",
            pattern=SUBJECT_PREFIX,
        ),
    )

    @property
    def label(self) -> str:
        return self.name or self.id

    @property
    def public(self) -> bool:
        """No client secret: PKCE alone proves the code was ours."""
        return self.client_secret is None


def read_providers(login: Section, base: Path) -> tuple[ProviderConfig, ...]:
    found: list[ProviderConfig] = []
    seen: set[str] = set()
    for sec in login.sections("providers"):
        provider = _read_provider(sec, base, seen)
        if provider is not None:
            found.append(provider)
    return tuple(found)


def _read_provider(sec: Section, base: Path, seen: set[str]) -> ProviderConfig | None:
    before = len(sec.problems.items)
    values = read(sec, ProviderConfig)
    if values["id"] and not _ID.match(values["id"]):
        sec.error("id", f"expected lower-case letters, digits and '-', got {values['id']!r}")
    elif values["id"] in seen:
        sec.error("id", f"duplicate provider id {values['id']!r}")
    seen.add(values["id"])
    if values["issuer"]:
        values["issuer"] = _issuer(sec, values["issuer"])
    if "openid" not in values["scopes"]:
        values["scopes"] = ("openid", *values["scopes"])
    domains = []
    for domain in values["allowed_email_domains"]:
        clean = domain.strip().lower().lstrip("@")
        if not _DOMAIN.match(clean):
            sec.error(
                "allowed_email_domains", f"expected a domain like example.com, got {domain!r}"
            )
        domains.append(clean)
    values["allowed_email_domains"] = tuple(domains)
    if values["subject_prefix"] is not None and not _PREFIX.match(values["subject_prefix"]):
        sec.error(
            "subject_prefix",
            "expected 1 to 64 letters, digits and . _ : / @ + - (like corp:), got"
            f" {values['subject_prefix']!r}",
        )
    claims = _read_claims(sec.section("claims"))
    secret = _read_secret(sec, base)
    sec.finish()
    if len(sec.problems.items) > before:
        return None
    return ProviderConfig(**values, claims=claims, client_secret=secret)


def subject_warnings(providers: tuple[ProviderConfig, ...], verify_url: bool) -> list[str]:
    """Providers whose users can end up as one user: a warning, not an error, since one
    person at two providers being one user can be what is wanted (sso.md, Subjects)."""
    found = []
    by_prefix: dict[str, list[str]] = {}
    for provider in providers:
        by_prefix.setdefault(provider.subject_prefix or "", []).append(provider.id)
    for prefix, ids in by_prefix.items():
        if len(ids) > 1:
            found.append(
                f"login.providers {', '.join(ids)} map to subjects with the same"
                f" subject_prefix ({prefix!r}): a user named alice at each is one user"
                " (one X-User-Id, one revocation); give each its own subject_prefix"
            )
    if verify_url and "" in by_prefix:
        found.append(
            f"login.providers {', '.join(by_prefix[''])} without subject_prefix beside"
            " verify_url: a provider user may carry the same name as a verify_url user;"
            " give each provider a subject_prefix"
        )
    return found


def _issuer(sec: Section, text: str) -> str:
    url = parse_url(text)
    if url is None or url.scheme not in ("http", "https") or not url.host:
        sec.error("issuer", f"expected an https:// URL, got {shown(text)!r}")
    elif url.user or url.password or url.query_string or url.fragment:
        sec.error("issuer", "expected an issuer URL without user, password, query or fragment")
    elif url.scheme == "http" and not _loopback(url):
        sec.error(
            "issuer",
            "an issuer must be https:// (http:// only on a loopback host such as 127.0.0.1):"
            " its keys decide who signs in",
        )
    return text  # compared with `iss` exactly as written, trailing slash and all


def _loopback(url: URL) -> bool:
    host = (url.host or "").strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_claims(sec: Section) -> ClaimsMap:
    values = read(sec, ClaimsMap)
    sec.finish()
    return ClaimsMap(**values)


def _read_secret(sec: Section, base: Path) -> keys.Secret | None:
    if sec.has("client_secret"):
        sec.value_node("client_secret")
        sec.error(
            "client_secret",
            "a secret never goes in the YAML: name it with client_secret_env or client_secret_file",
        )
    source = ProviderSecret(**read(sec, ProviderSecret))
    env, file = source.client_secret_env, source.client_secret_file
    if env and file:
        sec.error("client_secret_file", "use client_secret_env or client_secret_file, not both")
        return None
    try:
        if env:
            return keys.plain_secret_from_env(env)
        if file:
            return keys.plain_secret_from_file(sec.problems.uses(base / file))
    except keys.KeyProblem as exc:
        sec.error("client_secret_env" if env else "client_secret_file", str(exc))
    return None
