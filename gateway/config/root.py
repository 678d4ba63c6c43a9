"""The config file (v1) -> frozen, typed objects.

Every section is checked and every problem reported at once, each naming
file, line, column and key: an ops person fixing a bad edit should see the
whole list in one go, and a typo'd key is an error, never silently ignored.
Config code raises ConfigError; only cli.py decides to exit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, get_args

from yarl import URL

from .. import keys
from ..clientaddr import Network
from ..errors import ConfigError, ConfigProblem
from ..routing import RouteTable
from ..yamlsource import Problems, Section, compose
from .cookies import CookiesConfig, read_cookies
from .declare import RESTART, declared, key, read, restart_keys
from .endpoints import UPSTREAM_URL, Listen, overlap, read_listen, read_networks, read_upstream
from .forward_auth import ForwardAuthConfig, read_forward_auth
from .identity import (
    DEFAULT_IDENTITY_HEADERS,
    IDENTITY_HEADERS_SCHEMA,
    AssertionConfig,
    read_assertion,
    read_identity_headers,
)
from .login import LoginConfig, read_login
from .pages import PagesConfig, read_pages
from .providers import subject_warnings
from .routes import Routing, read_routes
from .store import STORE_URL, URL_CREDENTIALS, StorePassword, read_store, read_store_password
from .tokens import TokensConfig, read_tokens

LogLevel = Literal["debug", "info", "warning", "error"]
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """gateway config file (v1). Durations: 500ms, 30s, 15m, 1h, 14d. Secrets come from
    environment variables or files, never from the YAML."""

    MORE_KEYS: ClassVar[tuple[type, ...]] = (StorePassword, Routing)

    source: Path
    text: str  # what `source` held when this config was built
    upstream: URL | None = field(
        default=None,
        metadata=key(
            "The app behind the gateway: scheme://host[:port], no path. Required unless"
            " forward_auth is set (then the outer proxy carries the traffic).",
            required="the URL of the app behind the gateway, like http://127.0.0.1:3000",
            pattern=UPSTREAM_URL,
        ),
    )
    listen: Listen = field(
        default=Listen("0.0.0.0", 8080),  # noqa: S104 - the public listener is meant to be public
        metadata=key("Public listener.", restart=True),
    )
    admin_listen: Listen = field(
        default=Listen("127.0.0.1", 9090),
        metadata=key("Admin listener: /healthz /readyz /metrics, never proxied.", restart=True),
    )
    upstream_timeout: float = field(
        default=60, metadata=key("No upstream answer by then: 504.", minimum=0.001)
    )
    drain_timeout: float = field(
        default=20, metadata=key("On SIGTERM, how long in-flight requests may finish.")
    )
    client_header_timeout: float = field(
        default=10,
        metadata=key(
            "A connection that has not sent a whole request head by then is closed.", minimum=0.001
        ),
    )
    preserve_host: bool = field(
        default=True,
        metadata=key(
            "Forward the client's Host unchanged (true), or send the upstream URL's host:port"
            " (false). X-Forwarded-Host is always the client's."
        ),
    )
    workers: int = field(
        default=1,
        metadata=key(
            "Processes sharing the public port; above 1 needs a redis:// store.",
            minimum=1,
            restart=True,
        ),
    )
    tokens: TokensConfig = field(
        metadata=key(
            "How tokens are signed and verified. HS* needs secret_env or secret_file;"
            " RS256/ES256/EdDSA need private_key_file and/or public_key_files."
        )
    )
    cookies: CookiesConfig = field(
        default_factory=CookiesConfig,
        metadata=key("The two session cookies the gateway sets, reads and clears."),
    )
    store: URL = field(
        default_factory=lambda: URL("memory://"),
        metadata=key(
            "Where sessions live: memory:// (one process), redis://host:6379/0 or rediss://,"
            " redis+sentinel://host:26379[,host:port...]/service[/db],"
            " redis+cluster://host:6379[,host:port...]; no password, no ?options.",
            restart=True,
            pattern=STORE_URL,
            schema={"not": {"pattern": URL_CREDENTIALS}},
        ),
    )
    store_password: keys.Secret | None = field(default=None, metadata=RESTART)
    store_timeout: float = field(
        default=0.5,
        metadata=key(
            "A store call slower than this fails closed (503).", minimum=0.001, restart=True
        ),
    )
    login: LoginConfig = field(
        default_factory=LoginConfig,
        metadata=key("Sign-in, refresh and logout: needs users_file, verify_url or providers."),
    )
    pages: PagesConfig = field(
        default_factory=PagesConfig,
        metadata=key("The gateway's own pages: a name on them, a replacement error template."),
    )
    routes: RouteTable  # from the keys routes and default
    identity_headers: tuple[tuple[str, str], ...] = field(
        default=DEFAULT_IDENTITY_HEADERS,
        metadata=key(
            "Request headers set from the verified token: header name -> claim.",
            schema=IDENTITY_HEADERS_SCHEMA,
        ),
    )
    forward_auth: ForwardAuthConfig | None = field(
        default=None,
        metadata=key(
            "Answer an outer proxy's authorization subrequests (nginx auth_request, Caddy"
            " forward_auth, Traefik ForwardAuth, Envoy ext_authz); needs trusted_proxies."
        ),
    )
    identity_assertion: AssertionConfig | None = field(
        default=None,
        metadata=key(
            "A short-lived JWT signed by the gateway, carrying the identity, sent upstream."
        ),
    )
    trusted_proxies: tuple[Network, ...] = field(
        default=(),
        metadata=key(
            "Addresses or CIDRs (10.0.0.0/8) whose X-Forwarded-For and X-Forwarded-Proto are"
            " believed."
        ),
    )
    log_level: LogLevel = field(default="info", metadata=key("Lowest level logged."))
    files: tuple[Path, ...] = field(default=())  # the config and every file it names: reloads
    warnings: tuple[str, ...] = field(default=())


# what a reload refuses to change (reload.py): the process bound or connected with it at start
RESTART_KEYS = restart_keys(Config)


def load(path: str | Path, text: str | None = None) -> Config:
    """Read and validate a config file. Raises ConfigError with every problem found.

    `text`, when given, is used instead of the file's current content (a worker
    starts from the exact text its supervisor validated); relative paths in it
    still resolve against the file's directory.
    """
    source = Path(path)
    problems = Problems(str(path))
    try:
        if text is None:
            text = source.read_text(encoding="utf-8")
    except OSError as exc:
        problems.add(None, "(file)", f"cannot read the config file: {exc.strerror}")
        problems.raise_if_any()
    except UnicodeDecodeError:
        problems.add(None, "(file)", "the config file is not UTF-8 text")
        problems.raise_if_any()
    assert text is not None  # noqa: S101 - raise_if_any raised otherwise
    node, loader = compose(text, problems)
    problems.raise_if_any()
    top = Section(node, "", problems, loader)
    base = source.resolve().parent
    config = _build(top, base, source, text)
    top.finish()
    problems.raise_if_any()
    if config is None:  # every section built without a problem builds a Config; fail closed anyway
        raise ConfigError([ConfigProblem(str(path), 1, 1, "(config)", "could not be built")])
    return config


def _build(top: Section, base: Path, source: Path, text: str) -> Config | None:
    upstream = None
    if top.has("upstream") or not top.has("forward_auth"):
        upstream = read_upstream(top, declared(Config, "upstream").meta.required or "")
    else:
        top.value_node("upstream")  # forward_auth alone: the outer proxy carries the traffic
    listen = read_listen(top, "listen", declared(Config, "listen").default)
    admin = read_listen(top, "admin_listen", declared(Config, "admin_listen").default)
    if overlap(listen, admin):
        top.error("admin_listen", "must differ from listen: the admin endpoints are never proxied")
    values = read(top, Config)
    tokens = read_tokens(top.section("tokens"), base)
    cookies = read_cookies(top.section("cookies"))
    store = read_store(top, declared(Config, "store").default)
    store_password = read_store_password(top, base)
    if values["workers"] > 1 and store.scheme == "memory":
        top.error(
            "workers",
            f"{values['workers']} processes need a shared store: memory:// lives in one process,"
            " so sessions, logouts and revocations would not be seen by the others; set"
            " store: redis://host:6379/0",
        )
    login = read_login(top.section("login"), base)
    if login.signs_in and tokens and tokens.keys.signing_key is None:
        top.error(
            "login",
            "signing in issues tokens, which needs tokens.private_key_file (public_key_files"
            " alone only verify)",
        )
    pages = read_pages(top.section("pages"), base)
    routes, warnings = read_routes(top)
    warnings += subject_warnings(login.providers, login.verify_url is not None)
    identity = read_identity_headers(top)
    assertion = read_assertion(top, base)
    trusted = read_networks(top, "trusted_proxies")
    forward_auth = read_forward_auth(top, bool(trusted))
    if forward_auth is not None and forward_auth.path in (login.path, login.logout_path):
        top.error("forward_auth", "forward_auth.path must differ from login.path and logout_path")
    if top.problems.items or tokens is None or routes is None:
        return None
    return Config(
        source=source,
        text=text,
        upstream=upstream,
        listen=listen,
        admin_listen=admin,
        tokens=tokens,
        cookies=cookies,
        store=store,
        store_password=store_password,
        login=login,
        pages=pages,
        routes=routes,
        identity_headers=identity,
        identity_assertion=assertion,
        forward_auth=forward_auth,
        trusted_proxies=trusted,
        files=(source, *dict.fromkeys(top.problems.files)),
        warnings=tuple(warnings),
        **values,
    )
