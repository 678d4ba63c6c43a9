"""The gateway's own answers: redirect to login, 400/401/403/404/502/504.

Short bodies, JSON for programs and a page for people (pages.py), never a
traceback. Every one is `no-store` so a shared cache never keeps a denial
(or a redirect) that belongs to one client.
"""

from __future__ import annotations

import json
from urllib.parse import quote

from aiohttp import hdrs, web

from . import logs, pages
from .view import Asking

_NO_STORE = "no-store"


def wants_html(request: Asking) -> bool:
    """A browser navigation: GET/HEAD, text/html preferred in Accept, not an XHR."""
    if request.method not in ("GET", "HEAD"):
        return False
    if request.headers.get("X-Requested-With", "").lower() == "xmlhttprequest":
        return False
    return _prefers_html(request.headers.get(hdrs.ACCEPT, ""))


def prefers_html(request: Asking) -> bool:
    """A page is wanted (a form POST from a browser too), not JSON for a program."""
    return _prefers_html(request.headers.get(hdrs.ACCEPT, ""))


def _prefers_html(accept: str) -> bool:
    """True when text/html (or xhtml) is the first media range with the highest q."""
    best_q, best_html = -1.0, False
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        media = media.strip().lower()
        if not media:
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > best_q:
            best_q, best_html = q, media in ("text/html", "application/xhtml+xml")
    return best_html and best_q > 0


def _answer(
    request: web.BaseRequest,
    status: int,
    code: str,
    text: str,
    who: pages.Who | None = None,
    page: str | None = None,
) -> web.Response:
    """`text` for programs (JSON, kept stable); `page` (default `text`) for people."""
    if wants_html(request):
        body = pages.current().error(status, page or text, logs.REQUEST_ID.get(), who)
        response = web.Response(
            status=status, text=body, content_type="text/html", headers=pages.HEADERS
        )
    else:
        response = web.Response(
            status=status,
            text=json.dumps({"error": code, "message": text}),
            content_type="application/json",
        )
    response.headers[hdrs.CACHE_CONTROL] = _NO_STORE
    return response


def bad_request(request: web.BaseRequest, why: str) -> web.Response:
    return _answer(request, 400, "bad_request", f"Bad request: {why}.")


def forbidden(request: web.BaseRequest, who: pages.Who | None = None) -> web.Response:
    text = "You do not have access to this page."
    page = text + (" Sign in as someone who has, or ask for access." if who else "")
    return _answer(request, 403, "forbidden", text, who, page)


def cross_site(request: web.BaseRequest, why: str | None = None) -> web.Response:
    """`why`: a better explanation when the gateway knows one (a proxy rewrote Host)."""
    return _answer(
        request,
        403,
        "cross_site",
        why
        or "This request came from another site and was refused, to protect your session."
        " Go back to the application and try again from its own pages.",
    )


def not_found(request: web.BaseRequest) -> web.Response:
    return _answer(request, 404, "not_found", "Not found.", page="There is nothing here.")


def method_not_allowed(request: web.BaseRequest, allow: str) -> web.Response:
    page = "This address does not take that kind of request."
    response = _answer(request, 405, "method_not_allowed", "Method not allowed.", page=page)
    response.headers[hdrs.ALLOW] = allow
    return response


def upgrade_required(request: web.BaseRequest) -> web.Response:
    """RFC 6455 4.4: the WebSocket versions this server speaks, for the client to retry."""
    response = _answer(request, 426, "upgrade_required", "Only WebSocket version 13 is supported.")
    response.headers[hdrs.SEC_WEBSOCKET_VERSION] = "13"
    return response


def service_unavailable(request: web.BaseRequest) -> web.Response:
    """The store or the credential backend did not answer: fail closed, ask to retry."""
    response = _answer(
        request, 503, "unavailable", "The service is briefly unavailable. Try again shortly."
    )
    response.headers[hdrs.RETRY_AFTER] = "1"
    return response


def not_confirmed(request: web.BaseRequest) -> web.Response:
    """A logout written on the store's primary, not yet on a replica (SPEC §7.6): a
    failover could still undo it, so it is not acknowledged; a retry confirms it."""
    response = _answer(
        request,
        503,
        "not_confirmed",
        "Your sign-out is not yet confirmed. Try again shortly to complete it.",
    )
    response.headers[hdrs.RETRY_AFTER] = "1"
    return response


def too_many(request: web.BaseRequest, seconds: int, page: str) -> web.Response:
    """429 with Retry-After; `page` says how long in words."""
    response = _answer(request, 429, "too_many_requests", "Too many requests.", page=page)
    response.headers[hdrs.RETRY_AFTER] = str(seconds)
    return response


def expectation_failed(request: web.BaseRequest) -> web.Response:
    return _answer(request, 417, "expectation_failed", "Only Expect: 100-continue is supported.")


def bad_gateway(request: web.BaseRequest) -> web.Response:
    return _answer(
        request,
        502,
        "bad_gateway",
        "The application is not reachable.",
        page="The application is not reachable. Try again in a moment; if it lasts, tell"
        " the people who run it, with the request id below.",
    )


def gateway_timeout(request: web.BaseRequest) -> web.Response:
    return _answer(
        request,
        504,
        "gateway_timeout",
        "The application did not answer in time.",
        page="The application did not answer in time. Try again; if it lasts, tell the"
        " people who run it, with the request id below.",
    )


def redirect_to_login(login_path: str, target: str) -> web.Response:
    location = f"{login_path}?next={quote(target, safe='/')}"
    response = web.Response(status=302, headers={hdrs.LOCATION: location})
    response.headers[hdrs.CACHE_CONTROL] = _NO_STORE
    return response


def unauthorized(login_path: str, token_failed: bool) -> web.Response:
    challenge = 'Bearer error="invalid_token"' if token_failed else "Bearer"
    response = web.Response(
        status=401,
        text=json.dumps({"error": "unauthorized", "login": login_path}),
        content_type="application/json",
        headers={hdrs.WWW_AUTHENTICATE: challenge},
    )
    response.headers[hdrs.CACHE_CONTROL] = _NO_STORE
    return response
