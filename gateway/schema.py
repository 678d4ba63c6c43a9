"""A JSON Schema of the config file, for editors (`gateway schema`).

Draft-07, the newest draft the VS Code YAML extension (yaml-language-server)
supports fully. It mirrors config.py: the same keys (an unknown one is
flagged, like `gateway check-config` does), defaults, choices and value
shapes, and the cross-key rules that are cheap to state. It is a typing aid:
config.py stays the judge (secrets, files, key kinds, minimum durations),
and tests/test_schema.py keeps the two in step.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

ALGORITHMS = ("HS256", "HS384", "HS512", "RS256", "ES256", "EdDSA")
AUTH_MODES = ("required", "optional", "public", "deny")
ON_UNAUTHENTICATED = ("auto", "redirect", "status")
SAME_SITE = ("lax", "strict", "none")
LOG_LEVELS = ("debug", "info", "warning", "error")
HTTP_METHODS = (
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
    "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "REPORT", "SEARCH",
)  # fmt: skip

# yamlsource.parse_duration: a number, then one unit; no bare numbers, no 1h30m
DURATION = r"^\s*[0-9]+(\.[0-9]+)?\s*(ms|s|m|h|d)\s*$"
# config._listen: host:port or [IPv6]:port, port 0-65535
_PORT = r"0*([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
LISTEN = rf"^(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):{_PORT}$"
HTTP_URL = r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\s]+"
UPSTREAM_URL = r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#@\s]+/?$"  # no path, query or user
STORE_URL = r"^([Mm][Ee][Mm][Oo][Rr][Yy]|[Rr][Ee][Dd][Ii][Ss][Ss]?):(//)?[^?]*$"
URL_CREDENTIALS = r"^[^/]*//[^/@]*:[^/@]*@"  # scheme://user:password@...
HTTP_NAME = r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$"  # an HTTP token: cookie and header names


def _text(description: str, default: str | None = None, **extra: Any) -> Schema:
    schema: Schema = {"type": "string", "minLength": 1, "description": description, **extra}
    if default is not None:
        schema["default"] = default
    return schema


def _duration(description: str, default: str) -> Schema:
    return _text(f"{description} Duration: 500ms, 30s, 15m, 1h, 14d.", default, pattern=DURATION)


def _listen(description: str, default: str) -> Schema:
    return _text(
        f"{description} host:port or [IPv6]:port. Restart to change.", default, pattern=LISTEN
    )


def _enum(description: str, options: tuple[str, ...], default: str | None) -> Schema:
    schema: Schema = {"type": "string", "enum": list(options), "description": description}
    if default is not None:
        schema["default"] = default
    return schema


def _texts(description: str, **extra: Any) -> Schema:
    items = {"type": "string", "minLength": 1}
    return {"type": "array", "items": items, "description": description, **extra}


def _object(
    description: str, properties: dict[str, Schema], *, null: bool = True, **extra: Any
) -> Schema:
    """A section; `null: True` when an empty section (`cookies:`) is fine."""
    kind: Any = ["object", "null"] if null else "object"
    return {
        "type": kind,
        "description": description,
        "properties": properties,
        "additionalProperties": False,
        **extra,
    }


def _required(*names: str) -> Schema:
    return {"required": list(names)}


def _none_of(*names: str) -> Schema:
    return {"not": {"anyOf": [_required(n) for n in names]}}


def _none_of_both(a: str, b: str) -> Schema:
    return {"not": {"type": "object", **_required(a, b)}}  # null is fine too


def _ci_pattern(words: tuple[str, ...]) -> str:
    """`^(GET|...)$` ignoring case, which JSON Schema patterns cannot flag."""

    def ci(word: str) -> str:
        return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)

    return "^(" + "|".join(ci(w) for w in words) + ")$"


def _tokens() -> Schema:
    hmac = {"properties": {"algorithm": {"pattern": "^HS"}}}  # also true when left out: HS256
    previous = _object(
        "A key that only verifies tokens signed before a rotation (not for signing).",
        {
            "kid": _text("The kid in the header of the tokens this key signed. Required."),
            "algorithm": _enum(
                "This key's algorithm (default: tokens.algorithm).", ALGORITHMS, None
            ),
            "secret_env": _text("HS*: environment variable holding the old secret."),
            "secret_file": _text("HS*: file holding the old secret."),
            "public_key_file": _text("RS256/ES256/EdDSA: PEM public key of the old key pair."),
        },
        null=False,
        required=["kid"],
        oneOf=[_required("secret_env"), _required("secret_file"), _required("public_key_file")],
        allOf=[
            {"if": {**hmac, **_required("algorithm")}, "then": _none_of("public_key_file")},
            {
                "if": {
                    "properties": {"algorithm": {"not": {"pattern": "^HS"}}},
                    **_required("algorithm"),
                },
                "then": _none_of("secret_env", "secret_file"),
            },
        ],
    )
    return _object(
        "How tokens are signed and verified. HS* needs secret_env or secret_file;"
        " RS256/ES256/EdDSA need private_key_file and/or public_key_files.",
        {
            "algorithm": _enum("The one algorithm accepted (case matters).", ALGORITHMS, "HS256"),
            "secret_env": _text(
                "HS*: environment variable holding the secret (32/48/64+ bytes for HS256/384/512)."
            ),
            "secret_file": _text(
                "HS*: file holding the secret (relative: to the config's directory)."
            ),
            "private_key_file": _text(
                "RS256/ES256/EdDSA: unencrypted PEM private key; needed to sign in."
            ),
            "public_key_files": _texts("RS256/ES256/EdDSA: PEM public keys that also verify."),
            "kid": _text("Key id written in the header of tokens signed from now on."),
            "previous_keys": {
                "type": "array",
                "items": previous,
                "description": "Keys still accepted for verification during"
                " a rotation; remove one (and reload) to retire it.",
            },
            "issuer": _text("The iss claim; tokens must carry exactly this.", "gateway"),
            "audience": _text("The aud claim; tokens must carry (or list) this.", "upstream"),
            "access_ttl": _duration("Lifetime of an access token and its cookie; >= 1s.", "15m"),
            "refresh_ttl": _duration(
                "Idle lifetime of a sign-in, renewed at each refresh; longer than access_ttl.",
                "14d",
            ),
            "leeway": _duration("Clock-skew allowance for exp, nbf and iat.", "30s"),
            "refresh_reuse_grace": _duration(
                "How long the refresh token just replaced still works (parallel requests).", "10s"
            ),
        },
        null=False,
        **{
            "if": hmac,
            "then": {
                "oneOf": [_required("secret_env"), _required("secret_file")],
                **_none_of("private_key_file", "public_key_files"),
            },
            "else": {
                "anyOf": [_required("private_key_file"), _required("public_key_files")],
                **_none_of("secret_env", "secret_file"),
            },
        },
    )


def _cookies() -> Schema:
    return _object(
        "The two session cookies the gateway sets, reads and clears.",
        {
            "access": _text("Name of the access-token cookie.", "access_token", pattern=HTTP_NAME),
            "refresh": _text(
                "Name of the refresh-token cookie; differs from access.",
                "refresh_token",
                pattern=HTTP_NAME,
            ),
            "secure": {
                "type": "boolean",
                "default": True,
                "description": "Send the cookies over HTTPS only; false for plain-http"
                " local development only.",
            },
            "same_site": _enum("SameSite attribute; none needs secure: true.", SAME_SITE, "lax"),
            "path": _text("Path attribute; starts with /.", "/", pattern="^/"),
            "domain": _text("Domain attribute; leave out for host-only cookies."),
        },
    )


def _login() -> Schema:
    path = "^/[^?#]*$"
    return _object(
        "Sign-in, refresh and logout: needs users_file or verify_url.",
        {
            "path": _text("The login page and form target.", "/login", pattern=path),
            "logout_path": _text(
                "Logout (POST, or a same-site GET); differs from path.", "/logout", pattern=path
            ),
            "users_file": _text(
                "YAML users file (argon2id/bcrypt hashes); relative: to the config's directory."
            ),
            "verify_url": _text(
                "Legacy app URL that checks a username and password"
                " (POST JSON); http:// or https://.",
                pattern=HTTP_URL,
            ),
            "verify_timeout": _duration("The most a verify_url call may take.", "5s"),
            "template": _text("Jinja2 template replacing the built-in login page."),
            "max_failures": {
                "type": "integer",
                "minimum": 1,
                "default": 5,
                "description": "Failed sign-ins per username and client within"
                " failure_window before 429.",
            },
            "failure_window": _duration("The window failures are counted in; >= 1s.", "15m"),
        },
        **_none_of_both("users_file", "verify_url"),
    )


def _route() -> Schema:
    def auth_in(*modes: str) -> Schema:
        return {"properties": {"auth": {"enum": list(modes)}}, **_required("auth")}

    methods = {"anyOf": [{"enum": list(HTTP_METHODS)}, {"pattern": _ci_pattern(HTTP_METHODS)}]}
    return _object(
        "A rule: exactly one of path or regex; the first route that matches decides.",
        {
            "path": _text(
                "Next.js matcher pattern: /dashboard/:path*, /users/:id, /docs/:p+.", pattern="^/"
            ),
            "regex": _text("Python regular expression, searched in the path, ignoring case."),
            "methods": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string", **methods},
                "description": "Only these methods match (GET implies HEAD); leave out for all.",
            },
            "auth": _enum(
                "required: a valid token; optional: identity if any; public: no check; deny: 403.",
                AUTH_MODES,
                "required",
            ),
            "roles": _texts("Any of these roles, else 403; only with auth: required."),
            "on_unauthenticated": _enum(
                "auto: browsers redirected, others 401; redirect; status (401 JSON).",
                ON_UNAUTHENTICATED,
                "auto",
            ),
        },
        null=False,
        oneOf=[_required("path"), _required("regex")],
        allOf=[
            {"if": auth_in("optional", "public", "deny"), "then": _none_of("roles")},
            {"if": auth_in("public", "deny"), "then": _none_of("on_unauthenticated")},
        ],
    )


def _assertion() -> Schema:
    return _object(
        "A short-lived JWT signed by the gateway, carrying the identity, sent upstream.",
        {
            "header": _text(
                "Request header carrying the assertion.", "X-User-Assertion", pattern=HTTP_NAME
            ),
            "private_key_file": _text(
                "PEM private key: EC P-256 (ES256) or Ed25519 (EdDSA). Required."
            ),
            "ttl": _duration("Lifetime of an assertion; >= 1s.", "30s"),
            "previous_public_key_files": _texts(
                "Old public keys still published in the JWKS during a rotation."
            ),
        },
        null=False,
        required=["private_key_file"],
    )


def config_schema() -> Schema:
    """The JSON Schema (draft-07) of the config file, as a JSON-ready dict."""
    identity = {
        "type": ["object", "null"],
        "description": "Request headers set from the verified token: header name -> claim."
        " Default: X-User-Id: sub, X-User-Email: email, X-User-Name: name, X-User-Roles: roles.",
        "propertyNames": {"pattern": HTTP_NAME},
        "additionalProperties": {
            "type": "string",
            "minLength": 1,
            "description": "The claim to send (lists joined with ,).",
        },
        "default": {
            "X-User-Id": "sub",
            "X-User-Email": "email",
            "X-User-Name": "name",
            "X-User-Roles": "roles",
        },
    }
    schema: Schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "gateway config",
    }
    return schema | _object(
        "gateway config file (v1). Durations: 500ms, 30s, 15m, 1h, 14d. Secrets come from"
        " environment variables or files, never from the YAML.",
        {
            "listen": _listen("Public listener.", "0.0.0.0:8080"),
            "admin_listen": _listen(
                "Admin listener: /healthz /readyz /metrics, never proxied.", "127.0.0.1:9090"
            ),
            "upstream": _text(
                "The app behind the gateway: scheme://host[:port], no path. Required.",
                pattern=UPSTREAM_URL,
            ),
            "upstream_timeout": _duration("No upstream answer by then: 504.", "60s"),
            "drain_timeout": _duration(
                "On SIGTERM, how long in-flight requests may finish.", "20s"
            ),
            "client_header_timeout": _duration(
                "A connection that has not sent a whole request head by then is closed.", "10s"
            ),
            "preserve_host": {
                "type": "boolean",
                "default": True,
                "description": "Forward the client's Host unchanged (true), or send the"
                " upstream URL's host:port (false). X-Forwarded-Host is always the client's.",
            },
            "workers": {
                "type": "integer",
                "minimum": 1,
                "default": 1,
                "description": "Processes sharing the public port; above 1 needs a"
                " redis:// store. Restart to change.",
            },
            "log_level": _enum("Lowest level logged.", LOG_LEVELS, "info"),
            "tokens": _tokens(),
            "cookies": _cookies(),
            "store": _text(
                "Where sessions live: memory:// (one process), redis://host:6379/0"
                " or rediss://; no password, no ?options. Restart to change.",
                "memory://",
                pattern=STORE_URL,
                **{"not": {"pattern": URL_CREDENTIALS}},
            ),
            "store_password_env": _text(
                "Environment variable holding the Redis password. Restart to change."
            ),
            "store_password_file": _text("File holding the Redis password. Restart to change."),
            "store_timeout": _duration(
                "A store call slower than this fails closed (503). Restart to change.", "500ms"
            ),
            "trusted_proxies": _texts(
                "Addresses or CIDRs (10.0.0.0/8) whose X-Forwarded-For"
                " and X-Forwarded-Proto are believed."
            ),
            "login": _login(),
            "routes": {
                "type": ["array", "null"],
                "items": _route(),
                "description": "Ordered rules; the first match wins, else default.",
            },
            "default": _enum(
                "Auth mode of a request no route matches (fail closed).", AUTH_MODES, "required"
            ),
            "identity_headers": identity,
            "identity_assertion": _assertion(),
        },
        null=False,
        required=["upstream", "tokens"],
        **_none_of_both("store_password_env", "store_password_file"),
    )
