"""A JSON Schema of the config file, for editors (`gateway schema`).

Draft-07, the newest draft the VS Code YAML extension (yaml-language-server)
supports fully. It is generated from the config's own declarations
(config/declare.py): every key is a dataclass field whose type gives the
value's shape and choices, whose default is the default and whose metadata
gives the description, minimum and pattern. What no single field can say, the
rules between keys, is written out below in RULES. It is a typing aid: the
config package stays the judge (secrets, files, key kinds, minimum
durations), and tests/test_schema.py keeps the two in step.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, TypeGuard

from yarl import URL

from .config import Config, LoginConfig
from .config.declare import DURATION, MISSING, Key, choices, item_type, section_keys
from .config.endpoints import LISTEN, Listen, url_text
from .config.providers import ProviderConfig
from .config.routes import RouteRule
from .config.tokens import PreviousKey, TokensConfig

__all__ = ["DURATION", "config_schema"]

Schema = dict[str, Any]

_UNITS = (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 0.001))


def _required(*names: str) -> Schema:
    return {"required": list(names)}


def _none_of(*names: str) -> Schema:
    return {"not": {"anyOf": [_required(n) for n in names]}}


def _none_of_both(a: str, b: str) -> Schema:
    return {"not": {"type": "object", **_required(a, b)}}  # null is fine too


def _auth_in(*modes: str) -> Schema:
    return {"properties": {"auth": {"enum": list(modes)}}, **_required("auth")}


_HMAC: Schema = {"properties": {"algorithm": {"pattern": "^HS"}}}  # also true left out: HS256

# The rules between keys of a section, which no single field declares.
RULES: dict[type, Schema] = {
    Config: {
        **_none_of_both("store_password_env", "store_password_file"),
        "anyOf": [_required("upstream"), _required("forward_auth")],
    },
    TokensConfig: {
        "if": _HMAC,
        "then": {
            "oneOf": [_required("secret_env"), _required("secret_file")],
            **_none_of("private_key_file", "public_key_files"),
        },
        "else": {
            "anyOf": [_required("private_key_file"), _required("public_key_files")],
            **_none_of("secret_env", "secret_file"),
        },
    },
    PreviousKey: {
        "oneOf": [_required("secret_env"), _required("secret_file"), _required("public_key_file")],
        "allOf": [
            {"if": {**_HMAC, **_required("algorithm")}, "then": _none_of("public_key_file")},
            {
                "if": {
                    "properties": {"algorithm": {"not": {"pattern": "^HS"}}},
                    **_required("algorithm"),
                },
                "then": _none_of("secret_env", "secret_file"),
            },
        ],
    },
    LoginConfig: _none_of_both("users_file", "verify_url"),
    ProviderConfig: _none_of_both("client_secret_env", "client_secret_file"),
    RouteRule: {
        "oneOf": [_required("path"), _required("regex")],
        "allOf": [
            {"if": _auth_in("optional", "public", "deny"), "then": _none_of("roles")},
            {"if": _auth_in("public", "deny"), "then": _none_of("on_unauthenticated")},
        ],
    },
}


def config_schema() -> Schema:
    """The JSON Schema (draft-07) of the config file, as a JSON-ready dict."""
    schema: Schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "gateway config",
    }
    return schema | _section(Config, _doc(Config), nullable=False)


def _doc(cls: type) -> str:
    return " ".join((inspect.getdoc(cls) or "").split())


def _section(cls: type, description: str, *, nullable: bool) -> Schema:
    keys = section_keys(cls)
    required = [k.name for k in keys if k.default is MISSING]
    schema: Schema = {
        "type": ["object", "null"] if nullable and not required else "object",
        "description": description,
        "properties": {k.name: _property(k) for k in keys},
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return schema | RULES.get(cls, {})


def _property(k: Key) -> Schema:
    description, kind, item = k.meta.doc, k.type, item_type(k.type)
    if k.default is MISSING:
        description += " Required."
    if _is_section(kind):
        return _section(kind, description, nullable=k.default is not MISSING)
    if _is_section(item):
        return {
            "type": ["array", "null"],
            "items": _section(item, _doc(item), nullable=False),
            "description": description,
        }
    schema: Schema
    if item is not None and _is_pair(item):
        schema = {"type": ["object", "null"]}
        description += " Default: " + ", ".join(f"{h}: {c}" for h, c in k.default) + "."
    elif item is not None:
        schema = {"type": "array", "items": _text(item, k)}
    elif kind is bool:
        schema = {"type": "boolean"}
    elif kind is int:
        schema = {"type": "integer", "minimum": int(k.meta.minimum)}
    elif kind is float:
        schema = {"type": "string", "minLength": 1, "pattern": DURATION}
        description += " Duration: 500ms, 30s, 15m, 1h, 14d."
        if k.meta.minimum >= 1:
            description += f" At least {k.meta.minimum:g}s."
    else:
        schema = _text(kind, k)
        if kind is Listen:
            schema["pattern"] = LISTEN
            description += " host:port or [IPv6]:port."
    if k.meta.restart:
        description += " Restart to change."
    default = _duration(k.default) if kind is float else _default(k.default)
    if default is not None:
        schema["default"] = default
    return schema | {"description": description} | dict(k.meta.schema)


def _is_section(kind: Any) -> TypeGuard[type]:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind) and kind is not Listen


def _is_pair(item: Any) -> bool:
    """`tuple[str, str]`: a mapping entry, as identity_headers keeps them."""
    return getattr(item, "__args__", None) == (str, str)


def _text(kind: Any, k: Key) -> Schema:
    options = choices(kind)
    if not options:
        schema: Schema = {"type": "string", "minLength": 1}
        return schema | ({"pattern": k.meta.pattern} if k.meta.pattern else {})
    if k.meta.ignore_case:
        return {"type": "string", "anyOf": [{"enum": list(options)}, {"pattern": _ci(options)}]}
    return {"type": "string", "enum": list(options)}


def _ci(words: tuple[str, ...]) -> str:
    """`^(GET|...)$` ignoring case, which JSON Schema patterns cannot flag."""

    def ci(word: str) -> str:
        return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)

    return "^(" + "|".join(ci(w) for w in words) + ")$"


def _default(value: Any) -> Any:
    """A field's default as the YAML would write it; None where the schema names none."""
    if isinstance(value, Listen):
        return str(value)
    if value is MISSING or value is None or value == () or dataclasses.is_dataclass(value):
        return None
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, URL):
        return url_text(value)
    if all(isinstance(item, str) for item in value):
        return list(value)  # a list of words (scopes)
    return dict(value)  # header -> claim pairs


def _duration(seconds: float) -> str:
    if not seconds:
        return "0s"
    unit, size = next((u, s) for u, s in _UNITS if seconds >= s and (seconds / s).is_integer())
    return f"{seconds / size:g}{unit}"
