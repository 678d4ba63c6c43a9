"""The docs say what is true: the Next.js migration guide's gateway config loads and decides
as the guide's table says, its claims about the old app's tokens and users hold, and every
relative link between the markdown files points at a file (and heading) that exists."""

from __future__ import annotations

import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.auth import NOBODY, Identity
from gateway.config import Config, load
from gateway.decision import decide
from gateway.errors import TokenInvalid
from gateway.routing import Route
from gateway.tokens import REFRESH, Principal
from gateway.view import RequestView

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
GUIDE = DOCS / "migration-nextjs.md"
BEFORE = DOCS / "migration" / "before"
AFTER = DOCS / "migration" / "after"


@pytest.fixture
def after_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    """after/config.yaml with its users.yaml, loaded as `gateway serve` loads it.

    The secret comes from the variable the file names. The assertion key it names is made
    here: a private key never belongs in a repository, not even an example's.
    """
    for name in ("config.yaml", "users.yaml"):
        shutil.copy(AFTER / name, tmp_path / name)
    text = (tmp_path / "config.yaml").read_text()
    env = re.search(r"^\s*secret_env:\s*(\S+)", text, re.M)
    assert env is not None
    monkeypatch.setenv(env.group(1), secrets.token_urlsafe(48))
    key_file = re.search(r"^\s*private_key_file:\s*(\S+)", text, re.M)
    assert key_file is not None
    key_path = tmp_path / key_file.group(1)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return load(tmp_path / "config.yaml")


def _ts_constant(path: Path, name: str) -> str:
    """`const NAME = 'value'` (or `export const`) from one of the example's TypeScript files."""
    found = re.search(rf"\b{name}\s*=\s*'([^']*)'", path.read_text())
    assert found is not None, f"{name} not in {path}"
    return found.group(1)


def test_the_guides_gateway_config_loads(after_config: Config) -> None:
    config = after_config
    assert str(config.upstream) == "http://127.0.0.1:3000"
    assert not [w for w in config.warnings if "can never match" in w]
    assert config.login.users is not None and set(config.login.users.users) == {"alice", "bob"}
    assert config.identity_assertion is not None
    headers = dict(config.identity_headers)
    assert headers == {
        "X-User-Id": "sub",
        "X-User-Email": "email",
        "X-User-Name": "name",
        "X-User-Roles": "roles",
    }
    # what the guide maps onto the old app's lib/tokens.ts
    tokens_ts = BEFORE / "lib" / "tokens.ts"
    assert config.cookies.access == _ts_constant(tokens_ts, "ACCESS_COOKIE")
    assert config.cookies.refresh == _ts_constant(tokens_ts, "REFRESH_COOKIE")
    assert config.tokens.issuer == _ts_constant(tokens_ts, "ISSUER")
    assert config.tokens.audience == _ts_constant(tokens_ts, "AUDIENCE")
    assert (config.tokens.access_ttl, config.tokens.refresh_ttl) == (15 * 60, 14 * 86400)
    # ... and that lib/assertion.ts and the gateway agree on
    assertion_ts = (AFTER / "lib" / "assertion.ts").read_text()
    assert f"issuer: '{config.tokens.issuer}'" in assertion_ts
    assert f"audience: '{config.tokens.audience}'" in assertion_ts
    assert config.identity_assertion.header.lower() in assertion_ts
    port = config.admin_listen.port
    assert f"http://127.0.0.1:{port}/.well-known/jwks.json" in assertion_ts
    session_ts = (AFTER / "lib" / "session.ts").read_text()
    for header in headers:
        assert f"'{header.lower()}'" in session_ts


def _decision_table() -> list[list[str]]:
    """The rows of the table under "What the routes decide" in the guide."""
    text = GUIDE.read_text()
    section = text.split("### What the routes decide", 1)[1]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows and not line.startswith("|"):
            break
    return rows


def _answer(route: Route, identity: Identity, method: str, browser: bool) -> str:
    """The status the gateway gives, as the guide's table writes it."""
    headers = CIMultiDict({"Accept": "text/html"} if browser else {})
    view = RequestView(
        method=method, raw_path="/", path="/", query="", host="", scheme="http", client="",
        headers=CIMultiDictProxy(headers),
    )  # fmt: skip
    decision = decide(route, identity, view)
    if decision in ("public", "allow", "anonymous"):
        return "200"
    if decision in ("deny", "forbidden"):
        return "403"
    return "302" if decision == "redirect" else "401"


def _user(config: Config, name: str) -> Identity:
    assert config.login.users is not None
    claims = config.login.users.current_claims(name)
    assert claims is not None
    principal = Principal(name, frozenset(claims["roles"]), claims, time.time() + 60)
    return Identity(principal, presented=True)


def test_the_routes_decide_what_the_guide_says(after_config: Config) -> None:
    rows = _decision_table()
    assert len(rows) >= 8, rows
    bob, alice = _user(after_config, "bob"), _user(after_config, "alice")
    for request, route_label, anonymous, as_bob, as_alice in rows:
        method, path = request.split("`")[1].split(" ", 1)
        route = after_config.routes.match(method, path)
        assert f"`{route.label}`" == route_label, request
        browser_and_program = " / ".join(
            _answer(route, NOBODY, method, browser) for browser in (True, False)
        )
        assert browser_and_program == anonymous, request
        assert _answer(route, bob, method, False) == as_bob, request
        assert _answer(route, alice, method, False) == as_alice, request


def _old_app_token(secret: str, config: Config, **extra: Any) -> str:
    """What the old lib/tokens.ts signs: jose's SignJWT, no `typ` claim, `kind` on refresh."""
    now = int(time.time())
    claims = {
        "email": "bob@example.com",
        "name": "Bob",
        "roles": ["viewer"],
        "sub": "bob",
        "iss": config.tokens.issuer,
        "aud": config.tokens.audience,
        "iat": now,
        "exp": now + 900,
        **extra,
    }
    return jwt.encode(claims, secret, algorithm="HS256", headers={"alg": "HS256"})


def test_the_old_apps_tokens_are_refused_as_the_guide_says(
    after_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = secrets.token_urlsafe(48)
    monkeypatch.setenv("JWT_SECRET", secret)  # the same secret as the old app, on purpose
    config = load(after_config.source)
    verifier = config.tokens.verifier()
    with pytest.raises(TokenInvalid):  # no typ claim: every old access token is refused
        verifier.verify(_old_app_token(secret, config))
    with pytest.raises(TokenInvalid):  # nor is an old refresh token a refresh token
        verifier.verify(_old_app_token(secret, config, kind="refresh"), REFRESH)
    # the guide's caveat: a token that does carry all six claims passes, until its exp
    assert verifier.verify(_old_app_token(secret, config, typ="access")).subject == "bob"
    assert not re.search(r"\btyp\b", (BEFORE / "lib" / "tokens.ts").read_text())


async def test_the_users_keep_their_bcrypt_hashes(after_config: Config) -> None:
    users = after_config.login.users
    assert users is not None
    old = set(re.findall(r"'(\$2[aby]\$[^']+)'", (BEFORE / "lib" / "users.ts").read_text()))
    assert {user.password_hash for user in users.users.values()} <= old
    async with aiohttp.ClientSession() as client:  # a users file never uses it
        for name, password in (("alice", "wonderland"), ("bob", "builder")):
            claims = await users.check(name, password, client)
            assert claims is not None and claims["sub"] == name
        assert await users.check("bob", "wonderland", client) is None


# -- links ------------------------------------------------------------------------------

MARKDOWN = sorted([ROOT / "README.md", *DOCS.rglob("*.md")])
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)
_INLINE_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)


def _prose(path: Path) -> str:
    """The file without fenced code blocks and code spans, where nothing is a link."""
    return _CODE_SPAN.sub("", _FENCE.sub("", path.read_text()))


def _links(path: Path) -> list[str]:
    text = _prose(path)
    return _INLINE_LINK.findall(text) + _REFERENCE_LINK.findall(text)


def _relative(target: str) -> bool:
    return not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) and not target.startswith("//")


def _anchors(path: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to '-', repeats numbered."""
    seen: dict[str, int] = {}
    found = set()
    for line in _FENCE.sub("", path.read_text()).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading is None:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    found.update(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", path.read_text()))
    return found


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files_that_exist(page: Path) -> None:
    broken = []
    for target in _links(page):
        if not _relative(target) or target.startswith("#"):
            continue
        file_part = target.split("#", 1)[0].split("?", 1)[0]
        if not (page.parent / file_part).exists():
            broken.append(target)
    assert broken == [], f"{page.relative_to(ROOT)} links to missing files"


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_name_headings_that_exist(page: Path) -> None:
    broken = []
    for target in _links(page):
        if not _relative(target) or "#" not in target:
            continue
        file_part, anchor = target.split("#", 1)
        linked = (page.parent / file_part) if file_part else page
        if linked.suffix == ".md" and linked.is_file() and anchor not in _anchors(linked):
            broken.append(target)
    assert broken == [], f"{page.relative_to(ROOT)} links to missing headings"


def test_the_link_checker_sees_links() -> None:
    """Guard against a checker that passes because it finds nothing."""
    links = _links(GUIDE)
    assert "migration/before/middleware.ts" in links
    assert "security.md#refresh-token-replay" in links
    assert "configuration.md#identity_assertion" in links
    assert "the-next-parameter" in _anchors(DOCS / "security.md")
