"""The gateway as an OpenID Connect relying party, for one config snapshot.

Built with each Snapshot from `login.providers`; it lends the process-wide
Home (discovery, keys, the client) and the session store. Its paths, each
answered by the gateway before the route table (never proxied):

    GET  {login.path}/{id}                     start: 302 to the provider
    GET  {login.path}/{id}/callback            the redirect_uri: 303 to `next`
    POST {login.path}/{id}/backchannel-logout  Back-Channel Logout 1.0

The redirect_uri is `{scheme}://{Host}{login.path}/{id}/callback`: the Host
header of the request that started the sign-in and its scheme (a trusted
proxy's X-Forwarded-Proto, see trusted_proxies, else the listener's). That is
the URL to register at the provider; post_logout_redirect_uri is built the
same way and is the login page, `{scheme}://{Host}{login.path}`.
"""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import quote

from aiohttp import hdrs, web

from ..clientaddr import forwarded_proto
from ..config import Config
from ..config.providers import ProviderConfig
from ..sessions import Sessions
from .discovery import Metadata, ProviderState
from .home import Home
from .links import refresh
from .verify import Refused, UnknownKey, verify

_HOST = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")

Action = str  # "start", "callback" or "backchannel"


class Relying:
    def __init__(self, config: Config, sessions: Sessions, home: Home) -> None:
        login = config.login
        self.login_path = login.path
        self.providers = {p.id: p for p in login.providers}
        self.paths: dict[str, tuple[str, Action]] = {}
        for provider in login.providers:
            base = f"{login.path.rstrip('/')}/{provider.id}"
            self.paths[base] = (provider.id, "start")
            self.paths[base + "/callback"] = (provider.id, "callback")
            self.paths[base + "/backchannel-logout"] = (provider.id, "backchannel")
        self.home = home
        self.sessions = sessions
        self.store = sessions.store
        self.cookies = config.cookies
        self.trusted = config.trusted_proxies
        self.leeway = config.tokens.leeway
        self.refresh_ttl = config.tokens.refresh_ttl
        self.deny_for = config.tokens.access_ttl + config.tokens.leeway
        sessions.provider_refresh = self.before_rotate

    def state(self, provider: ProviderConfig) -> ProviderState:
        return self.home.state(provider)

    def unreachable(self) -> list[str]:
        return self.home.unreachable(tuple(self.providers.values()))

    async def before_rotate(
        self, family: str, subject: str, presented: str
    ) -> bool | dict[str, Any]:
        return await refresh(self, family, subject, presented)

    async def verified(
        self,
        provider: ProviderConfig,
        token: str,
        *,
        nonce: str | None = None,
        logout: bool = False,
        refreshed: bool = False,
    ) -> dict[str, Any]:
        """An ID or logout token's claims (verify.verify); one JWKS refetch, rate-limited,
        when its kid is unknown: the provider may have rotated its keys since we cached
        them. Raises Refused."""
        state = self.state(provider)
        for attempt in (1, 2):
            assert state.metadata is not None and state.keys is not None  # noqa: S101
            try:
                return verify(
                    token,
                    metadata=state.metadata,
                    keys=state.keys,
                    client_id=provider.client_id,
                    secret=provider.client_secret,
                    leeway=self.leeway,
                    nonce=nonce,
                    logout=logout,
                    refreshed=refreshed,
                )
            except UnknownKey:
                if attempt == 2 or not await state.refetch_keys(self.home.session):
                    raise
        raise Refused("unknown kid")  # not reached: the loop returns or raises

    def site(self, request: web.BaseRequest) -> str | None:
        """`scheme://host` the browser used; None for a Host that is no host name."""
        host = request.headers.get("Host", "")
        if not _HOST.match(host):
            return None
        return f"{forwarded_proto(request, self.trusted)}://{host}"

    def redirect_uri(self, site: str, provider: ProviderConfig) -> str:
        return f"{site}{self.login_path.rstrip('/')}/{provider.id}/callback"

    @staticmethod
    def client_auth(
        provider: ProviderConfig, form: dict[str, str], metadata: Metadata
    ) -> tuple[dict[str, str], float, dict[str, str]]:
        """(form, timeout, headers) for a token-endpoint call: client_secret_basic where
        offered, else client_secret_post; a public client sends its client_id (and PKCE)."""
        form = {**form, "client_id": provider.client_id}
        secret = provider.client_secret
        if secret is None:
            return form, provider.timeout, {}
        if metadata.secret_basic:
            # RFC 6749 2.3.1: both form-urlencoded, then joined and base64-encoded
            pair = (
                f"{quote(provider.client_id, safe='')}:{quote(secret.reveal().decode(), safe='')}"
            )
            basic = base64.b64encode(pair.encode()).decode()
            return form, provider.timeout, {hdrs.AUTHORIZATION: f"Basic {basic}"}
        return {**form, "client_secret": secret.reveal().decode()}, provider.timeout, {}
