"""`redis+sentinel://` and `redis+cluster://`: the URL grammar of SPEC §7.6.

yarl cannot hold a list of hosts in a URL's authority, so the config keeps such
a store as an opaque URL (`redis+sentinel:s1:26379,s2:26379/mymaster/0`: the
text after `//` as its path) and this module reads that text, for check-config
(every mistake with file:line) and for the store alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from yarl import URL

HA_SCHEMES = ("redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster")

_HOST = r"(?:\[[0-9A-Fa-f:.]+\]|[^\s:,/@\[\]?#]+)"
_NODES = rf"{_HOST}:\d+(?:,{_HOST}:\d+)*"
_SENTINEL = re.compile(
    rf"(?P<scheme>rediss?)\+sentinel://(?:(?P<user>[^\s:/@,]+)@)?(?P<nodes>{_NODES})"
    r"/(?P<service>[^\s/?#@]+)(?:/(?P<db>\d+))?"
)
_CLUSTER = re.compile(
    rf"(?P<scheme>rediss?)\+cluster://(?:(?P<user>[^\s:/@,]+)@)?(?P<nodes>{_NODES})/?"
)
SENTINEL_FORM = "redis+sentinel://[user@]host:port[,host:port...]/service[/db]"
CLUSTER_FORM = "redis+cluster://[user@]host:port[,host:port...]"


@dataclass(frozen=True, slots=True)
class Topology:
    """Where a highly available store is: sentinels and a service, or cluster nodes."""

    kind: Literal["sentinel", "cluster"]
    tls: bool
    username: str | None
    nodes: tuple[tuple[str, int], ...]
    service: str = ""
    db: int = 0


def parse(text: str) -> Topology:
    """Raises ValueError saying what the URL should look like; never repeats a password."""
    scheme, sep, rest = text.partition("://")
    text = scheme.lower() + sep + rest
    kind: Literal["sentinel", "cluster"] = "sentinel" if "+sentinel:" in text else "cluster"
    form = SENTINEL_FORM if kind == "sentinel" else CLUSTER_FORM
    if re.match(r"^[^/]*//[^/@]*:[^/@]*@", text):
        raise ValueError(
            "a password never goes in the YAML: name it with store_password_env or"
            " store_password_file"
        )
    if "?" in text:
        raise ValueError("expected no ?options in the store URL; each has its own config key")
    m = (_SENTINEL if kind == "sentinel" else _CLUSTER).fullmatch(text)
    if m is None:
        if kind == "cluster" and re.fullmatch(r"rediss?\+cluster://[^/]*/\d+/?", text):
            raise ValueError(f"a cluster has no databases: expected {form}")
        raise ValueError(f"expected {form}")
    nodes = []
    for node in m["nodes"].split(","):
        host, _, port = node.rpartition(":")
        if not 0 < int(port) < 65536:
            raise ValueError(f"expected a port from 1 to 65535 in {form}, got {port}")
        nodes.append((host.strip("[]"), int(port)))
    return Topology(
        kind=kind,
        tls=m["scheme"] == "rediss",
        username=m["user"],
        nodes=tuple(nodes),
        service=m["service"] if kind == "sentinel" else "",
        db=int(m["db"] or 0) if kind == "sentinel" else 0,
    )


def is_ha(text: str) -> bool:
    return text.lower().startswith(tuple(s + ":" for s in HA_SCHEMES))


def as_url(text: str) -> URL:
    """The URL the config keeps for a valid HA store text (the scheme lower-cased)."""
    scheme, _, rest = text.partition("://")
    return URL(f"{scheme.lower()}:{rest}")


def from_url(url: URL) -> Topology:
    return parse(f"{url.scheme}://{url.path}")


def shown_url(url: URL) -> str:
    """As the config file wrote it, for messages and docs: `redis+cluster://n1:6379,...`."""
    return f"{url.scheme}://{url.path}"
