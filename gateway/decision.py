"""The one decision, for every door: proxy, forward-auth, `gateway explain`.

`decide` is pure: a route, an identity and the request view in, a decision
out. `authorize` is the async shell around it that does what needs the store
(revocation, refresh), so the proxy door and any other door get the same
verdict for the same request, and tests can drive one table through all of
them. It never touches the transport: what to answer and how to forward is
the door's business.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from .auth import NOBODY, Decision, Identity, cookie_value, identify
from .origin import SAFE_METHODS, cross_site
from .paths import decoded
from .responses import wants_html
from .routing import Route
from .runtime import Snapshot
from .view import RequestView


class Verdict(NamedTuple):
    """What was decided, on what, and the cookies the answer must carry (a refresh).
    A NamedTuple: as immutable as a frozen dataclass, at a fraction of its cost per request."""

    decision: Decision
    route: Route
    identity: Identity = NOBODY
    set_cookies: Sequence[tuple[str, str]] = ()

    @property
    def passes(self) -> bool:
        return self.decision in ("public", "allow", "anonymous")


def decide(route: Route, identity: Identity, view: RequestView) -> Decision:
    """Who may pass. An expired or missing token is only ever unauthenticated, never
    forbidden; `view` says whether an unauthenticated request is a browser navigation."""
    if route.auth == "deny":
        return "deny"
    if route.auth == "public":
        return "public"
    principal = identity.principal
    if principal is None:
        if route.auth == "optional":
            return "anonymous"
        if route.on_unauthenticated == "redirect" or (
            route.on_unauthenticated == "auto" and wants_html(view)
        ):
            return "redirect"
        return "unauthorized"
    if route.roles and route.roles.isdisjoint(principal.roles):
        return "forbidden"
    return "allow"


def refused_cross_site(route: Route, view: RequestView, snapshot: Snapshot) -> bool:
    """A state change (or WebSocket) carrying our cookies, sent from another site."""
    if route.auth not in ("required", "optional"):
        return False
    if view.method in SAFE_METHODS and not view.websocket:
        return False
    cookies = snapshot.config.cookies
    if not (cookie_value(view, cookies.access) or cookie_value(view, cookies.refresh)):
        return False  # only cookies a browser attaches by itself make it dangerous
    return cross_site(view, cookies.domain)


def route_of(view: RequestView, snapshot: Snapshot) -> Route:
    """Matched as the upstream will read the path: decoded once (normalization made that safe)."""
    path = view.path
    return snapshot.config.routes.match(view.method, decoded(path) if "%" in path else path)


async def authorize(view: RequestView, snapshot: Snapshot, route: Route | None = None) -> Verdict:
    """Route, cross-site rule, credentials, revocation and refresh (one store round trip),
    then `decide`. Raises StoreUnavailable: the door answers 503, never lets it pass.
    `route`: already matched by the door (to log it even when the store fails)."""
    config = snapshot.config
    if route is None:
        route = route_of(view, snapshot)
    if route.auth not in ("required", "optional"):
        return Verdict(decide(route, NOBODY, view), route)
    if (view.method not in SAFE_METHODS or view.websocket) and refused_cross_site(
        route, view, snapshot
    ):
        return Verdict("cross_site", route)
    identity = identify(view, snapshot.verifier, config.cookies.access)
    identity, set_cookies = await snapshot.sessions.authenticate(view, identity)
    return Verdict(decide(route, identity, view), route, identity, set_cookies)
