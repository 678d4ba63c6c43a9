"""Config loading: typed values, secrets only from env/files, every error located, all at once."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.config import load
from gateway.errors import ConfigError
from tests.conftest import SECRET_ENV, config_text, write_config

LOCATED = re.compile(r"^(?P<file>.+):(?P<line>\d+):(?P<col>\d+): (?P<key>\S+): (?P<msg>.+)$")


def problems(tmp_path: Path, text: str) -> list[str]:
    path = write_config(tmp_path, textwrap.dedent(text))
    with pytest.raises(ConfigError) as info:
        load(path)
    lines = [str(p) for p in info.value.problems]
    for line in lines:
        assert LOCATED.match(line), line
        assert line.startswith(str(path))
    return lines


def test_shipped_config_loads(secret: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", secret)
    config = load(Path(__file__).parent.parent / "config.yaml")
    assert config.upstream is not None and config.upstream.port == 3000
    assert config.tokens.keys.algorithm == "HS256"
    assert config.routes.match("GET", "/dashboard/x").auth == "required"
    assert config.warnings == ()


def test_values_are_typed_and_defaults_apply(tmp_path: Path, secret: str) -> None:
    config = load(write_config(tmp_path, config_text("http://127.0.0.1:3000")))
    assert config.upstream_timeout == 1.0
    assert config.tokens.access_ttl == 900
    assert config.tokens.refresh_ttl == 14 * 86400
    assert config.tokens.leeway == 30
    assert config.store_timeout == 0.5
    assert config.cookies.access == "access_token"
    assert config.cookies.same_site == "lax"
    assert config.login.path == "/login"
    assert config.listen.host == "127.0.0.1"
    with pytest.raises(AttributeError):
        config.workers = 3  # type: ignore[misc]


def test_secret_never_shows_in_repr(tmp_path: Path, secret: str) -> None:
    config = load(write_config(tmp_path, config_text("http://127.0.0.1:3000")))
    assert secret not in repr(config)
    assert secret not in str(config.tokens.keys)


def test_every_problem_is_reported_at_once_with_location(tmp_path: Path, secret: str) -> None:
    found = problems(
        tmp_path,
        f"""\
        listen: 0.0.0.0:99999
        upstrem: http://127.0.0.1:3000
        upstream_timeout: 10
        tokens:
          algorithm: RS257
          secret_env: {SECRET_ENV}
          acces_ttl: 5m
        routes:
          - path: /admin/:path*
            roles: admin
          - regex: '(['
          - path: /x
            auth: maybe
            methods: [GET, FETCH]
        default: open
        """,
    )
    text = "\n".join(found)
    assert ":1:9: listen: expected host:port" in text
    assert ":2:1: upstrem: unknown key; did you mean 'upstream'?" in text
    assert ":1:1: upstream: required key is missing" in text
    assert ":3:19: upstream_timeout: expected a duration" in text
    assert ":5:14: tokens.algorithm: expected one of" in text
    assert ":7:3: tokens.acces_ttl: unknown key; did you mean 'access_ttl'?" in text
    assert ":10:12: routes[0].roles: expected a list of strings" in text
    assert ":11:12: routes[1].regex:" in text
    assert ":13:11: routes[2].auth: expected one of required" in text
    assert "routes[2].methods: unknown HTTP method 'FETCH'" in text
    assert ":15:10: default: expected one of" in text
    assert len(found) == 11


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("tokens: {secret_env: GATEWAY_NO_SUCH_VAR}", "GATEWAY_NO_SUCH_VAR is not set"),
        ("tokens: {secret_env: SHORT_SECRET}", "at least 32 bytes, this one is 10"),
        ("tokens: {}", "needs exactly one of secret_env or secret_file"),
        (
            f"tokens: {{secret_env: {SECRET_ENV}, secret_file: s.txt}}",
            "needs exactly one of secret_env or secret_file",
        ),
        ("tokens: {secret_file: missing.txt}", "cannot read"),
        (f"tokens: {{secret_env: {SECRET_ENV}, private_key_file: k.pem}}", "not private_key_file"),
        ("tokens: {algorithm: RS256}", "needs private_key_file or public_key_files"),
        ("tokens: {algorithm: none, secret_env: X}", "expected one of HS256"),
        (f"tokens: {{secret_env: {SECRET_ENV}, access_ttl: 1h, refresh_ttl: 30m}}", "longer"),
    ],
)
def test_token_key_rules(
    tmp_path: Path, secret: str, monkeypatch: pytest.MonkeyPatch, snippet: str, expected: str
) -> None:
    monkeypatch.setenv("SHORT_SECRET", "0123456789")
    found = problems(tmp_path, f"upstream: http://127.0.0.1:3000\n{snippet}\n")
    assert any(expected in line for line in found), found


def test_misspelt_keys_of_every_section_get_a_suggestion(tmp_path: Path, secret: str) -> None:
    found = problems(
        tmp_path,
        f"""\
        upstream: http://127.0.0.1:3000
        store_pasword_env: REDIS_PW
        tokens:
          secret_env: {SECRET_ENV}
          previous_keys:
            - {{kid: old, secret_env: {SECRET_ENV}, algoritm: HS256}}
        routes:
          - {{path: /a, method: [GET]}}
        identity_assertion: {{private_key_file: none.pem, tll: 30s}}
        """,
    )
    text = "\n".join(found)
    assert ":2:1: store_pasword_env: unknown key; did you mean 'store_password_env'?" in text
    assert "tokens.previous_keys[0].algoritm: unknown key; did you mean 'algorithm'?" in text
    assert "routes[0].method: unknown key; did you mean 'methods'?" in text
    assert "identity_assertion.tll: unknown key; did you mean 'ttl'?" in text


def test_secret_literal_in_yaml_is_an_unknown_key(tmp_path: Path) -> None:
    found = problems(tmp_path, "upstream: http://127.0.0.1:3000\ntokens: {secret: hunter2}\n")
    assert any("tokens.secret: unknown key" in line for line in found)
    assert not any("hunter2" in line for line in found)


def test_secret_file_is_read_and_trailing_newline_ignored(tmp_path: Path) -> None:
    (tmp_path / "jwt.secret").write_text("k" * 40 + "\n")
    path = write_config(
        tmp_path, "upstream: http://127.0.0.1:3000\ntokens: {secret_file: jwt.secret}\n"
    )
    assert load(path).tokens.keys.signing_key.reveal() == b"k" * 40


def _pem_private(key: object) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_public(key: object) -> bytes:
    return key.public_key().public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize(
    ("algorithm", "make"),
    [
        ("RS256", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ES256", lambda: ec.generate_private_key(ec.SECP256R1())),
        ("EdDSA", ed25519.Ed25519PrivateKey.generate),
    ],
)
def test_asymmetric_keys_from_pem_files(tmp_path: Path, algorithm: str, make: object) -> None:
    key = make()  # type: ignore[operator]
    (tmp_path / "private.pem").write_bytes(_pem_private(key))
    (tmp_path / "public.pem").write_bytes(_pem_public(key))
    for tokens in (
        f"{{algorithm: {algorithm}, private_key_file: private.pem}}",
        f"{{algorithm: {algorithm}, public_key_files: [public.pem]}}",
    ):
        path = write_config(tmp_path, f"upstream: http://127.0.0.1:3000\ntokens: {tokens}\n")
        assert load(path).tokens.keys.algorithm == algorithm


def test_key_of_the_wrong_kind_is_refused(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.pem").write_bytes(_pem_private(key))
    (tmp_path / "garbage.pem").write_text("not a key")
    found = problems(
        tmp_path,
        """\
        upstream: http://127.0.0.1:3000
        tokens:
          algorithm: RS256
          private_key_file: ec.pem
          public_key_files: [garbage.pem]
        """,
    )
    assert any("RS256 needs an RSA key" in line for line in found)
    assert any("garbage.pem is not a PEM public key" in line for line in found)


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("upstream: ftp://x", "expected an http:// or https:// URL"),
        ("upstream: http://127.0.0.1:3000/app", "without path"),
        ("workers: 0", "workers: expected a whole number >= 1"),
        ("workers: two", "workers: expected a whole number"),
        ("store: mysql://x", "store: expected memory://"),
        ("admin_listen: 127.0.0.1:8080\nlisten: 127.0.0.1:8080", "must differ from listen"),
        ("cookies: {same_site: none, secure: false}", "needs secure: true"),
        ("cookies: {access: 'bad name'}", "not a valid cookie name"),
        ("cookies: {access: same, refresh: same}", "must differ"),
        ("login: {users_file: nope.yaml}", "file not found"),
        ("login: {verify_url: 'not a url'}", "expected an http:// or https:// URL"),
        ("login: {path: /x, logout_path: /x}", "must differ from login.path"),
        ("identity_headers: {Host: sub}", "managed by the gateway"),
        ("identity_headers: {X-User-Id: [a]}", "expected the name of a claim"),
        ("routes: [{path: /a, regex: '^/a'}]", "exactly one of path or regex"),
        ("routes: [{path: /a, auth: public, roles: [x]}]", "roles need auth: required"),
        ("routes: [{path: /a, auth: deny, on_unauthenticated: status}]", "does not apply"),
        ("routes: {path: /a}", "expected a list"),
        ("routes: [{path: '/a/:'}]", "missing parameter name"),
        ("upstream_timeout: 30", "expected a duration"),
        ("upstream_timeout: 5 minutes", "expected a duration"),
        ("upstream: http://127.0.0.1:1\nupstream: http://127.0.0.1:2", "duplicate key"),
        ("tokens: [1, 2]", "expected a mapping"),
        ("routes:\n  - path: /a\n   bad: indent", "(yaml)"),
        ("upstream: http://[::1", "expected an http:// or https:// URL"),
        ("store: redis://[::1", "store: expected memory://"),
        ("login: {verify_url: 'http://[::1'}", "expected an http:// or https:// URL"),
        ("routes: [{path: /a, methods: []}]", "an empty list would never match"),
        (
            "tokens: {secret_env: GATEWAY_TEST_SECRET, access_ttl: 20d}",
            "refresh_ttl must be longer",
        ),
        ("listen: 0.0.0.0:9090\nadmin_listen: 127.0.0.1:9090", "must differ from listen"),
        ("identity_headers: {X-User-Id: sub, x-user-id: email}", "the same header twice"),
        ("identity_headers: {Forwarded: sub}", "managed by the gateway"),
        (
            "identity_assertion: {header: 'bad header', private_key_file: config.yaml}",
            "cannot be used",
        ),
    ],
)
def test_rules(tmp_path: Path, secret: str, snippet: str, expected: str) -> None:
    text = f"tokens: {{secret_env: {SECRET_ENV}}}\n" if not snippet.startswith("tokens") else ""
    if not snippet.startswith("upstream"):
        text += "upstream: http://127.0.0.1:3000\n"
    found = problems(tmp_path, text + snippet + "\n")
    assert any(expected in line for line in found), found


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load(tmp_path / "nope.yaml")
    assert any("upstream: required" in p for p in problems(tmp_path, ""))


def test_shadowed_route_is_a_warning_not_an_error(tmp_path: Path, secret: str) -> None:
    routes = """
    routes:
      - path: /api/:path*
      - path: /api/health
        auth: public
    """
    config = load(write_config(tmp_path, config_text("http://127.0.0.1:3000", routes=routes)))
    assert len(config.warnings) == 1
    assert "routes[1] (/api/health) can never match: routes[0] (/api/:path*)" in config.warnings[0]


def test_route_without_path_reports_only_that(tmp_path: Path, secret: str) -> None:
    found = problems(
        tmp_path,
        f"""\
        upstream: http://127.0.0.1:3000
        tokens: {{secret_env: {SECRET_ENV}}}
        routes:
          - auth: public
            methods: [GET]
        """,
    )
    assert len(found) == 1
    assert "routes[0].path: each route needs exactly one of path or regex" in found[0]


@pytest.mark.parametrize(("algorithm", "minimum"), [("HS256", 32), ("HS384", 48), ("HS512", 64)])
def test_hmac_secret_at_least_as_long_as_the_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, algorithm: str, minimum: int
) -> None:
    monkeypatch.setenv("SIZED_SECRET", "k" * (minimum - 1))
    tokens = f"{{algorithm: {algorithm}, secret_env: SIZED_SECRET}}"
    text = f"upstream: http://127.0.0.1:3000\ntokens: {tokens}\n"
    found = problems(tmp_path, text)
    assert any(f"at least {minimum} bytes, this one is {minimum - 1}" in line for line in found)
    monkeypatch.setenv("SIZED_SECRET", "k" * minimum)
    assert load(tmp_path / "config.yaml").tokens.keys.algorithm == algorithm


def _all_problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(path)
    lines = [str(p) for p in info.value.problems]
    assert all(LOCATED.match(line) for line in lines), lines
    return lines


def test_users_file_problems_name_the_users_file_line_and_key(tmp_path: Path, secret: str) -> None:
    users = tmp_path / "users.yaml"
    users.write_text(
        textwrap.dedent(
            """
            alice:
              password_hash: hunter2
              roles: [admin]
            bob:
              password_hash: "$2b$12$abcdefghijklmnopqrstuuLqCz1xGW8nV7e6dVWAv7aGSzC8KOjQe"
              rol: [viewer]
            carol:
              email: carol@example.com
            """
        )
    )
    text = config_text("http://127.0.0.1:3000", f"workers: 2\nlogin:\n  users_file: {users}\n")
    found = _all_problems(write_config(tmp_path, text))
    joined = "\n".join(found)
    assert f"{users}:3:" in joined and "plaintext passwords are refused" in joined
    assert "hunter2" not in joined  # the refused value itself is not echoed
    assert f"{users}:7:" in joined and "did you mean 'roles'" in joined
    assert f"{users}:9:3: carol.password_hash: required key is missing" in joined
    # ... and the main file's own problem in the same report
    assert any("workers" in line and "redis://" in line for line in found)


def test_template_syntax_error_is_a_config_error(tmp_path: Path, secret: str) -> None:
    (tmp_path / "users.yaml").write_text("")
    template = tmp_path / "login.html"
    template.write_text("<form>\n{% if error %}\n<p>{{ error }}</p>\n</form>\n")
    text = config_text(
        "http://127.0.0.1:3000",
        f"login:\n  users_file: {tmp_path / 'users.yaml'}\n  template: {template}\n",
    )
    found = _all_problems(write_config(tmp_path, text))
    assert any(line.startswith(f"{template}:") and "(template)" in line for line in found)


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("store: redis://:hunter2@127.0.0.1:6379/0\n", "a password never goes in the YAML"),
        ("store: postgres://db\n", "expected memory://"),
        ("store: redis://127.0.0.1/0?password=hunter2\n", "expected no ?options"),
        ("store: redis://127.0.0.1/0\nstore_password_env: NOT_SET_ANYWHERE\n", "not set"),
        ("workers: 3\n", "need a shared store"),
        ("trusted_proxies: [10.0.0.0/8, not-an-ip]\n", "expected an address or CIDR"),
    ],
)
def test_store_rules(tmp_path: Path, secret: str, snippet: str, expected: str) -> None:
    found = problems(tmp_path, config_text("http://127.0.0.1:3000", snippet))
    assert any(expected in line for line in found), found
    assert not any("hunter2" in line for line in found)


def test_store_password_from_the_environment(
    tmp_path: Path, secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GW_REDIS_PASSWORD", "s3cret")
    text = config_text(
        "http://127.0.0.1:3000",
        "store: redis://127.0.0.1:6379/0\nstore_password_env: GW_REDIS_PASSWORD\nworkers: 2\n",
    )
    config = load(write_config(tmp_path, text))
    assert config.store_password is not None and config.store_password.reveal() == b"s3cret"
    assert "s3cret" not in repr(config)


def test_sign_in_needs_a_signing_key(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "pub.pem").write_bytes(_pem_public(key))
    (tmp_path / "users.yaml").write_text("")
    text = textwrap.dedent(
        f"""
        upstream: http://127.0.0.1:3000
        tokens:
          algorithm: ES256
          public_key_files: [{tmp_path / "pub.pem"}]
        login:
          users_file: {tmp_path / "users.yaml"}
        """
    )
    found = problems(tmp_path, text)
    assert any("needs tokens.private_key_file" in line for line in found)


@pytest.mark.parametrize(
    ("cookies", "expected"),
    [
        ("  access: __Host-at\n  secure: false\n", "cookies.access: a __Host- cookie needs secure"),
        ("  refresh: __Secure-rt\n  secure: false\n", "cookies.refresh: a __Secure- cookie needs"),
        ("  access: __Host-at\n  path: /app\n", "cookies.access: a __Host- cookie needs path: /"),
        ("  access: __Host-at\n  domain: example.com\n", "a __Host- cookie needs path: / and no"),
    ],
)
def test_cookie_name_prefixes_need_their_attributes(
    tmp_path: Path, secret: str, cookies: str, expected: str
) -> None:
    """Browsers silently drop such cookies: every sign-in would look like it failed."""
    text = config_text("http://127.0.0.1:3000").replace(
        "cookies:\n  secure: false\n", "cookies:\n" + cookies
    )
    with pytest.raises(ConfigError) as caught:
        load(write_config(tmp_path, text))
    assert any(expected in str(p) for p in caught.value.problems), caught.value.problems


@pytest.mark.parametrize(
    ("line", "leaked"),
    [
        ("store: redix://:hunter2-secret@redis:6379/0", "hunter2-secret"),
        ("upstream: ftp://user:hunter2-secret@app", "hunter2-secret"),
        # a password holding '@' or '/': nothing of it is repeated
        ("store: redix://:hunter2@secret@redis:6379/0", "secret"),
        ("store: redix://:hunter2/secret@redis:6379/0", "hunter2"),
        ("store: redis+sentinel://default:p@ssw0rdXYZ@s1:26379/mymaster/x", "ssw0rdXYZ"),
        ("store: redis+cluster://u:a b@secret@n1:6379/0", "secret"),
    ],
)
def test_urls_in_errors_never_repeat_a_password(
    tmp_path: Path, secret: str, line: str, leaked: str
) -> None:
    text = config_text("http://127.0.0.1:3000") + line + "\n"
    if line.startswith("upstream"):
        text = text.replace("upstream: http://127.0.0.1:3000\n", "")
    with pytest.raises(ConfigError) as caught:
        load(write_config(tmp_path, text))
    rendered = str(caught.value)
    assert leaked not in rendered and "***@" in rendered


def test_a_secret_pasted_as_an_env_name_is_not_repeated(tmp_path: Path) -> None:
    pasted = "Zx9-pasted+secret/value=="
    text = config_text("http://127.0.0.1:3000").replace(
        f"secret_env: {SECRET_ENV}", f"secret_env: {pasted}"
    )
    with pytest.raises(ConfigError) as caught:
        load(write_config(tmp_path, text))
    assert pasted not in str(caught.value)
    assert "expected the name of an environment variable" in str(caught.value)
