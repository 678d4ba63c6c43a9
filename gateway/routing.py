"""Ordered route table with the Next.js `matcher` syntax.

Patterns compile exactly as path-to-regexp v6 (the version Next.js ships)
compiles them with `delimiter: "/"`, case-insensitive and non-strict (a
trailing slash is allowed), so `/admin/:path*` covers `/admin`, `/admin/` and
everything below, and `/ADMIN/x` cannot slip past it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

AuthMode = Literal["required", "optional", "public", "deny"]
OnUnauthenticated = Literal["auto", "redirect", "status"]

_NAME_CHAR = re.compile(r"[0-9A-Za-z_]")
_DEFAULT_SEGMENT = r"[^/]+?"


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    prefix: str
    suffix: str
    pattern: str
    modifier: str


def _lex(source: str) -> list[tuple[str, str]]:
    """path-to-regexp v6 `lexer`: (kind, value) tokens."""
    tokens: list[tuple[str, str]] = []
    i = 0
    while i < len(source):
        ch = source[i]
        if ch in "*+?":
            tokens.append(("MODIFIER", ch))
            i += 1
        elif ch == "\\":
            if i + 1 >= len(source):
                raise ValueError("a trailing backslash escapes nothing")
            tokens.append(("ESCAPED", source[i + 1]))
            i += 2
        elif ch == "{":
            tokens.append(("OPEN", ch))
            i += 1
        elif ch == "}":
            tokens.append(("CLOSE", ch))
            i += 1
        elif ch == ":":
            j = i + 1
            while j < len(source) and _NAME_CHAR.match(source[j]):
                j += 1
            if j == i + 1:
                raise ValueError(f"missing parameter name at position {i + 1}")
            tokens.append(("NAME", source[i + 1 : j]))
            i = j
        elif ch == "(":
            i, pattern = _lex_group(source, i)
            tokens.append(("PATTERN", pattern))
        else:
            tokens.append(("CHAR", ch))
            i += 1
    tokens.append(("END", ""))
    return tokens


def _lex_group(source: str, start: int) -> tuple[int, str]:
    depth, j = 1, start + 1
    if j < len(source) and source[j] == "?":
        raise ValueError(f"a pattern cannot start with '?' at position {j + 1}")
    while j < len(source):
        if source[j] == "\\":
            j += 2
            continue
        if source[j] == ")":
            depth -= 1
            if depth == 0:
                break
        elif source[j] == "(":
            depth += 1
            if j + 1 < len(source) and source[j + 1] != "?":
                raise ValueError(f"capturing groups are not allowed at position {j + 1}")
        j += 1
    if depth:
        raise ValueError(f"unbalanced '(' at position {start + 1}")
    pattern = source[start + 1 : j]
    if not pattern:
        raise ValueError(f"missing pattern at position {start + 1}")
    return j + 1, pattern


def _parse(source: str) -> list[str | _Param]:
    """path-to-regexp v6 `parse` with prefixes './'."""
    tokens = _lex(source)
    result: list[str | _Param] = []
    key, i, path = 0, 0, ""

    def take(kind: str) -> str | None:
        nonlocal i
        if tokens[i][0] == kind:
            i += 1
            return tokens[i - 1][1]
        return None

    def text() -> str:
        out = ""
        while (v := take("CHAR")) is not None or (v := take("ESCAPED")) is not None:
            out += v
        return out

    while i < len(tokens):
        char, name, pattern = take("CHAR"), take("NAME"), take("PATTERN")
        if name is not None or pattern is not None:
            prefix = char or ""
            if prefix not in ("", ".", "/"):
                path += prefix
                prefix = ""
            if path:
                result.append(path)
                path = ""
            if name is None:
                name, key = str(key), key + 1
            modifier = take("MODIFIER") or ""
            result.append(_Param(name, prefix, "", pattern or _DEFAULT_SEGMENT, modifier))
            continue
        value = char if char is not None else take("ESCAPED")
        if value is not None:
            path += value
            continue
        if path:
            result.append(path)
            path = ""
        if take("OPEN") is not None:
            prefix = text()
            name = take("NAME") or ""
            pattern = take("PATTERN") or ""
            suffix = text()
            if take("CLOSE") is None:
                raise ValueError("expected '}' to close a group")
            if not name and pattern:
                name, key = str(key), key + 1
            if name and not pattern:
                pattern = _DEFAULT_SEGMENT
            result.append(_Param(name, prefix, suffix, pattern, take("MODIFIER") or ""))
            continue
        if take("END") is None:
            _kind, value = tokens[i]
            raise ValueError(f"unexpected {value!r} at position {i + 1}")
    return result


def compile_pattern(source: str) -> re.Pattern[str]:
    """Next.js matcher source -> compiled regex. Raises ValueError for a bad pattern."""
    if not source.startswith("/"):
        raise ValueError("a path pattern must start with '/'")
    route = "^"
    for token in _parse(source):
        if isinstance(token, str):
            route += re.escape(token)
            continue
        prefix, suffix, mod = re.escape(token.prefix), re.escape(token.suffix), token.modifier
        pat = token.pattern
        if not pat:
            route += f"(?:{prefix}{suffix}){mod}"
        elif prefix or suffix:
            if mod in ("+", "*"):
                optional = "?" if mod == "*" else ""
                route += f"(?:{prefix}((?:{pat})(?:{suffix}{prefix}(?:{pat}))*){suffix}){optional}"
            else:
                route += f"(?:{prefix}({pat}){suffix}){mod}"
        elif mod in ("+", "*"):
            route += f"((?:{pat}){mod})"
        else:
            route += f"({pat}){mod}"
    route += "/?$"
    try:
        return re.compile(route, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"the pattern does not compile: {exc}") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """One compiled rule. `source` and `line` let `explain` and logs point back to the YAML."""

    index: int
    source: str
    line: int
    regex: re.Pattern[str]
    is_regex: bool = False
    methods: frozenset[str] | None = None
    auth: AuthMode = "required"
    roles: frozenset[str] = field(default_factory=frozenset)
    on_unauthenticated: OnUnauthenticated = "auto"

    @property
    def label(self) -> str:
        """Low-cardinality name for logs and metrics."""
        return f"regex:{self.source}" if self.is_regex else self.source

    def matches(self, method: str, path: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        if self.is_regex:
            return self.regex.search(path) is not None
        return self.regex.match(path) is not None


def default_route(auth: AuthMode) -> Route:
    return Route(index=-1, source="(default)", line=0, regex=re.compile(""), auth=auth)


class RouteTable:
    """Compiled once per config; `match` is first-match-wins, then the default."""

    __slots__ = ("default", "routes")

    def __init__(self, routes: tuple[Route, ...], default: Route) -> None:
        self.routes = routes
        self.default = default

    def match(self, method: str, path: str) -> Route:
        # Route.matches, inlined: a function call per route tried costs more than the test
        for route in self.routes:
            if route.methods is not None and method not in route.methods:
                continue
            if route.is_regex:
                if route.regex.search(path) is not None:
                    return route
            elif route.regex.match(path) is not None:
                return route
        return self.default


def methods_with_head(methods: list[str] | None) -> frozenset[str] | None:
    """GET implies HEAD, as every HTTP server treats them."""
    if methods is None:
        return None
    upper = {m.upper() for m in methods}
    if "GET" in upper:
        upper.add("HEAD")
    return frozenset(upper)


def shadowing(earlier: Route, later: Route) -> bool:
    """True when `earlier` matches every request `later` could match, so `later` is dead.

    Best effort and never wrong in the positive direction: it recognises the
    common mistakes (a catch-all first, a duplicate, a prefix rule above a
    more specific path, a literal path that an earlier regex covers).
    """
    if earlier.methods is not None and (
        later.methods is None or not later.methods <= earlier.methods
    ):
        return False
    if earlier.is_regex == later.is_regex and earlier.source.lower() == later.source.lower():
        return True
    if later.is_regex:
        return False
    literal = _literal_prefix(later.source)
    if literal == later.source:
        # a literal route also matches its trailing-slash twin: both must be covered
        method = next(iter(later.methods or {"GET"}))
        twin = literal.rstrip("/") + "/" if literal != "/" else literal
        return earlier.matches(method, literal) and earlier.matches(method, twin)
    if earlier.is_regex:
        return False
    base, kind = _prefix_rule(earlier.source)
    if base is None:
        return False
    # only whole segments count: '/api:v' is not under '/api/'
    anchor = literal[: literal.rfind("/")].lower()
    if kind == "*":
        return anchor == base or anchor.startswith(base + "/")
    return anchor.startswith(base + "/") and len(anchor) > len(base) + 1


def _literal_prefix(source: str) -> str:
    """Up to the first character that starts a parameter, group or escape."""
    m = re.search(r"[:({\\*+?]", source)
    return source if m is None else source[: m.start()]


def _prefix_rule(source: str) -> tuple[str | None, str]:
    """'/api/:rest*' -> ('/api', '*'); anything else -> (None, '')."""
    m = re.fullmatch(r"((?:/[^/:({}\\*+?]+)*)/:[A-Za-z0-9_]+([*+])", source)
    return (m.group(1).lower(), m.group(2)) if m else (None, "")
