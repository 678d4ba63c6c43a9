"""The config file (v1) -> frozen, typed objects.

Every section is checked and every problem reported at once, each naming
file, line, column and key: an ops person fixing a bad edit should see the
whole list in one go, and a typo'd key is an error, never silently ignored.
Config code raises ConfigError; only cli.py decides to exit.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from yarl import URL

from . import keys
from .clientaddr import Network
from .credentials import UsersFile, load_users
from .errors import ConfigError, ConfigProblem
from .loginpage import check_template
from .routing import (
    AuthMode,
    OnUnauthenticated,
    Route,
    RouteTable,
    compile_pattern,
    default_route,
    methods_with_head,
    shadowing,
)
from .tokens import Verifier
from .yamlsource import Problems, Section, compose

_TOKEN_CHARS = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HEADER_RESERVED = frozenset(
    h.lower()
    for h in (
        "Host", "Cookie", "Set-Cookie", "Authorization", "Content-Length", "Content-Type",
        "Transfer-Encoding", "Connection", "Upgrade", "TE", "Trailer", "Keep-Alive",
        "Proxy-Authorization", "Proxy-Authenticate", "X-Forwarded-For", "X-Forwarded-Proto",
        "X-Forwarded-Host", "X-Request-Id", "Forwarded",
    )
)  # fmt: skip
_AUTH_MODES = ("required", "optional", "public", "deny")
_ON_UNAUTH = ("auto", "redirect", "status")
_SAME_SITE = ("lax", "strict", "none")
LOG_LEVELS = ("debug", "info", "warning", "error")
_HTTP_METHODS = frozenset(
    (
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
        "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "REPORT", "SEARCH",
    )
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class TokensConfig:
    keys: keys.KeySet
    issuer: str = "gateway"
    audience: str = "upstream"
    access_ttl: float = 15 * 60
    refresh_ttl: float = 14 * 86400
    leeway: float = 30
    refresh_reuse_grace: float = 10

    def verifier(self) -> Verifier:
        return Verifier(self.keys, issuer=self.issuer, audience=self.audience, leeway=self.leeway)


@dataclass(frozen=True, slots=True, kw_only=True)
class CookiesConfig:
    access: str = "access_token"
    refresh: str = "refresh_token"
    secure: bool = True
    same_site: Literal["lax", "strict", "none"] = "lax"
    path: str = "/"
    domain: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginConfig:
    path: str = "/login"
    logout_path: str = "/logout"
    users_file: Path | None = None
    users: UsersFile | None = None  # the parsed users_file
    verify_url: URL | None = None
    verify_timeout: float = 5
    template: Path | None = None
    max_failures: int = 5
    failure_window: float = 15 * 60


@dataclass(frozen=True, slots=True, kw_only=True)
class AssertionConfig:
    header: str = "X-User-Assertion"
    private_key_file: Path
    private_key: Any  # loaded: an EC P-256 (ES256) or Ed25519 (EdDSA) private key
    algorithm: Literal["ES256", "EdDSA"]
    ttl: float = 30
    previous_public_keys: tuple[Any, ...] = ()  # still published in the JWKS during a rotation


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    source: Path
    text: str  # what `source` held when this config was built
    upstream: URL
    listen: Listen = Listen("0.0.0.0", 8080)  # noqa: S104 - the public listener is meant to be public
    admin_listen: Listen = Listen("127.0.0.1", 9090)
    upstream_timeout: float = 60
    drain_timeout: float = 20
    client_header_timeout: float = 10
    preserve_host: bool = True
    workers: int = 1
    tokens: TokensConfig
    cookies: CookiesConfig = field(default_factory=CookiesConfig)
    store: URL = field(default_factory=lambda: URL("memory://"))
    store_password: keys.Secret | None = None
    store_timeout: float = 0.5
    login: LoginConfig = field(default_factory=LoginConfig)
    routes: RouteTable
    identity_headers: tuple[tuple[str, str], ...] = ()
    identity_assertion: AssertionConfig | None = None
    trusted_proxies: tuple[Network, ...] = ()
    log_level: str = "info"
    files: tuple[Path, ...] = ()  # the config file and every file it names: what reload watches
    warnings: tuple[str, ...] = ()


DEFAULT_IDENTITY_HEADERS = (
    ("X-User-Id", "sub"),
    ("X-User-Email", "email"),
    ("X-User-Name", "name"),
    ("X-User-Roles", "roles"),
)


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
    upstream = _upstream(top)
    listen = _listen(top, "listen", Listen("0.0.0.0", 8080))  # noqa: S104
    admin = _listen(top, "admin_listen", Listen("127.0.0.1", 9090))
    if _overlap(listen, admin):
        top.error("admin_listen", "must differ from listen: the admin endpoints are never proxied")
    upstream_timeout = top.duration("upstream_timeout", 60, minimum=0.001)
    drain_timeout = top.duration("drain_timeout", 20)
    client_header_timeout = top.duration("client_header_timeout", 10, minimum=0.001)
    preserve_host = top.flag("preserve_host", True)
    workers = top.integer("workers", 1, minimum=1)
    tokens = _tokens(top.section("tokens"), base)
    cookies = _cookies(top.section("cookies"))
    store = _store(top)
    store_password = _store_password(top, base)
    store_timeout = top.duration("store_timeout", 0.5, minimum=0.001)
    if workers > 1 and store.scheme == "memory":
        top.error(
            "workers",
            f"{workers} processes need a shared store: memory:// lives in one process, so"
            " sessions, logouts and revocations would not be seen by the others; set"
            " store: redis://host:6379/0",
        )
    login = _login(top.section("login"), base)
    if (login.users_file or login.verify_url) and tokens and tokens.keys.signing_key is None:
        top.error(
            "login",
            "signing in issues tokens, which needs tokens.private_key_file (public_key_files"
            " alone only verify)",
        )
    routes, warnings = _routes(top)
    identity = _identity_headers(top)
    assertion = _assertion(top, base)
    trusted = _trusted_proxies(top)
    log_level = top.choice("log_level", LOG_LEVELS, "info")
    if top.problems.items or upstream is None or tokens is None or routes is None:
        return None
    return Config(
        source=source,
        text=text,
        upstream=upstream,
        listen=listen,
        admin_listen=admin,
        upstream_timeout=upstream_timeout,
        drain_timeout=drain_timeout,
        client_header_timeout=client_header_timeout,
        preserve_host=preserve_host,
        workers=workers,
        tokens=tokens,
        cookies=cookies,
        store=store,
        store_password=store_password,
        store_timeout=store_timeout,
        login=login,
        routes=routes,
        identity_headers=identity,
        identity_assertion=assertion,
        trusted_proxies=trusted,
        log_level=log_level,
        files=(source, *dict.fromkeys(top.problems.files)),
        warnings=tuple(warnings),
    )


def _upstream(top: Section) -> URL | None:
    if not top.required(
        "upstream", "the URL of the app behind the gateway, like http://127.0.0.1:3000"
    ):
        return None
    text = top.text("upstream")
    url = _url(text)
    if url is None or url.scheme not in ("http", "https") or not url.host:
        top.error("upstream", f"expected an http:// or https:// URL, got {_shown(text)!r}")
        return None
    if url.path not in ("", "/") or url.query_string or url.fragment or url.user:
        top.error("upstream", "expected scheme://host[:port] only, without path, query or user")
        return None
    return url.with_path("")


def _shown(text: str | None) -> str:
    """A URL as an error message may repeat it: user and password never (they end up in logs)."""
    return re.sub(r"(?<=//)[^/@\s]*@", "***@", text or "")


def _url(text: str | None) -> URL | None:
    """None for text that does not parse as a URL (yarl raises on things like 'http://[::1')."""
    try:
        return URL(text) if text else None
    except ValueError:
        return None


def _listen(top: Section, key: str, default: Listen) -> Listen:
    text = top.text(key, str(default))
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]+):(\d+)", text)
    port = int(m.group(2) or m.group(4)) if m else -1
    if m is None or not 0 <= port < 65536:
        top.error(key, f"expected host:port like 0.0.0.0:8080 or [::1]:8080, got {text!r}")
        return default
    return Listen(m.group(1) or m.group(3), port)


def _overlap(a: Listen, b: Listen) -> bool:
    """Two listeners that would bind the same port (port 0 always gets a fresh one)."""
    wildcard = {"0.0.0.0", "::", ""}  # noqa: S104
    same_host = a.host == b.host or a.host in wildcard or b.host in wildcard
    return a.port == b.port != 0 and same_host


def _tokens(sec: Section, base: Path) -> TokensConfig | None:
    algorithm = sec.choice("algorithm", keys.ALGORITHMS, "HS256")
    key_set = _key_set(sec, base, algorithm)
    access_ttl = sec.duration("access_ttl", 15 * 60, minimum=1)
    refresh_ttl = sec.duration("refresh_ttl", 14 * 86400, minimum=1)
    if refresh_ttl <= access_ttl:
        key = "refresh_ttl" if sec.has("refresh_ttl") else "access_ttl"
        sec.error(key, "refresh_ttl must be longer than access_ttl")
    result = TokensConfig(
        keys=key_set or keys.KeySet(algorithm="HS256", signing_key=None, verification_keys=()),
        issuer=sec.text("issuer", "gateway"),
        audience=sec.text("audience", "upstream"),
        access_ttl=access_ttl,
        refresh_ttl=refresh_ttl,
        leeway=sec.duration("leeway", 30),
        refresh_reuse_grace=sec.duration("refresh_reuse_grace", 10),
    )
    sec.finish()
    return result if key_set else None


def _key_set(sec: Section, base: Path, algorithm: str) -> keys.KeySet | None:
    kid = sec.opt_text("kid")
    current = _current_keys(sec, base, algorithm)
    previous = _previous_keys(sec, base, algorithm, kid)
    if current is None or previous is None:
        return None
    signing, verifiers = current
    alg = cast(keys.Algorithm, algorithm)
    own = [keys.VerificationKey(k, alg, kid if i == 0 and signing else None)
           for i, k in enumerate(verifiers)]  # fmt: skip
    return keys.KeySet(
        algorithm=alg, signing_key=signing, verification_keys=(*own, *previous), kid=kid
    )


def _previous_keys(
    sec: Section, base: Path, algorithm: str, current_kid: str | None
) -> list[keys.VerificationKey] | None:
    """Keys that only verify, while tokens signed with them are still out there."""
    result: list[keys.VerificationKey] = []
    seen = {current_kid}
    ok = True
    for item in sec.sections("previous_keys"):
        kid = item.text("kid") if item.required("kid", "the key id in those tokens' header") else ""
        if kid and kid in seen:
            item.error("kid", f"kid {kid!r} is already used by another key")
        seen.add(kid)
        alg = item.choice("algorithm", keys.ALGORITHMS, algorithm)
        loaded = _one_key(item, base, alg)
        item.finish()
        if loaded is None or not kid:
            ok = False
            continue
        result.append(keys.VerificationKey(loaded, cast(keys.Algorithm, alg), kid))
    return result if ok else None


def _one_key(sec: Section, base: Path, algorithm: str) -> Any:
    """A previous key: an HMAC secret, or the public half of an asymmetric one."""
    hmac = algorithm.startswith("HS")
    allowed = ("secret_env", "secret_file") if hmac else ("public_key_file",)
    for name in ("secret_env", "secret_file", "public_key_file"):
        value = sec.opt_text(name)
        if value and name not in allowed:
            sec.error(name, f"{algorithm} uses {' or '.join(allowed)}, not {name}")
    given = [n for n in allowed if sec.has(n)]
    if len(given) != 1:
        sec.error(allowed[0], f"{algorithm} needs exactly one of {' or '.join(allowed)}")
        return None
    name = given[0]
    value = sec.text(name)
    try:
        if name == "secret_env":
            return keys.secret_from_env(value, algorithm)
        if name == "secret_file":
            return keys.secret_from_file(sec.problems.uses(base / value), algorithm)
        return keys.public_key(sec.problems.uses(base / value), algorithm)
    except keys.KeyProblem as exc:
        sec.error(name, str(exc))
        return None


def _current_keys(sec: Section, base: Path, algorithm: str) -> tuple[Any, list[Any]] | None:
    """The signing key (None: verify only) and the keys that verify with it."""
    names = ("secret_env", "secret_file", "private_key_file", "public_key_files")
    given = [n for n in names if sec.has(n)]
    secret_env, secret_file = sec.opt_text("secret_env"), sec.opt_text("secret_file")
    private_file, public_files = sec.opt_text("private_key_file"), sec.text_list("public_key_files")
    if algorithm.startswith("HS"):
        wrong = [n for n in given if n not in ("secret_env", "secret_file")]
        for n in wrong:
            sec.error(n, f"{algorithm} uses secret_env or secret_file, not {n}")
        if len([n for n in given if n in ("secret_env", "secret_file")]) != 1:
            sec.error("secret_env", f"{algorithm} needs exactly one of secret_env or secret_file")
            return None
        try:
            secret = (
                keys.secret_from_env(secret_env, algorithm)
                if secret_env
                else keys.secret_from_file(sec.problems.uses(base / str(secret_file)), algorithm)
            )
        except keys.KeyProblem as exc:
            sec.error("secret_env" if secret_env else "secret_file", str(exc))
            return None
        return secret, [secret]
    for n in ("secret_env", "secret_file"):
        if n in given:
            sec.error(n, f"{algorithm} uses private_key_file and/or public_key_files, not {n}")
    if private_file is None and not public_files:
        sec.error("private_key_file", f"{algorithm} needs private_key_file or public_key_files")
        return None
    ok = True
    signing: Any = None
    verifiers: list[Any] = []
    if private_file:
        try:
            signing = keys.private_key(sec.problems.uses(base / private_file), algorithm)
            verifiers.append(signing.public_key())
        except keys.KeyProblem as exc:
            sec.error("private_key_file", str(exc))
            ok = False
    for item in public_files or ():
        try:
            verifiers.append(keys.public_key(sec.problems.uses(base / item), algorithm))
        except keys.KeyProblem as exc:
            sec.error("public_key_files", str(exc))
            ok = False
    if not ok:
        return None
    return signing, verifiers


def _cookies(sec: Section) -> CookiesConfig:
    names = {}
    for key, default in (("access", "access_token"), ("refresh", "refresh_token")):
        name = sec.text(key, default)
        if not _TOKEN_CHARS.match(name):
            sec.error(key, f"{name!r} is not a valid cookie name")
        names[key] = name
    if names["access"] == names["refresh"]:
        sec.error("refresh", "must differ from cookies.access")
    secure = sec.flag("secure", True)
    same_site = sec.choice("same_site", _SAME_SITE, "lax")
    if same_site == "none" and not secure:
        sec.error("same_site", "same_site: none needs secure: true (browsers drop it otherwise)")
    path = sec.text("path", "/")
    if not path.startswith("/"):
        sec.error("path", "expected a path starting with '/'")
    domain = sec.opt_text("domain")
    for key in ("access", "refresh"):
        # browsers silently drop a prefixed cookie whose attributes break the prefix's rules
        name = names[key]
        if name.startswith(("__Host-", "__Secure-")) and not secure:
            sec.error(key, f"a {name.split('-')[0]}- cookie needs secure: true")
        if name.startswith("__Host-") and (path != "/" or domain):
            sec.error(key, "a __Host- cookie needs path: / and no domain")
    result = CookiesConfig(
        access=names["access"],
        refresh=names["refresh"],
        secure=secure,
        same_site=cast(Literal["lax", "strict", "none"], same_site),
        path=path,
        domain=domain,
    )
    sec.finish()
    return result


def _store(top: Section) -> URL:
    text = top.text("store", "memory://")
    url = _url(text)
    if url is None or url.scheme not in ("memory", "redis", "rediss"):
        top.error(
            "store",
            f"expected memory://, redis://host:port/db or rediss://..., got {_shown(text)!r}",
        )
        return URL("memory://")
    if url.password:
        top.error(
            "store",
            "a password never goes in the YAML: name it with store_password_env or"
            " store_password_file",
        )
    if url.query_string:
        # redis-py lets URL options override everything, store_timeout and password included
        top.error("store", "expected no ?options in the store URL; each has its own config key")
    return url


def _trusted_proxies(top: Section) -> tuple[Network, ...]:
    networks = []
    for item in top.text_list("trusted_proxies") or ():
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            top.error(
                "trusted_proxies", f"expected an address or CIDR like 10.0.0.0/8, got {item!r}"
            )
    return tuple(networks)


def _store_password(top: Section, base: Path) -> keys.Secret | None:
    env, file = top.opt_text("store_password_env"), top.opt_text("store_password_file")
    if env and file:
        top.error("store_password_file", "use store_password_env or store_password_file, not both")
        return None
    try:
        if env:
            return keys.plain_secret_from_env(env)
        if file:
            return keys.plain_secret_from_file(top.problems.uses(base / file))
    except keys.KeyProblem as exc:
        top.error("store_password_env" if env else "store_password_file", str(exc))
    return None


def _login(sec: Section, base: Path) -> LoginConfig:
    path = sec.text("path", "/login")
    logout_path = sec.text("logout_path", "/logout")
    for key, value in (("path", path), ("logout_path", logout_path)):
        if not value.startswith("/") or "?" in value or "#" in value:
            sec.error(key, "expected a path starting with '/', without query")
    if path == logout_path:
        sec.error("logout_path", "must differ from login.path")
    users_file, template = sec.opt_text("users_file"), sec.opt_text("template")
    verify_text = sec.opt_text("verify_url")
    if users_file and verify_text:
        sec.error("verify_url", "use users_file or verify_url, not both")
    verify_url = _url(verify_text)
    bad_verify = (
        verify_url is None or verify_url.scheme not in ("http", "https") or not verify_url.host
    )
    if verify_text and bad_verify:
        sec.error("verify_url", f"expected an http:// or https:// URL, got {_shown(verify_text)!r}")
    elif verify_url is not None and verify_url.password:
        sec.error("verify_url", "a password never goes in the YAML; the URL must not carry one")
    files: dict[str, Path | None] = {}
    for key, name in (("users_file", users_file), ("template", template)):
        files[key] = sec.problems.uses(base / name) if name else None
        if name and not (base / name).is_file():
            sec.error(key, f"file not found: {base / name}")
            files[key] = None
    users = None
    if files["users_file"] is not None:
        users, users_problems = load_users(files["users_file"])
        sec.problems.items.extend(users_problems)
    if files["template"] is not None:
        sec.problems.items.extend(check_template(files["template"]))
    result = LoginConfig(
        path=path,
        logout_path=logout_path,
        users_file=files["users_file"],
        users=users,
        verify_url=verify_url,
        verify_timeout=sec.duration("verify_timeout", 5, minimum=0.001),
        template=files["template"],
        max_failures=sec.integer("max_failures", 5, minimum=1),
        failure_window=sec.duration("failure_window", 15 * 60, minimum=1),
    )
    sec.finish()
    return result


def _routes(top: Section) -> tuple[RouteTable | None, list[str]]:
    default = cast(AuthMode, top.choice("default", _AUTH_MODES, "required"))
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
    path, regex = sec.opt_text("path"), sec.opt_text("regex")
    compiled: re.Pattern[str] | None = None
    if (path is None) == (regex is None):
        sec.error("path", "each route needs exactly one of path or regex")
    else:
        try:
            compiled = compile_pattern(path) if path is not None else re.compile(str(regex), re.I)
        except (ValueError, re.error) as exc:
            sec.error("path" if path is not None else "regex", str(exc))
    methods = sec.text_list("methods")
    if methods == []:
        sec.error("methods", "an empty list would never match; leave methods out to match all")
    for m in methods or ():
        if m.upper() not in _HTTP_METHODS:
            sec.error("methods", f"unknown HTTP method {m!r}")
    auth = sec.choice("auth", _AUTH_MODES, "required")
    roles = sec.text_list("roles")
    if roles is not None and auth != "required":
        sec.error("roles", f"roles need auth: required (this route is auth: {auth})")
    on_unauth = sec.choice("on_unauthenticated", _ON_UNAUTH, "auto")
    if sec.has("on_unauthenticated") and auth in ("public", "deny"):
        sec.error("on_unauthenticated", f"does not apply to auth: {auth}")
    if compiled is None:
        return None
    return Route(
        index=index,
        source=str(path if path is not None else regex),
        line=line,
        regex=compiled,
        is_regex=regex is not None,
        methods=methods_with_head(methods),
        auth=cast(AuthMode, auth),
        roles=frozenset(roles or ()),
        on_unauthenticated=cast(OnUnauthenticated, on_unauth),
    )


def _identity_headers(top: Section) -> tuple[tuple[str, str], ...]:
    if not top.has("identity_headers"):
        top.value_node("identity_headers")
        return DEFAULT_IDENTITY_HEADERS
    sec = top.section("identity_headers")
    result: list[tuple[str, str]] = []
    for header, _, value_node in sec.entries():
        claim = sec.plain(value_node)
        if header.lower() in {h.lower() for h, _ in result}:
            sec.error(header, "the same header twice (header names ignore case)")
        elif not _TOKEN_CHARS.match(header):
            sec.error(header, "not a valid header name")
        elif header.lower() in _HEADER_RESERVED:
            sec.error(header, "this header is managed by the gateway or the HTTP layer")
        elif not isinstance(claim, str) or not claim:
            sec.error(header, f"expected the name of a claim, like sub or email, got {claim!r}")
        else:
            result.append((header, claim))
    return tuple(result)


def _assertion(top: Section, base: Path) -> AssertionConfig | None:
    if not top.has("identity_assertion"):
        top.value_node("identity_assertion")
        return None
    sec = top.section("identity_assertion")
    header = sec.text("header", "X-User-Assertion")
    if not _TOKEN_CHARS.match(header) or header.lower() in _HEADER_RESERVED:
        sec.error("header", f"{header!r} cannot be used as the assertion header")
    key_file = (
        sec.text("private_key_file")
        if sec.required("private_key_file", "a PEM file with a P-256 EC or Ed25519 private key")
        else ""
    )
    ttl = sec.duration("ttl", 30, minimum=1)
    previous = []
    for item in sec.text_list("previous_public_key_files") or ():
        try:
            previous.append(keys.assertion_key(sec.problems.uses(base / item), private=False)[0])
        except keys.KeyProblem as exc:
            sec.error("previous_public_key_files", str(exc))
    sec.finish()
    if not key_file:
        return None
    try:
        key, algorithm = keys.assertion_key(sec.problems.uses(base / key_file), private=True)
    except keys.KeyProblem as exc:
        sec.error("private_key_file", str(exc))
        return None
    return AssertionConfig(
        header=header,
        private_key_file=base / key_file,
        private_key=key,
        algorithm=algorithm,
        ttl=ttl,
        previous_public_keys=tuple(previous),
    )
