"""login.providers in the config: every mistake at once with file:line, and check-config
(which contacts no provider unless --online)."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from gateway.config import load
from gateway.errors import ConfigError
from tests.conftest import SECRET_ENV, free_port, users_yaml
from tests.fake_provider import FakeProvider
from tests.helpers import run_cli

BASE = f"""\
upstream: http://127.0.0.1:3000
tokens:
  secret_env: {SECRET_ENV}
"""


def write(tmp_path: Path, login: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(BASE + "login:\n" + textwrap.indent(textwrap.dedent(login), "  "))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        load(path)
    return [str(p) for p in raised.value.problems]


def test_every_provider_mistake_is_reported_at_once_with_its_line(
    tmp_path: Path, secret: str
) -> None:
    path = write(
        tmp_path,
        """\
        providers:
          - id: Corp_1
            issuer: http://idp.example.com
            client_id: gateway
            client_secret: hunter2-hunter2
            colour: blue
            timeout: 5
            claims: {roles: groups, group: x}
            allowed_email_domains: [example.com, "not a domain"]
          - id: ok
            issuer: https://idp.example.com
            client_id: gateway
            client_secret_env: OIDC_NOT_SET_ANYWHERE
          - id: ok
            issuer: https://idp.example.com/?x=1
            client_id: gateway
            client_secret_env: A
            client_secret_file: b
          - name: nothing else
        """,
    )
    found = [p.partition("config.yaml")[2] for p in problems(path)]
    expected = [
        ":6:11: login.providers[0].id: expected lower-case letters, digits and '-', got 'Corp_1'",
        ":7:15: login.providers[0].issuer: an issuer must be https://",
        ":9:22: login.providers[0].client_secret: a secret never goes in the YAML",
        ":10:7: login.providers[0].colour: unknown key",
        ":11:16: login.providers[0].timeout: expected a duration",
        ":12:31: login.providers[0].claims.group: unknown key",
        ":13:30: login.providers[0].allowed_email_domains: expected a domain like example.com",
        ":17:26: login.providers[1].client_secret_env: environment variable OIDC_NOT_SET_ANYWHERE",
        ":18:11: login.providers[2].id: duplicate provider id 'ok'",
        ":19:15: login.providers[2].issuer: expected an issuer URL without user, password, query",
        ":22:27: login.providers[2].client_secret_file: use client_secret_env or",
        ":23:7: login.providers[3].id: required key is missing",
        ":23:7: login.providers[3].issuer: required key is missing",
        ":23:7: login.providers[3].client_id: required key is missing",
    ]
    assert len(found) == len(expected), found
    for line, prefix in zip(found, expected, strict=True):
        assert line.startswith(prefix), (line, prefix)
    text = "\n".join(found)
    assert "hunter2" not in text  # the literal secret is never repeated


def test_a_literal_secret_is_named_and_never_repeated(tmp_path: Path, secret: str) -> None:
    path = write(
        tmp_path,
        """\
        providers:
          - id: corp
            issuer: https://idp.example.com
            client_id: gateway
            client_secret: s3cr3t-value-here
        """,
    )
    (found,) = problems(path)
    assert found.endswith(
        "login.providers[0].client_secret: a secret never goes in the YAML: name it with"
        " client_secret_env or client_secret_file"
    )
    assert "s3cr3t" not in found


@pytest.mark.parametrize(
    ("issuer", "ok"),
    [
        ("https://idp.example.com", True),
        ("https://idp.example.com/realms/x/", True),
        ("http://127.0.0.1:8080", True),
        ("http://[::1]:8080", True),
        ("http://localhost:8080", True),
        ("http://idp.example.com", False),
        ("http://10.0.0.1", False),
        ("ftp://idp.example.com", False),
        ("https://user:pw@idp.example.com", False),
        ("https://idp.example.com#x", False),
        ("idp.example.com", False),
    ],
)
def test_the_issuer_is_https_or_loopback_http(
    tmp_path: Path, secret: str, issuer: str, ok: bool
) -> None:
    path = write(
        tmp_path,
        f"providers:\n  - id: corp\n    issuer: '{issuer}'\n    client_id: gateway\n",
    )
    if ok:
        assert load(path).login.providers[0].issuer == issuer
    else:
        assert any("issuer" in p for p in problems(path))


def test_providers_alone_need_no_password_backend_and_defaults_hold(
    tmp_path: Path, secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "oidc-secret").write_text("from-a-file\n")
    path = write(
        tmp_path,
        """\
        providers:
          - id: corp
            issuer: https://idp.example.com
            client_id: gateway
            client_secret_file: oidc-secret
            scopes: [email, groups]
          - id: public
            issuer: https://other.example.com
            client_id: spa
        """,
    )
    config = load(path)
    corp, public = config.login.providers
    assert corp.scopes == ("openid", "email", "groups")
    assert corp.client_secret is not None and corp.client_secret.reveal() == b"from-a-file"
    assert "from-a-file" not in repr(corp)
    assert public.public and public.label == "public" and public.timeout == 5
    assert public.claims.roles == "roles" and public.allowed_email_domains == ()
    assert tmp_path / "oidc-secret" in config.files  # a secret file change reloads


def test_check_config_names_the_providers_and_contacts_none(tmp_path: Path, secret: str) -> None:
    (tmp_path / "users.yaml").write_text(users_yaml())
    port = free_port()  # nothing listens: contacting it would fail
    path = write(
        tmp_path,
        f"""\
        users_file: users.yaml
        providers:
          - id: corp
            issuer: http://127.0.0.1:{port}
            client_id: gateway
        """,
    )
    result = run_cli("check-config", "--config", str(path), secret=secret)
    assert result.returncode == 0, result.stderr
    assert "sign-in with 2 users" in result.stdout and "OpenID Connect: corp" in result.stdout
    offline = run_cli("check-config", "--config", str(path), "--online", secret=secret)
    assert offline.returncode == 1
    assert f"provider corp: unreachable: ClientConnectorError calling http://127.0.0.1:{port}" in (
        offline.stderr
    )


async def test_check_config_online_fetches_discovery_and_keys(
    tmp_path: Path, secret: str, aiohttp_server: Any
) -> None:
    fake = FakeProvider()
    server: TestServer = await aiohttp_server(fake.app())
    fake.issuer = str(server.make_url("")).rstrip("/")
    path = write(
        tmp_path,
        f"""\
        providers:
          - id: corp
            issuer: {fake.issuer}
            client_id: gateway
        """,
    )
    online = ("check-config", "--config", str(path), "--online")
    result = await asyncio.to_thread(run_cli, *online, secret=secret)  # the fake runs on this loop
    assert result.returncode == 0, result.stderr
    assert "provider corp: ok: 1 signing key, algorithms RS256" in result.stdout
    assert fake.calls == {"discovery": 1, "jwks": 1}
    fake.mode = "garbage"
    result = await asyncio.to_thread(run_cli, *online, secret=secret)  # the fake runs on this loop
    assert result.returncode == 1 and "provider corp: unreachable: not JSON" in result.stderr


def test_check_config_warns_when_providers_share_a_subject_namespace(
    tmp_path: Path, secret: str
) -> None:
    providers = """\
        providers:
          - id: corp
            issuer: https://corp.example.com
            client_id: gateway{corp}
          - id: partner
            issuer: https://partner.example.com
            client_id: gateway{partner}
        """
    shared = write(tmp_path, providers.format(corp="", partner=""))
    result = run_cli("check-config", "--config", str(shared), secret=secret)
    assert result.returncode == 0, result.stderr  # a warning, not an error
    assert "warning: login.providers corp, partner map to subjects with the same" in result.stderr
    apart = providers.format(
        corp="\n            subject_prefix: 'corp:'",
        partner="\n            subject_prefix: 'partner:'",
    )
    result = run_cli("check-config", "--config", str(write(tmp_path, apart)), secret=secret)
    assert result.returncode == 0 and "warning" not in result.stderr, result.stderr
    assert load(write(tmp_path, apart)).login.providers[0].subject_prefix == "corp:"
    bad = providers.format(corp="\n            subject_prefix: 'a b'", partner="")
    assert any("subject_prefix: expected 1 to 64" in p for p in problems(write(tmp_path, bad)))
