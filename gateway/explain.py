"""`gateway explain`: one request through the same decision the proxy makes.

It builds a request view from the command line and runs `decision.authorize`
on it, so what it reports is what the gateway would do: the normalized path,
the route, the token check, revocation (asked of the store when the store is
Redis; memory:// lives inside the running gateway and cannot be asked), the
cross-site rule, and the decision. Returns lines; cli.py prints them.
"""

from __future__ import annotations

from aiohttp import hdrs
from multidict import CIMultiDict, CIMultiDictProxy

from .auth import identify
from .config import Config
from .decision import Verdict, authorize, refused_cross_site
from .errors import BadPath
from .origin import SAFE_METHODS
from .paths import decoded, normalize
from .routing import Route
from .runtime import Snapshot
from .store import Store, StoreUnavailable
from .view import RequestView


async def report(
    config: Config,
    store: Store,
    method: str,
    target: str,
    *,
    token: str | None = None,
    as_cookie: bool = False,
    host: str = "",
    origin: str | None = None,
    browser: bool = False,
) -> list[str]:
    method = method.upper()
    raw_path, _, query = target.partition("?")
    try:
        path = normalize(raw_path)
    except BadPath as exc:
        return [f"{method} {target}", f"  decision: 400 bad request ({exc})"]
    if path in (config.login.path, config.login.logout_path):
        return [f"{method} {path}", "  answered by the gateway itself (login.path / logout_path)"]
    headers: CIMultiDict[str] = CIMultiDict()
    if host:
        headers[hdrs.HOST] = host
    if token and as_cookie:
        headers[hdrs.COOKIE] = f"{config.cookies.access}={token}"
    elif token:
        headers[hdrs.AUTHORIZATION] = f"Bearer {token}"
    if origin:
        headers[hdrs.ORIGIN] = origin
    if browser:
        headers[hdrs.ACCEPT] = "text/html"
    view = RequestView(
        method=method,
        raw_path=raw_path,
        path=path,
        query=query,
        host=host,
        scheme="https" if config.cookies.secure else "http",
        client="",
        headers=CIMultiDictProxy(headers),
    )
    snapshot = Snapshot.build(config, store)
    lines = [f"{method} {view.target}"]
    try:
        verdict = await authorize(view, snapshot)
    except StoreUnavailable:
        route = config.routes.match(method, decoded(path))
        return [*lines, *_route_lines(route), "  decision: 503 (the store did not answer)"]
    lines += _route_lines(verdict.route)
    lines += _token_lines(view, snapshot, verdict, token, memory=config.store.scheme == "memory")
    lines += _cross_site_lines(view, snapshot, verdict)
    lines.append(f"  decision: {_describe(verdict, config)}")
    return lines


def _route_lines(route: Route) -> list[str]:
    where = f"routes[{route.index}] line {route.line}" if route.index >= 0 else "no route matched"
    lines = [f"  route:    {route.label} ({where})", f"  auth:     {route.auth}"]
    if route.methods:
        lines.append(f"  methods:  {', '.join(sorted(route.methods))}")
    if route.roles:
        lines.append(f"  roles:    any of {', '.join(sorted(route.roles))}")
    if route.auth == "required":
        lines.append(f"  on_unauthenticated: {route.on_unauthenticated}")
    return lines


def _token_lines(
    view: RequestView, snapshot: Snapshot, verdict: Verdict, token: str | None, *, memory: bool
) -> list[str]:
    if not token:
        return ["  token:    none (anonymous)"]
    checked = identify(view, snapshot.verifier, snapshot.config.cookies.access)
    if checked.principal is None:
        return [f"  token:    rejected ({checked.failure})"]
    roles = ", ".join(sorted(checked.principal.roles)) or "none"
    lines = [f"  token:    valid, sub={checked.principal.subject}, roles: {roles}"]
    if verdict.route.auth not in ("required", "optional") or verdict.decision == "cross_site":
        return lines
    if memory:
        lines.append(
            "  revoked:  not checked: memory:// lives inside the running gateway"
            " (gateway sessions --user asks it)"
        )
    elif verdict.identity.failure == "revoked":
        lines.append("  revoked:  yes: logged out, or its user revoked (the store says so)")
    else:
        lines.append("  revoked:  no (asked the store)")
    return lines


def _cross_site_lines(view: RequestView, snapshot: Snapshot, verdict: Verdict) -> list[str]:
    if verdict.route.auth not in ("required", "optional"):
        return []
    if view.method in SAFE_METHODS:
        return ["  cross-site: not checked (GET, HEAD and OPTIONS change nothing)"]
    if refused_cross_site(verdict.route, view, snapshot):
        return [f"  cross-site: refused: Origin {view.headers.get(hdrs.ORIGIN)!r} is not this site"]
    if hdrs.COOKIE not in view.headers:
        return [
            "  cross-site: checked only for requests carrying the gateway's cookies"
            " (--cookie sends the token as one; --origin and --host set the sites)"
        ]
    return ["  cross-site: passes (same site, or no Origin/Referer)"]


def _describe(verdict: Verdict, config: Config) -> str:
    login = config.login.path
    decision = verdict.decision
    if decision == "unauthorized" and verdict.route.on_unauthenticated == "auto":
        return f"401 JSON (a browser navigation gets 302 to {login}?next=...: see --browser)"
    return {
        "public": "forward (public: nothing verified)",
        "allow": "forward with identity headers",
        "anonymous": "forward without identity (optional)",
        "deny": "403 (route denies everyone)",
        "forbidden": "403 (authenticated, but lacks a required role)",
        "cross_site": "403 (a state change with the gateway's cookies from another site)",
        "redirect": f"302 to {login}?next=...",
        "unauthorized": "401 JSON",
    }[decision]
