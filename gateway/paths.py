"""One canonical form of the request path, shared by the matcher and the upstream.

Path-confusion bypasses (`/admin/../x`, `/%61dmin`, `/admin%2Fx`, `..;/`)
all work the same way: the proxy decides on one reading of the path and the
app acts on another. So the gateway resolves the path once, matches on the
result and forwards exactly that result; what it cannot resolve without
guessing how the upstream would read it is refused.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from .errors import BadPath

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# What may stand raw in a path segment (RFC 3986 pchar less ';', plus '%').
_ALLOWED_RAW = _UNRESERVED | frozenset("!$&'()*+,=:@%")
# Segments of allowed raw characters, no '%', no empty, '.' or '..' segment.
_ALREADY_CANONICAL = re.compile(r"^(?=/)(?:/(?!\.\.?(?:/|$))[A-Za-z0-9\-._~!$&'()*+,=:@]+)*/?$")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")
_STRAY_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_DOUBLE = re.compile(r"%25[0-9A-Fa-f]{2}")
# Escaped characters that are decoded: those that may stand raw (`%` itself stays encoded).
_DECODED_RAW = _ALLOWED_RAW - {"%"}
# Decoding these would change the path's structure, or mean different things to different apps.
_AMBIGUOUS = {"2F": "an encoded '/'", "5C": "an encoded '\\'", "00": "an encoded NUL"}


def normalize(raw_path: str) -> str:
    """Raw request path (no query) -> canonical path. Raises BadPath when ambiguous."""
    if _ALREADY_CANONICAL.match(raw_path):
        return raw_path  # the common case: nothing to decode, resolve or refuse
    return resolve(raw_path)


def resolve(raw_path: str) -> str:
    """The full normalization; `normalize` skips it for paths that are canonical already."""
    if not raw_path.startswith("/"):
        raise BadPath("the request target must be a path starting with '/'")
    out: list[str] = []
    segments = raw_path.split("/")[1:]
    for index, raw in enumerate(segments):
        segment = _segment(raw)
        last = index == len(segments) - 1
        if segment == "..":
            if not out:
                raise BadPath("'..' climbs above the root")
            out.pop()
            if last:
                out.append("")
        elif segment == ".":
            if last:
                out.append("")
        elif segment or last:
            out.append(segment)
    path = "/" + "/".join(out)
    return path


def _segment(raw: str) -> str:
    for ch in raw:
        if ch not in _ALLOWED_RAW:
            raise BadPath(_describe(ch))
    if "%" not in raw:
        return raw
    if _STRAY_PCT.search(raw):
        # checked before decoding: in `%%32%65` or `%2%65` decoding the other escapes
        # would leave an encoded dot behind for the upstream to decode
        raise BadPath("a '%' that does not start a percent-encoded byte")

    def decode(m: re.Match[str]) -> str:
        hexa = m.group(1).upper()
        if hexa in _AMBIGUOUS:
            raise BadPath(f"the path contains {_AMBIGUOUS[hexa]}")
        code = int(hexa, 16)
        if code < 0x20 or code == 0x7F:
            raise BadPath("the path contains an encoded control character")
        char = chr(code)
        return char if char in _DECODED_RAW else "%" + hexa

    decoded = _PCT.sub(decode, raw)
    if _DOUBLE.search(decoded):
        # `%2541` is `%41` to an upstream that decodes once and `A` to one that decodes twice
        raise BadPath("the path contains a double-encoded byte ('%25' before two hex digits)")
    return decoded


def decoded(path: str) -> str:
    """A canonical path as an upstream sees it after decoding it once: what routes match.

    Normalization leaves only bytes encoded that cannot stand raw in a path (no `/`, no
    dot, no `%XX` of a `%XX`), so this adds no segment and no dot segment.
    """
    if "%" not in path:
        return path
    return unquote(path, errors="replace")


def _describe(ch: str) -> str:
    if ch == ";":
        return "';' path parameters are read differently by different servers"
    if ch == "\\":
        return "a '\\' is read as '/' by some servers"
    if ch == "#":
        return "a '#' fragment does not belong in a request"
    return f"the character {ch!r} is not allowed raw in a path"
