"""routes and default: the ordered rules, compiled into routing's RouteTable."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, get_args

from ..routing import (
    AuthMode,
    OnUnauthenticated,
    Route,
    RouteTable,
    compile_pattern,
    default_route,
    methods_with_head,
    shadowing,
)
from ..yamlsource import Section
from .declare import build, key

HttpMethod = Literal[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
    "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "REPORT", "SEARCH",
]  # fmt: skip
HTTP_METHODS: frozenset[str] = frozenset(get_args(HttpMethod))


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteRule:
    """A rule: exactly one of path or regex; the first route that matches decides."""

    path: str | None = field(
        default=None,
        metadata=key(
            "Next.js matcher pattern: /dashboard/:path*, /users/:id, /docs/:p+.", pattern="^/"
        ),
    )
    regex: str | None = field(
        default=None,
        metadata=key("Python regular expression, searched in the path, ignoring case."),
    )
    methods: tuple[HttpMethod, ...] | None = field(
        default=None,
        metadata=key(
            "Only these methods match (GET implies HEAD); leave out for all.",
            ignore_case=True,
            schema={"minItems": 1},
        ),
    )
    auth: AuthMode = field(
        default="required",
        metadata=key(
            "required: a valid token; optional: identity if any; public: no check; deny: 403."
        ),
    )
    roles: tuple[str, ...] | None = field(
        default=None, metadata=key("Any of these roles, else 403; only with auth: required.")
    )
    on_unauthenticated: OnUnauthenticated = field(
        default="auto",
        metadata=key("auto: browsers redirected, others 401; redirect; status (401 JSON)."),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Routing:
    """The top-level keys that make the route table."""

    routes: tuple[RouteRule, ...] = field(
        default=(), metadata=key("Ordered rules; the first match wins, else default.")
    )
    default: AuthMode = field(
        default="required", metadata=key("Auth mode of a request no route matches (fail closed).")
    )


def read_routes(top: Section) -> tuple[RouteTable | None, list[str]]:
    default = build(top, Routing).default  # routes are read below, one section each
    routes: list[Route] = []
    for index, sec in enumerate(top.sections("routes")):
        route = _route(sec, index)
        sec.finish()
        if route is not None:
            routes.append(route)
    warnings = []
    for i, later in enumerate(routes):
        for earlier in routes[:i]:
            if shadowing(earlier, later):
                warnings.append(
                    f"{top.problems.file}:{later.line}: routes[{later.index}] ({later.label}) can"
                    f" never match: routes[{earlier.index}] ({earlier.label}) above it matches"
                    " every request it would"
                )
                break
    return RouteTable(tuple(routes), default_route(default)), warnings


def _route(sec: Section, index: int) -> Route | None:
    line = sec.node.start_mark.line + 1 if sec.node is not None else 0
    rule = build(sec, RouteRule)
    path, regex = rule.path, rule.regex
    compiled: re.Pattern[str] | None = None
    if (path is None) == (regex is None):
        sec.error("path", "each route needs exactly one of path or regex")
    else:
        try:
            compiled = compile_pattern(path) if path is not None else re.compile(str(regex), re.I)
        except (ValueError, re.error) as exc:
            sec.error("path" if path is not None else "regex", str(exc))
    if rule.methods == ():
        sec.error("methods", "an empty list would never match; leave methods out to match all")
    for m in rule.methods or ():
        if m.upper() not in HTTP_METHODS:
            sec.error("methods", f"unknown HTTP method {m!r}")
    if rule.roles is not None and rule.auth != "required":
        sec.error("roles", f"roles need auth: required (this route is auth: {rule.auth})")
    if sec.has("on_unauthenticated") and rule.auth in ("public", "deny"):
        sec.error("on_unauthenticated", f"does not apply to auth: {rule.auth}")
    if compiled is None:
        return None
    return Route(
        index=index,
        source=str(path if path is not None else regex),
        line=line,
        regex=compiled,
        is_regex=regex is not None,
        methods=methods_with_head(list(rule.methods) if rule.methods is not None else None),
        auth=rule.auth,
        roles=frozenset(rule.roles or ()),
        on_unauthenticated=rule.on_unauthenticated,
    )
