"""Which store a `store:` URL names: a table from scheme to implementation.

As uvicorn maps a setting's names to implementations, each scheme maps to an
opener that imports its backend only when it is chosen, so a process on
memory:// never imports redis. A new backend is one opener and one entry.
"""

from __future__ import annotations

from collections.abc import Callable

from yarl import URL

from .store import Store

Opener = Callable[[URL, float, str | None], Store]


def _memory(url: URL, timeout: float, password: str | None) -> Store:
    from .memory_store import MemoryStore

    return MemoryStore()


def _redis(url: URL, timeout: float, password: str | None) -> Store:
    from .redis_store import RedisStore

    return RedisStore(url, timeout, password)


SCHEMES: dict[str, Opener] = {
    "memory": _memory,
    "redis": _redis,
    "rediss": _redis,
    # several hosts each: the config keeps them as an opaque URL (redis_topology)
    "redis+sentinel": _redis,
    "rediss+sentinel": _redis,
    "redis+cluster": _redis,
    "rediss+cluster": _redis,
}


def open_store(url: URL, timeout: float, password: str | None = None) -> Store:
    """The store named by the config; nothing connects until the first call."""
    opener = SCHEMES.get(url.scheme)
    if opener is None:  # the config admits only the schemes above
        raise ValueError(f"no store for {url.scheme}://; expected one of {', '.join(SCHEMES)}")
    return opener(url, timeout, password)
