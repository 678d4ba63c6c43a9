"""Who the client is when the gateway sits behind an ingress or load balancer.

The TCP peer is the client unless it is one of `trusted_proxies`; then the
client is the rightmost X-Forwarded-For entry that is not itself a trusted
proxy, which is the first address a trusted hop saw. Entries further left
were written by the client and are never believed. Without the setting every
client behind an ingress would share the ingress's address, and one guesser
would lock everybody out of sign-in.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Networks(tuple[Network, ...]):
    """A tuple of networks that hashes once: the cache below is keyed by it on every
    request, and a tuple of networks would hash each network each time."""

    _hash: int

    def __new__(cls, networks: Iterable[Network]) -> Networks:
        self = super().__new__(cls, networks)
        self._hash = tuple.__hash__(self)
        return self

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return tuple.__eq__(self, other)


def is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    if not trusted:
        return False
    return _trusted(address, trusted if type(trusted) is Networks else Networks(trusted))


@functools.lru_cache(maxsize=4096)
def _trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    """Remembered per address: parsing it costs microseconds on every request behind a
    proxy, and the same few addresses (the proxies, the clients) come again and again."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_address(request: web.BaseRequest, trusted: Sequence[Network]) -> str:
    peer = request.remote or ""
    if not trusted or not is_trusted(peer, trusted):
        return peer
    hops = [
        hop.strip()
        for header in request.headers.getall("X-Forwarded-For", ())
        for hop in header.split(",")
        if hop.strip()
    ]
    for hop in reversed(hops):
        if not is_trusted(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # garbage where an address should be: fall back to what we know
    return hops[0] if hops else peer


def forwarded_proto(request: web.BaseRequest, trusted: Sequence[Network]) -> str:
    """The scheme the browser used: a trusted proxy's X-Forwarded-Proto, else our own."""
    if trusted and is_trusted(request.remote or "", trusted):
        proto = request.headers.get("X-Forwarded-Proto", "").split(",")[-1].strip().lower()
        if proto in ("http", "https"):
            return proto
    return request.scheme
