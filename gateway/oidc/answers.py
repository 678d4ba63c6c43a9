"""What a person sees when an OpenID sign-in does not end in a session.

400 (the state is wrong: start again) uses the gateway's error page; 503 (the
provider is down or too slow: try again shortly) and a refusal by the provider
(`error=access_denied` or any other error, 401), an ID token that failed
verification (401) and a user the site does not admit (403) show the login
page again with one sentence saying so, so the person can pick another way
to sign in. The provider's error code is shown only when it is one of the
codes OAuth defines; anything else it sent is never echoed.
"""

from __future__ import annotations

from aiohttp import hdrs, web

from .. import responses
from ..config.providers import ProviderConfig
from ..login import page
from ..runtime import Snapshot

_KNOWN_ERRORS = frozenset(
    (
        "access_denied", "login_required", "consent_required", "interaction_required",
        "account_selection_required", "invalid_request", "unauthorized_client",
        "unsupported_response_type", "invalid_scope", "server_error",
        "temporarily_unavailable", "invalid_grant", "invalid_client",
    )
)  # fmt: skip


def bad_state(request: web.BaseRequest, why: str) -> web.Response:
    return responses.bad_request(request, why)


def unavailable(
    request: web.BaseRequest, snapshot: Snapshot, provider: ProviderConfig, next_path: str
) -> web.Response:
    """503: for a person, the login page saying which provider is not answering (another
    way to sign in may be right there); JSON for a program."""
    if not responses.prefers_html(request):
        return responses.service_unavailable(request)
    message = f"{provider.label} is not answering right now. Try again in a moment" + (
        ", or sign in another way." if _other_ways(snapshot, provider) else "."
    )
    response = page(snapshot, next_path, 503, error=message)
    response.headers[hdrs.RETRY_AFTER] = "1"
    return response


def _other_ways(snapshot: Snapshot, provider: ProviderConfig) -> bool:
    login = snapshot.config.login
    return snapshot.credentials is not None or len(login.providers) > 1


def refused(
    request: web.BaseRequest,
    snapshot: Snapshot,
    provider: ProviderConfig,
    next_path: str,
    error: str,
    *,
    status: int = 401,
    exchange: bool = False,
) -> web.Response:
    label = provider.label
    if status == 403:
        message = f"You signed in at {label}, but this site does not admit that account."
    elif error == "access_denied":
        message = f"{label} did not sign you in (access denied)."
    elif exchange:
        message = f"Signing in with {label} could not be completed. Try again."
    elif error:
        shown = f" ({error})" if error in _KNOWN_ERRORS else ""
        message = f"{label} did not sign you in{shown}. Try again."
    else:
        message = f"The sign-in from {label} could not be verified and was refused."
    return page(snapshot, next_path, status, error=message)
