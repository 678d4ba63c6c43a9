"""A config key is declared once: as a dataclass field whose metadata is `key(...)`.

The field's type says how the key is read and what it may hold (a `Literal`
lists the choices, a float is a duration in seconds), its default is the
default, and its metadata says the rest: description, minimum, whether a
change needs a restart, what a missing required key should have been.
`read` reads every key whose type a `Section` getter knows; the section
modules read the others (URLs, listeners, files, nested sections) by hand.
`schema.py` generates the JSON Schema from the same fields, and a section's
further YAML keys (key files, secret names) are declared the same way on the
classes its `MORE_KEYS` names.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from ..yamlsource import Section

T = TypeVar("T")
MISSING: Any = dataclasses.MISSING

# yamlsource.parse_duration: a number, then one unit; no bare numbers, no 1h30m
DURATION = r"^\s*[0-9]+(\.[0-9]+)?\s*(ms|s|m|h|d)\s*$"
HTTP_NAME = r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$"  # an HTTP token: cookie and header names


@dataclass(frozen=True, slots=True, kw_only=True)
class Meta:
    doc: str
    minimum: float = 0
    restart: bool = False  # a reload cannot apply a change: the process bound or connected with it
    required: str | None = None  # what a missing key should have been, for the message
    pattern: str | None = None  # what the schema says of the text (the parser is the judge)
    ignore_case: bool = False  # choices match whatever their case
    schema: Mapping[str, Any] = field(default_factory=dict)  # more JSON Schema keywords


def key(doc: str, **options: Any) -> dict[str, Meta]:
    """The metadata that makes a field a YAML key of its section, named as the field is:
    `access_ttl: float = field(default=900, metadata=key("Lifetime...", minimum=1))`;
    `options` are Meta's (a misspelt one fails at import)."""
    return {"key": Meta(doc=doc, **options)}


# a field built from other keys that a reload cannot change either (the store's password)
RESTART = {"restart": True}


@dataclass(frozen=True, slots=True)
class Key:
    name: str
    type: Any  # the field's type, None stripped (`optional` says whether it was there)
    optional: bool
    meta: Meta
    default: Any  # MISSING when the key has none


def keys_of(*classes: type) -> list[Key]:
    """The YAML keys the classes declare, in order."""
    return [k for cls in classes for k in _declared_keys(cls)]


@functools.cache
def _declared_keys(cls: type) -> tuple[Key, ...]:
    found = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("key")
        if meta is None:
            continue
        default = f.default
        if callable(f.default_factory):
            default = f.default_factory()
        kind, optional = strip_none(hints[f.name])
        found.append(Key(f.name, kind, optional, meta, default))
    return tuple(found)


def section_keys(cls: type) -> list[Key]:
    """Every key of the section `cls` is read from: its own and its MORE_KEYS classes'."""
    return keys_of(cls, *getattr(cls, "MORE_KEYS", ()))


def declared(cls: type, name: str) -> Key:
    return next(k for k in keys_of(cls) if k.name == name)


def restart_keys(cls: type) -> tuple[str, ...]:
    """The fields of `cls` a reload cannot change."""
    return tuple(
        f.name
        for f in dataclasses.fields(cls)
        if f.metadata.get("restart") or getattr(f.metadata.get("key"), "restart", False)
    )


def strip_none(kind: Any) -> tuple[Any, bool]:
    """`X | None` -> (X, True); anything else -> (it, False)."""
    if get_origin(kind) in (Union, types.UnionType):
        rest = [a for a in get_args(kind) if a is not type(None)]
        if len(rest) < len(get_args(kind)):
            return (rest[0] if len(rest) == 1 else kind), True
    return kind, False


def choices(kind: Any) -> tuple[str, ...]:
    """The strings of a `Literal`; () for any other type."""
    return get_args(kind) if get_origin(kind) is Literal else ()


def item_type(kind: Any) -> Any:
    """X of `tuple[X, ...]`; None for any other type."""
    args = get_args(kind)
    return args[0] if get_origin(kind) is tuple and args[1:] == (Ellipsis,) else None


def read(sec: Section, cls: type) -> dict[str, Any]:
    """The values of the keys of `cls` that a Section getter reads; others are the caller's."""
    values = {}
    for k in keys_of(cls):
        value = _read(sec, k)
        if value is not _BY_HAND:
            values[k.name] = value
    return values


def build(sec: Section, cls: type[T], **by_hand: Any) -> T:
    """An instance of `cls`: what `read` reads, and the values the caller read by hand."""
    return cls(**read(sec, cls), **by_hand)


_BY_HAND = object()


def _or(default: Any, otherwise: Any) -> Any:
    return otherwise if default is MISSING else default


def _read(sec: Section, k: Key) -> Any:
    name, kind, default, item = k.name, k.type, k.default, item_type(k.type)
    texts = item is str or bool(choices(item))
    if not (kind in (bool, int, float, str) or choices(kind) or texts):
        return _BY_HAND
    if k.meta.required is not None and not sec.required(name, k.meta.required):
        return ""  # reported; a placeholder so the section can go on
    if choices(kind):
        return sec.choice(name, choices(kind), _or(default, None))
    if kind is bool:
        return sec.flag(name, default)
    if kind is int:
        return sec.integer(name, default, minimum=int(k.meta.minimum))
    if kind is float:
        return sec.duration(name, default, minimum=k.meta.minimum)
    if kind is str:
        return sec.opt_text(name) if k.optional else sec.text(name, _or(default, ""))
    found = sec.text_list(name)
    return tuple(found) if found is not None else (None if k.optional else default)
