"""Who is asking, and may they pass: the whole authorization decision.

Kept small on purpose so it can be audited in one read. "No credentials" and
"bad credentials" stay distinct (the 401 challenge and the logs differ), and
an expired token is only ever "unauthenticated", never "forbidden".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiohttp import hdrs

from .errors import TokenError, TokenExpired
from .tokens import ACCESS, REFRESH, Principal, Verifier
from .view import Asking

Decision = Literal[
    "public",  # auth: public, nothing verified
    "allow",  # verified identity, roles satisfied
    "anonymous",  # auth: optional and no valid identity
    "deny",  # auth: deny
    "forbidden",  # verified identity lacks a role
    "redirect",  # unauthenticated browser navigation
    "unauthorized",  # unauthenticated program
    "cross_site",  # a state change carrying our cookies, from another site
]


@dataclass(frozen=True, slots=True)
class Identity:
    """The outcome of reading credentials off a request."""

    principal: Principal | None = None
    presented: bool = False  # a token was presented, whether or not it verified
    failure: str | None = None  # TokenError.reason when it did not
    bearer: bool = False  # it came in Authorization, not the cookie


NOBODY = Identity()


def identify(request: Asking, verifier: Verifier, cookie_name: str) -> Identity:
    token = cookie_value(request, cookie_name)
    bearer = False
    if not token:
        token = bearer_token(request)
        if token is None:
            return NOBODY
        bearer = True
    return check_token(verifier, token, bearer=bearer)


def cookie_value(request: Asking, name: str) -> str | None:
    """The first cookie of that name, found by a scan rather than parsing every cookie.

    The first, as RFC 6265 orders the most specific path first; the same reading as
    the cookie stripping in proxy.py, so what is verified is what is removed.
    """
    for header in request.headers.getall(hdrs.COOKIE, ()):
        if name not in header:
            continue
        for pair in header.split(";"):
            key, sep, value = pair.partition("=")
            if sep and key.strip() == name:
                return value.strip().strip('"') or None
    return None


def check_token(verifier: Verifier, token: str, *, bearer: bool = False) -> Identity:
    try:
        principal = verifier.verify(token)
    except TokenError as exc:
        return Identity(presented=True, failure=exc.reason, bearer=bearer)
    # one Identity per verified token and way of presenting it (its memo): the same
    # session comes again and again, and a frozen dataclass is costly to build
    key = (_IDENTITY, bearer)
    identity: Identity | None = principal.memo.get(key)
    if identity is None:
        identity = principal.memo[key] = Identity(principal, presented=True, bearer=bearer)
    return identity


_IDENTITY = "identity"  # Principal.memo key, with how the token came


def bearer_token(request: Asking) -> str | None:
    header = request.headers.get(hdrs.AUTHORIZATION)
    if not header:
        return None  # the common case, checked on every request
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


def is_ours(verifier: Verifier, token: str) -> bool:
    """Signed by one of our keys, expired or not (PyJWT checks the signature before exp).

    Such a bearer token is never forwarded: the upstream gets the identity as headers,
    and an app that checks the token itself must never see a revoked or spent one.
    """
    for kind in (ACCESS, REFRESH):  # a refresh token sent as a bearer token is ours too
        try:
            verifier.verify(token, kind)
        except TokenExpired:
            return True
        except TokenError:
            continue
        return True
    return False
