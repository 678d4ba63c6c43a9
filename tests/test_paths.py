"""Path normalization: one reading of the path for the matcher and the upstream."""

from __future__ import annotations

import contextlib
import random

import pytest

from gateway.errors import BadPath
from gateway.paths import _ALREADY_CANONICAL, normalize, resolve


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a/b/", "/a/b/"),
        ("/admin/../x", "/x"),
        ("/a/./b", "/a/b"),
        ("/a/b/..", "/a/"),
        ("/a/.", "/a/"),
        ("//admin", "/admin"),
        ("/a//b///c", "/a/b/c"),
        ("/%61dmin", "/admin"),
        ("/%2e%2e/", None),
        ("/a/%2e%2e/admin", "/admin"),
        ("/a/%2E/b", "/a/b"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/sp%20ace", "/sp%20ace"),
        ("/%7euser", "/~user"),
        ("/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,="),
    ],
)
def test_normalize(raw: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(BadPath):
            normalize(raw)
    else:
        assert normalize(raw) == expected


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("/admin%2Fx", "encoded '/'"),
        ("/admin%2fx", "encoded '/'"),
        ("/admin%5Cx", "encoded '\\'"),
        ("/a%00b", "NUL"),
        ("/admin;x", "';' path parameters"),
        ("/static/..;/admin", "';' path parameters"),
        ("/a\\b", "'\\'"),
        ("/..", "above the root"),
        ("/a/../..", "above the root"),
        ("/a%zz", "'%'"),
        ("/a%", "'%'"),
        ("/a b", "not allowed raw"),
        ("/é", "not allowed raw"),
        ("*", "starting with '/'"),
        ("", "starting with '/'"),
        ("http://evil/x", "starting with '/'"),
    ],
)
def test_ambiguous_paths_are_refused(raw: str, why: str) -> None:
    with pytest.raises(BadPath, match=why.replace("\\", "\\\\").replace("(", "\\(")):
        normalize(raw)


def test_fast_path_agrees_with_full_normalization() -> None:
    """Every path the shortcut accepts as canonical is one the full resolution leaves as is."""
    rng = random.Random(1234)
    alphabet = "ab.-_~%2F5c;/\\:@!$&'()*+,= é"
    checked = 0
    for _ in range(20_000):
        candidate = "/" + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        if _ALREADY_CANONICAL.match(candidate):
            checked += 1
            assert resolve(candidate) == candidate, candidate
        else:
            with contextlib.suppress(BadPath):
                resolve(candidate)
    assert checked > 500
