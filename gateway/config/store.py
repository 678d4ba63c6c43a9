"""store and its password: where sessions live, and how the gateway signs in to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from yarl import URL

from .. import keys, redis_topology
from ..yamlsource import Section
from .declare import build, key
from .endpoints import parse_url, shown, url_text

STORE_URL = (
    r"^([Mm][Ee][Mm][Oo][Rr][Yy]|[Rr][Ee][Dd][Ii][Ss][Ss]?"
    r"(\+([Ss][Ee][Nn][Tt][Ii][Nn][Ee][Ll]|[Cc][Ll][Uu][Ss][Tt][Ee][Rr]))?):(//)?[^?]*$"
)
URL_CREDENTIALS = r"^[^/]*//[^/@]*:[^/@]*@"  # scheme://user:password@...


@dataclass(frozen=True, slots=True, kw_only=True)
class StorePassword:
    """Where the store's password comes from; never the YAML itself."""

    store_password_env: str | None = field(
        default=None, metadata=key("Environment variable holding the Redis password.", restart=True)
    )
    store_password_file: str | None = field(
        default=None, metadata=key("File holding the Redis password.", restart=True)
    )


def read_store(top: Section, default: URL) -> URL:
    text = top.text("store", url_text(default))
    if redis_topology.is_ha(text):  # several hosts: more than yarl's URL can hold
        try:
            redis_topology.parse(text)
        except ValueError as exc:
            top.error("store", f"{exc}, got {shown(text.partition('?')[0])!r}")  # no ?secrets
            return default
        return redis_topology.as_url(text)
    url = parse_url(text)
    if url is None or url.scheme not in ("memory", "redis", "rediss"):
        top.error(
            "store",
            "expected memory://, redis://host:port/db, rediss://...,"
            f" {redis_topology.SENTINEL_FORM} or {redis_topology.CLUSTER_FORM},"
            f" got {shown(text)!r}",
        )
        return default
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


def read_store_password(top: Section, base: Path) -> keys.Secret | None:
    source = build(top, StorePassword)
    env, file = source.store_password_env, source.store_password_file
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
