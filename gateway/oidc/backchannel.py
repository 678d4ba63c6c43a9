"""OpenID Connect Back-Channel Logout 1.0: the provider ends sessions server to server.

`POST {login.path}/{id}/backchannel-logout` with a form field `logout_token`.
A server-to-server call: no cookies, no browser, so the cross-site rule for
browser POSTs does not apply (it is judged by the token alone). The token is
verified like an ID token (signature through the JWKS, announced asymmetric
algorithm, iss, aud, iat, exp when present) plus the logout event, no
`nonce`, a `sub` or `sid`, and a `jti` used once. Then every session with
that `sid` ends, else every session whose provider `sub` is that one, through
the store's end-family path: every replica refuses their tokens from then on.
Only once they have ended is the `jti` spent (a once-marker in the store, so a
replay to any replica is answered 400): a store failure while ending is a 503
that the provider retries with the same token, and that retry must still end
them. A replay thus repeats, at most, the logout its token announced.
Answers: 200 with an empty body, or 400 with a JSON error (section 2.8), and
`Cache-Control: no-store` either way.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import parse_qs

from aiohttp import hdrs, web

from ..config.providers import ProviderConfig
from ..login import Result
from ..runtime import Snapshot
from .http import ProviderUnavailable, read_at_most
from .links import end_by_index
from .verify import MAX_AGE, Refused

log = logging.getLogger("gateway.security")
_MAX_BODY = 64 * 1024


async def handle(request: web.BaseRequest, snapshot: Snapshot, provider: ProviderConfig) -> Result:
    relying = snapshot.oidc
    assert relying is not None  # noqa: S101 - routed only when providers are configured
    if request.method != "POST":
        response = _error(405, "invalid_request", "POST a logout_token")
        response.headers[hdrs.ALLOW] = "POST"
        return Result(response, "oidc_logout_method")
    token = await _token(request)
    if token is None:
        return Result(
            _error(400, "invalid_request", "expected a form with logout_token"), "oidc_logout_bad"
        )
    state = relying.state(provider)
    try:
        await state.discover(relying.home.session)
        claims = await relying.verified(provider, token, logout=True)
    except Refused as exc:
        return Result(_refused(provider, exc.reason), "oidc_logout_refused")
    except ProviderUnavailable:
        # the keys cannot be had: the provider retries a logout that did not answer 200
        response = _error(503, "temporarily_unavailable", "the provider's keys are unavailable")
        return Result(response, "oidc_unavailable")
    assert claims is not None  # noqa: S101 - the loop breaks with claims or raises
    # the sessions end first, the jti is spent only after: a store failure in between is a
    # 503 the provider retries, and the retry must not find its jti spent (400, sessions
    # left alive). Ending twice ends nothing more the second time.
    sid, sub = claims.get("sid"), claims.get("sub")
    if sid:
        ended = await end_by_index(relying, provider.id, "sid", str(sid))
    else:
        ended = await end_by_index(relying, provider.id, "sub", str(sub))
    if not await relying.store.mark_once(
        f"oidc-jti\0{provider.id}\0{claims['jti']}", 2 * MAX_AGE + 2 * relying.leeway
    ):
        return Result(_refused(provider, "replayed jti"), "oidc_logout_refused")
    log.warning(
        "back-channel logout: sessions ended",
        extra={"event": "oidc_backchannel_logout", "provider": provider.id, "sessions": ended},
    )
    response = web.Response(status=200)
    response.headers[hdrs.CACHE_CONTROL] = "no-store"
    return Result(response, "oidc_backchannel_logout")


async def _token(request: web.BaseRequest) -> str | None:
    if request.content_type != "application/x-www-form-urlencoded":
        return None
    if request.content_length is not None and request.content_length > _MAX_BODY:
        return None
    try:
        body = await read_at_most(request.content, _MAX_BODY)
    except (OSError, ValueError):
        return None
    if len(body) > _MAX_BODY:
        return None
    try:
        values = parse_qs(body.decode("ascii"), strict_parsing=False).get("logout_token", [])
    except (UnicodeDecodeError, ValueError):
        return None
    return values[0] if len(values) == 1 and values[0] else None


def _refused(provider: ProviderConfig, reason: str) -> web.Response:
    log.warning(
        "back-channel logout token refused",
        extra={"event": "oidc_logout_token_refused", "provider": provider.id, "why": reason},
    )
    return _error(400, "invalid_request", "the logout token was refused")


def _error(status: int, error: str, description: str) -> web.Response:
    body = json.dumps({"error": error, "error_description": description})
    response = web.Response(status=status, text=body, content_type="application/json")
    response.headers[hdrs.CACHE_CONTROL] = "no-store"
    return response
