"""What OpenID Connect keeps for the life of the process: provider states and a client.

A reload builds a new Snapshot but must not forget the providers' discovery
documents and keys, nor open a new connection pool; so they live here, in
the Runtime, keyed by (issuer, client_id). `keep_discovered` runs beside
`serve`: a provider that is down when the gateway starts (or later) is
retried in the background with a growing pause, while the gateway serves
password sign-in and existing sessions. A sign-in with that provider in the
meantime tries once more (one call shared by all sign-ins at that moment),
or, when the last try got no answer within the timeout, answers 503 at once
until the next retry (at most HOLD_AT_MOST; discovery.py, `down_until`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp

from ..config.providers import ProviderConfig
from .discovery import ProviderState
from .http import ProviderUnavailable, new_session

_REFRESH_EVERY = 3600.0  # discovery and keys fetched again even when nothing failed
HOLD_AT_MOST = 10.0  # seconds a slow provider's sign-ins answer 503 without asking it


class Home:
    def __init__(self) -> None:
        self._states: dict[tuple[str, str], ProviderState] = {}
        self._session: aiohttp.ClientSession | None = None

    def state(self, config: ProviderConfig) -> ProviderState:
        found = self._states.get((config.issuer, config.client_id))
        if found is None:
            found = self._states[(config.issuer, config.client_id)] = ProviderState(config)
        found.config = config  # a reload may change its timeout, scopes or secret
        return found

    @property
    def session(self) -> aiohttp.ClientSession:
        """Opened on first use, inside the running loop."""
        if self._session is None or self._session.closed:
            self._session = new_session()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def unreachable(self, configs: tuple[ProviderConfig, ...]) -> list[str]:
        """The ids of providers whose discovery has not succeeded (or last failed)."""
        return [c.id for c in configs if not self.state(c).reachable]

    async def keep_discovered(self, configs: Callable[[], tuple[ProviderConfig, ...]]) -> None:
        """Discover each configured provider; retry the failed ones (1 s, doubling to 60 s)."""
        pause = 0.5
        since_refresh = 0.0
        while True:
            again = since_refresh >= _REFRESH_EVERY
            failed = False
            for config in configs():
                state = self.state(config)
                if state.reachable and not again:
                    continue
                try:
                    await state.discover(self.session, again=True)
                except ProviderUnavailable:
                    failed = True
            since_refresh = 0.0 if again else since_refresh
            pause = min(pause * 2, 60.0) if failed else 0.5
            for config in configs():
                state = self.state(config)
                # until the next retry (HOLD_AT_MOST), a sign-in with a provider never reached
                # that did not answer in time is a 503 at once: no request waits `timeout` for
                # what the retry will learn anyway (discovery.py, failed_slowly)
                held = state.metadata is None and state.error is not None and state.failed_slowly
                state.down_until = time.monotonic() + min(pause, HOLD_AT_MOST) if held else 0.0
            wait = pause if failed else 60.0
            await asyncio.sleep(wait)
            since_refresh += wait
