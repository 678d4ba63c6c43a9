"""What the gateway listens on and talks to: the listeners and the upstream.

Each parser here has a pattern beside it that says the same for editors
(`gateway schema`); the parser is the judge, tests/test_schema.py keeps the
two in step.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from yarl import URL

from ..clientaddr import Network, Networks
from ..yamlsource import Section

# host:port or [IPv6]:port, port 0-65535
_PORT = r"0*([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
LISTEN = rf"^(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):{_PORT}$"
HTTP_URL = r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\s]+"
UPSTREAM_URL = r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#@\s]+/?$"  # no path, query or user


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def shown(text: str | None) -> str:
    """A URL as an error message may repeat it: user and password never (they end up in logs).

    Everything up to the last `@` goes: a password may itself hold `@`, `/` or a space,
    and hiding a path's `@` too costs nothing in an error message.
    """
    return re.sub(r"(?<=//).*@", "***@", text or "")


def parse_url(text: str | None) -> URL | None:
    """None for text that does not parse as a URL (yarl raises on things like 'http://[::1')."""
    try:
        return URL(text) if text else None
    except ValueError:
        return None


def url_text(url: URL) -> str:
    """A URL as the config file writes it: memory:// rather than yarl's memory:."""
    return str(url) if url.host else f"{url.scheme}://"


def read_listen(top: Section, key: str, default: Listen) -> Listen:
    text = top.text(key, str(default))
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]+):(\d+)", text)
    port = int(m.group(2) or m.group(4)) if m else -1
    if m is None or not 0 <= port < 65536:
        top.error(key, f"expected host:port like 0.0.0.0:8080 or [::1]:8080, got {text!r}")
        return default
    return Listen(m.group(1) or m.group(3), port)


def overlap(a: Listen, b: Listen) -> bool:
    """Two listeners that would bind the same port (port 0 always gets a fresh one)."""
    wildcard = {"0.0.0.0", "::", ""}  # noqa: S104
    same_host = a.host == b.host or a.host in wildcard or b.host in wildcard
    return a.port == b.port != 0 and same_host


def read_upstream(top: Section, expected: str) -> URL | None:
    if not top.required("upstream", expected):
        return None
    text = top.text("upstream")
    url = parse_url(text)
    if url is None or url.scheme not in ("http", "https") or not url.host:
        top.error("upstream", f"expected an http:// or https:// URL, got {shown(text)!r}")
        return None
    if url.path not in ("", "/") or url.query_string or url.fragment or url.user:
        top.error("upstream", "expected scheme://host[:port] only, without path, query or user")
        return None
    return url.with_path("")


def read_networks(top: Section, key: str) -> tuple[Network, ...]:
    networks = []
    for item in top.text_list(key) or ():
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            top.error(key, f"expected an address or CIDR like 10.0.0.0/8, got {item!r}")
    return Networks(networks)  # hashed once: looked up on every request
