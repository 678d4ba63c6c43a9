"""Config reload: on SIGHUP, or when the config file or a file it names changes.

All or nothing. The new config is validated in full and built into a new
snapshot before anything changes; then one assignment swaps it in. Requests
already running keep the snapshot they started with. An invalid edit changes
nothing, and a change that only a restart can apply (listeners, workers, the
store connection) changes nothing either: half a config would be a config
nobody wrote.

Files are polled, not watched with inotify: a Kubernetes ConfigMap update
swaps a `..data` symlink in the mounted directory, and `stat` through the
path's symlinks sees the new inode whatever mechanism replaced it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from . import logs, metrics
from .config import RESTART_KEYS, Config, load
from .errors import ConfigError
from .runtime import Runtime, Snapshot

log = logging.getLogger("gateway.config")

POLL_SECONDS = 1.0


Fingerprint = tuple[tuple[str, int, int, int, int] | None, ...]


def fingerprint(files: tuple[Path, ...]) -> Fingerprint:
    """Through every symlink: a swapped ConfigMap `..data` link shows as a new inode."""
    result: list[tuple[str, int, int, int, int] | None] = []
    for path in files:
        try:
            st = os.stat(path)
        except OSError:
            result.append(None)
            continue
        result.append((os.path.realpath(path), st.st_ino, st.st_dev, st.st_mtime_ns, st.st_size))
    return tuple(result)


def needs_restart(old: Config, new: Config) -> list[str]:
    changed = []
    for key in RESTART_KEYS:  # what the process has bound or connected with the old values
        before, after = getattr(old, key), getattr(new, key)
        if key == "store_password":
            before, after = (s.reveal() if s else None for s in (before, after))
        if before != after:
            changed.append(key)
    return changed


class Reloader:
    """Owns reloads for one process; `counted` is False in a worker (its supervisor counts)."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        counted: bool = True,
        applied: Callable[[Config], None] | None = None,
        loader: Callable[[Path], Config] = load,
    ) -> None:
        self._runtime = runtime
        self._loader = loader
        self._counted = counted
        self._applied = applied
        self._lock = asyncio.Lock()
        # the files of the last config read, valid or not, and how they looked then
        self._watched = runtime.snapshot.config.files
        self._seen = fingerprint(self._watched)

    async def reload(self, reason: str) -> bool:
        """True when a new config is now serving; never raises for a bad config."""
        async with self._lock:  # SIGHUP during a file-triggered reload: one after the other
            return await self._reload(reason)

    async def _reload(self, reason: str) -> bool:
        old = self._runtime.snapshot.config
        self._watched = old.files
        self._seen = fingerprint(old.files)
        try:
            # file reads and parsing off the loop: requests keep flowing meanwhile
            new = await asyncio.to_thread(self._loader, old.source)
        except ConfigError as exc:
            self._failed("failure", "reload failed: invalid config; the running config stays")
            for problem in exc.problems:
                log.error(
                    str(problem),
                    extra={
                        "event": "reload_problem",
                        "file": problem.file,
                        "line": problem.line,
                        "key": problem.key,
                        "problem": problem.message,
                    },
                )
            return False
        self._watched = new.files
        self._seen = fingerprint(new.files)
        changed = needs_restart(old, new)
        if changed:
            self._failed(
                "restart_required",
                "reload refused: a change needs a restart; nothing was applied, the running"
                " config stays",
                keys=changed,
            )
            return False
        try:
            snapshot = Snapshot.build(new, self._runtime.store, self._runtime.oidc_home)
        except Exception as exc:  # a config that validated but will not build: keep the old
            self._failed(
                "failure", "reload failed; the running config stays", error=type(exc).__name__
            )
            return False
        self._runtime.snapshot = snapshot
        logs.set_level(new.log_level)
        if self._applied is not None:
            self._applied(new)
        if self._counted:
            metrics.RELOADS.labels("success").inc()
            metrics.LAST_RELOAD_OK.set(1)
        log.info("config reloaded", extra={"event": "reload", "reason": reason})
        for warning in new.warnings:
            log.warning(warning)
        return True

    def _failed(self, result: str, message: str, **details: object) -> None:
        if self._counted:
            metrics.RELOADS.labels(result).inc()
            metrics.LAST_RELOAD_OK.set(0)
        log.error(message, extra={"event": "reload_failed", "result": result, **details})

    async def watch(self) -> None:
        """Poll the files; reload once a change has held still for one poll (editors write
        in several steps, and a half-written file would only be a spurious failure)."""
        pending: Fingerprint | None = None
        while True:
            await asyncio.sleep(POLL_SECONDS)
            now = await asyncio.to_thread(fingerprint, self._watched)
            if now == self._seen:
                pending = None
            elif now != pending:
                pending = now
            else:
                pending = None
                await self.reload("file changed")
