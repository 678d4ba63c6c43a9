"""The gateway's own pages: the login form and its POST, and logout.

Login failures all look alike (one message, one status, about one duration)
whether the user exists or not. Failures are counted in the store per
username+client, per username and per client, so replicas share the count
and a guesser gets 429 with Retry-After. `next` only ever leads to a path on
this site.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import aiohttp
from aiohttp import hdrs, web

from . import cookies, logs, metrics, pages, responses
from .clientaddr import client_address
from .credentials import MAX_FIELD, CredentialsUnavailable
from .errors import TokenError
from .oidc.logout import provider_logout
from .origin import cross_site, log_refusal, navigation_allowed
from .runtime import Snapshot
from .sessions import Sessions
from .store import Limits

security = logging.getLogger("gateway.security")

FAILED = "Invalid username or password."
HOST_REWRITTEN = (
    "Signing in cannot work here because of a setup problem: a proxy in front of the"
    " gateway changed the Host header (you used {browser}, the gateway received"
    " {gateway}). Please tell the site's administrators."
)
CROSS_SITE = (
    "This sign-in came from another site and was refused, to protect you."
    " Sign in on this page instead."
)
_MAX_BODY = 64 * 1024
# What the login page may do: nothing but show itself and post its form to this origin.
_PAGE_HEADERS = {hdrs.CACHE_CONTROL: "no-store", **pages.HEADERS}
_UNSAFE_NEXT = re.compile(r"[\x00-\x1f\x7f\\]")


@dataclass(slots=True)
class Result:
    response: web.StreamResponse
    decision: str
    user: str | None = None


def safe_next(value: str | None) -> str:
    """A same-origin relative path (`/x?y`), else `/`.

    Refused: anything not starting with exactly one `/` (`//evil`, `https://..`,
    `javascript:`), backslashes (`/\\evil` is `//evil` to a browser), and control
    characters, also when percent-encoded (`%0d%0a` would split a header).
    """
    if not value or len(value) > 2048:
        return "/"
    decoded = unquote(value)
    if not value.startswith("/") or value.startswith("//") or decoded.startswith("//"):
        return "/"
    if _UNSAFE_NEXT.search(value) or _UNSAFE_NEXT.search(decoded):
        return "/"
    return value


async def handle(
    request: web.BaseRequest, snapshot: Snapshot, client: aiohttp.ClientSession, path: str
) -> Result:
    login = snapshot.config.login
    if snapshot.login_page is None:
        return Result(responses.not_found(request), "reserved")
    if path == login.logout_path:
        return await _logout(request, snapshot)
    if request.method in ("GET", "HEAD"):
        providers = login.providers
        if snapshot.credentials is None and len(providers) == 1:
            # nothing to choose: straight to the one provider
            target = f"{_provider_path(snapshot, providers[0].id)}?next="
            target += quote(safe_next(request.query.get("next")), safe="/")
            response = web.Response(status=302, headers={hdrs.LOCATION: target})
            response.headers[hdrs.CACHE_CONTROL] = "no-store"
            return Result(response, "login_provider")
        page = _page(snapshot, request.query.get("next"), status=200)
        return Result(page, "login_page")
    if request.method != "POST" or snapshot.credentials is None:
        allow = "GET, POST" if snapshot.credentials is not None else "GET"
        return Result(responses.method_not_allowed(request, allow), "login_method")
    if cross_site(request, snapshot.config.cookies.domain):
        rewritten = log_refusal(request, "sign-in")
        why = CROSS_SITE
        if rewritten:
            why = HOST_REWRITTEN.format(
                browser=rewritten, gateway=request.headers.get(hdrs.HOST, "")[:100]
            )
        if _is_json(request):
            return Result(responses.cross_site(request, why if rewritten else None), "cross_site")
        # the form again, saying why: to sign in from here, or to tell the administrators
        page = _page(snapshot, request.query.get("next"), status=403, error=why)
        return Result(page, "cross_site")
    return await _sign_in(request, snapshot, client)


async def _sign_in(
    request: web.BaseRequest, snapshot: Snapshot, client: aiohttp.ClientSession
) -> Result:
    config = snapshot.config
    sessions: Sessions = snapshot.sessions
    as_json = _is_json(request)
    fields = await _fields(request, as_json)
    if fields is None:
        return Result(responses.bad_request(request, "expected a form or a JSON object"), "login")
    username, password = fields.get("username", ""), fields.get("password", "")
    next_path = safe_next(fields.get("next") or request.query.get("next"))
    if not username or not password:
        return Result(responses.bad_request(request, "username and password are required"), "login")
    address = client_address(request, config.trusted_proxies)
    limits = Limits(
        pair=config.login.max_failures,
        single=config.login.max_failures * 4,
        window=config.login.failure_window,
    )
    # counted as a failure before the check (taken back below if it was none), so parallel
    # guesses cannot all pass the limit before the first is counted
    wait = await sessions.store.attempt(username, address, limits)
    if wait > 0:
        metrics.LOGINS.labels("throttled").inc()
        security.warning(
            "login throttled", extra={"event": "login_throttled", "user": username[:128]}
        )
        return Result(
            _too_many(snapshot, as_json, wait, username, next_path), "login_throttled", username
        )
    assert snapshot.credentials is not None  # noqa: S101 - handle() checks
    try:
        claims = await snapshot.credentials.check(username, password, client)
    except CredentialsUnavailable as exc:
        await sessions.store.take_back(username, address, success=False)
        metrics.LOGINS.labels("unavailable").inc()
        security.error(
            "verify_url failed; login refused", extra={"event": "verify_failed", "why": str(exc)}
        )
        return Result(responses.service_unavailable(request), "login_unavailable")
    if claims is None:
        metrics.LOGINS.labels("failure").inc()
        security.warning(
            "login failed",
            extra={"event": "login_failed", "user": username[:128], "client": address},
        )
        return Result(_failed(snapshot, as_json, username, next_path), "login_failed")
    await sessions.store.take_back(username, address, success=True)
    try:
        issued = await sessions.start(claims, address, request.headers.get(hdrs.USER_AGENT, ""))
    except TokenError as exc:  # claims from verify_url that do not make a valid token
        metrics.LOGINS.labels("unavailable").inc()
        security.error(
            "sign-in refused: the user's claims do not fit a token",
            extra={"event": "verify_failed", "why": str(exc)},
        )
        return Result(responses.service_unavailable(request), "login_unavailable")
    subject = issued.principal.subject
    metrics.LOGINS.labels("success").inc()
    security.info("login", extra={"event": "login", "user": subject, "client": address})
    response = web.Response(status=303, headers={hdrs.LOCATION: next_path})
    response.headers[hdrs.CACHE_CONTROL] = "no-store"
    for name, value in issued.set_cookies:
        response.headers.add(name, value)
    return Result(response, "login", subject)


async def _logout(request: web.BaseRequest, snapshot: Snapshot) -> Result:
    config = snapshot.config
    if request.method in ("GET", "HEAD"):
        if not navigation_allowed(request, config.cookies.domain):
            log_refusal(request, "sign-out")
            return Result(responses.cross_site(request), "cross_site")
    elif request.method != "POST":
        return Result(responses.method_not_allowed(request, "POST, GET"), "logout_method")
    elif cross_site(request, config.cookies.domain):
        log_refusal(request, "sign-out")
        return Result(responses.cross_site(request), "cross_site")
    location = None
    provider = None
    if snapshot.oidc is not None:  # RP-initiated logout: the provider's session ends too
        provider = await provider_logout(snapshot.oidc, request, snapshot.verifier)
        if provider is not None and responses.prefers_html(request):
            location = provider.location  # a program keeps its answer: 303 to the login page
    user = await snapshot.sessions.end(request)
    if provider is not None and snapshot.oidc is not None:
        await provider.forget(snapshot.oidc)  # only now: a retried logout still finds it
    if user is not None:
        metrics.LOGOUTS.inc()
        security.info("logout", extra={"event": "logout", "user": user})
    response = web.Response(status=303, headers={hdrs.LOCATION: location or config.login.path})
    response.headers[hdrs.CACHE_CONTROL] = "no-store"
    for name, value in cookies.clearing_cookies(config.cookies):
        response.headers.add(name, value)
    return Result(response, "logout" if user else "logout_no_session", user)


def _is_json(request: web.BaseRequest) -> bool:
    return request.content_type == "application/json"


async def _fields(request: web.BaseRequest, as_json: bool) -> dict[str, str] | None:
    """username, password and next as strings; None for a body that is neither form nor JSON."""
    if request.content_length is not None and request.content_length > _MAX_BODY:
        return None
    if request.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower() != "identity":
        return None  # never decompressed here: a few bytes of gzip can be gigabytes of form
    try:
        raw: Any
        if as_json:
            body = await request.read()  # the whole body; bounded by the server's client_max_size
            if len(body) > _MAX_BODY:
                return None
            raw = json.loads(body or b"null")
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            raw = await request.post()
        else:
            return None
    except (ValueError, LookupError, RecursionError, aiohttp.ClientError, web.HTTPException):
        # RecursionError: JSON nested deeper than the parser's stack; LookupError: a form
        # declaring a charset Python does not know
        return None
    if not hasattr(raw, "get"):
        return None
    fields = {}
    for key in ("username", "password", "next"):
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > MAX_FIELD or not _utf8(value):
            return None
        fields[key] = value
    return fields


def _utf8(text: str) -> bool:
    """False for lone surrogates (JSON "\\ud800"), which no hash or backend can take."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def page(snapshot: Snapshot, next_path: str | None, status: int, error: str = "") -> web.Response:
    """The login page with a message: what an OpenID sign-in that failed answers."""
    return _page(snapshot, next_path, status, error=error)


def _provider_path(snapshot: Snapshot, provider_id: str) -> str:
    return f"{snapshot.config.login.path.rstrip('/')}/{provider_id}"


def _page(
    snapshot: Snapshot, next_path: str | None, status: int, username: str = "", error: str = ""
) -> web.Response:
    assert snapshot.login_page is not None  # noqa: S101 - handle() checks
    body = snapshot.login_page.render(
        action=snapshot.config.login.path,
        next_path=safe_next(next_path),
        username=username,
        error=error,
        site=pages.current().title,
        request_id=logs.REQUEST_ID.get(),
        password=snapshot.credentials is not None,
        providers=[
            (p.label, _provider_path(snapshot, p.id)) for p in snapshot.config.login.providers
        ],
    )
    return web.Response(status=status, text=body, content_type="text/html", headers=_PAGE_HEADERS)


def _failed(snapshot: Snapshot, as_json: bool, username: str, next_path: str) -> web.Response:
    if as_json:
        return _json(401, {"error": "invalid_credentials", "message": FAILED})
    return _page(snapshot, next_path, status=401, username=username, error=FAILED)


def wait_in_words(seconds: float) -> str:
    """`Retry-After` for people: "about 14 minutes", "30 seconds"."""
    seconds = max(1, math.ceil(seconds))
    if seconds < 60:
        return f"{seconds} second{'s' * (seconds != 1)}"
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return f"about {minutes} minute{'s' * (minutes != 1)}"
    hours = math.ceil(minutes / 60)
    return f"about {hours} hour{'s' * (hours != 1)}"


def _too_many(
    snapshot: Snapshot, as_json: bool, wait: float, username: str, next_path: str
) -> web.Response:
    seconds = str(max(1, math.ceil(wait)))
    message = f"Too many failed sign-in attempts. Wait {wait_in_words(wait)}, then try again."
    response = (
        _json(429, {"error": "too_many_attempts", "message": message, "retry_after": int(seconds)})
        if as_json
        else _page(snapshot, next_path, status=429, username=username, error=message)
    )
    response.headers[hdrs.RETRY_AFTER] = seconds
    response.headers[hdrs.CACHE_CONTROL] = "no-store"
    return response


def _json(status: int, body: dict[str, Any]) -> web.Response:
    response = web.Response(status=status, text=json.dumps(body), content_type="application/json")
    response.headers[hdrs.CACHE_CONTROL] = "no-store"
    return response
