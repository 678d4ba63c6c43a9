"""Reloadable state: one immutable Snapshot inside a mutable Runtime, and the
Lifetime of the process that holds them.

The aiohttp app freezes at startup, so a reload swaps the snapshot, never
mutates it; a request reads `runtime.snapshot` once and uses that one
consistently to the end, even if a reload lands meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict

from . import logs, metrics, proxy
from .assertion import Asserter
from .config import Config
from .credentials import UsersFile, VerifyUrl
from .loginpage import LoginPage
from .oidc.home import Home
from .oidc.relying import Relying
from .pages import Pages
from .sessions import Sessions
from .store import Store
from .stores import open_store
from .tokens import Verifier


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    config: Config
    verifier: Verifier
    upstream_base: str | None  # "http://host:port" + the normalized path; None: forward_auth only
    identity_names: frozenset[str]  # lower-cased identity header names, always stripped
    cookie_names: frozenset[str]
    reserved_paths: frozenset[str]  # answered by the gateway itself, never proxied
    upstream_timeout: aiohttp.ClientTimeout
    sessions: Sessions
    credentials: UsersFile | VerifyUrl | None  # None: no sign-in here, tokens come from elsewhere
    login_page: LoginPage | None
    pages: Pages  # the gateway's own answers to people: title and error template
    ws_recheck: float  # how often an open WebSocket re-checks that its session is alive
    asserter: Asserter | None  # signs X-User-Assertion when identity_assertion is configured
    oidc: Relying | None  # login.providers: sign-in with OpenID Connect

    @classmethod
    def build(cls, config: Config, store: Store, home: Home | None = None) -> Snapshot:
        """`store` is the process's: a new snapshot must not start from an empty memory store;
        `home` too (the providers' discovery and keys), when the process has one."""
        tokens, login = config.tokens, config.login
        verifier = tokens.verifier()
        credentials: UsersFile | VerifyUrl | None = login.users
        if login.verify_url is not None:
            credentials = VerifyUrl(login.verify_url, login.verify_timeout)
        sessions = Sessions(config, verifier, store)
        oidc = Relying(config, sessions, home or Home()) if login.providers else None
        return cls(
            config=config,
            verifier=verifier,
            upstream_base=str(config.upstream).rstrip("/") if config.upstream else None,
            identity_names=frozenset(
                h.lower()
                for h in [h for h, _ in config.identity_headers]
                + ([config.identity_assertion.header] if config.identity_assertion else [])
            ),
            cookie_names=frozenset((config.cookies.access, config.cookies.refresh)),
            reserved_paths=frozenset(
                (config.login.path, config.login.logout_path, *(oidc.paths if oidc else ()))
            ),
            upstream_timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=config.upstream_timeout, sock_read=config.upstream_timeout
            ),
            sessions=sessions,
            credentials=credentials,
            login_page=LoginPage(login.template) if login.signs_in else None,
            pages=Pages(config.pages.title, config.pages.template),
            # closed within 5 s of a logout (SPEC: 15), sooner with a short access TTL; one
            # store call per open socket per interval
            ws_recheck=min(5.0, max(0.5, tokens.access_ttl / 4)),
            asserter=(
                Asserter(config.identity_assertion, issuer=tokens.issuer, audience=tokens.audience)
                if config.identity_assertion is not None
                else None
            ),
            oidc=oidc,
        )


class Runtime:
    """What lives as long as the process: the current snapshot and the upstream client."""

    def __init__(self, config: Config) -> None:
        password = config.store_password.reveal().decode() if config.store_password else None
        self.store = metrics.measured(open_store(config.store, config.store_timeout, password))
        self.oidc_home = Home()  # the providers' discovery and keys outlive reloads
        self.snapshot = Snapshot.build(config, self.store, self.oidc_home)
        self._client: aiohttp.ClientSession | None = None
        self._ws_client: aiohttp.ClientSession | None = None
        self.draining = False  # SIGTERM received: /readyz says 503 so traffic moves elsewhere
        self.workers_directory: str | None = None  # a supervisor: where its workers' metrics are
        self.workers_ready: Callable[[], bool] | None = None  # a supervisor: all workers up?

    @property
    def client(self) -> aiohttp.ClientSession:
        if self._client is None:
            raise RuntimeError("the upstream client is not open: Runtime.open_client opens it")
        return self._client

    @property
    def ws_client(self) -> aiohttp.ClientSession:
        """WebSocket handshakes: the same pool, plus a hook that keeps a refusal's body."""
        if self._ws_client is None:
            raise RuntimeError("the upstream client is not open: Runtime.open_client opens it")
        return self._ws_client

    @property
    def has_client(self) -> bool:
        return self._client is not None and not self._client.closed

    def open_client(self) -> aiohttp.ClientSession:
        # One pooled keep-alive session for every request. DummyCookieJar: a shared
        # session must never carry one user's upstream cookies into another's request.
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30, ttl_dns_cache=60)
        self._client = _session(connector)
        # apart from the proxy's session, so the trace hook costs ordinary requests nothing
        self._ws_client = _session(connector, trace_configs=[proxy.REFUSAL_TRACE], owner=False)
        return self._client

    async def close(self) -> None:
        """The upstream client and the store connections; the last thing at shutdown."""
        if self._ws_client is not None:
            await self._ws_client.close()
            self._ws_client = None
        if self._client is not None:
            await self._client.close()
            self._client = None
        await self.oidc_home.close()
        await self.store.close()


_NO_AUTO_HEADERS: CIMultiDict[None] = CIMultiDict(
    (name, None) for name in (hdrs.USER_AGENT, hdrs.ACCEPT, hdrs.ACCEPT_ENCODING, hdrs.CONTENT_TYPE)
)


class _FaithfulRequest(aiohttp.ClientRequest):
    """A request upstream carries the client's headers only: aiohttp adds none of its own
    (User-Agent, Accept, Accept-Encoding, a body's Content-Type). The session's
    skip_auto_headers says the same, but aiohttp rebuilds that list and copies every header
    to apply it, on each request; here it is one constant."""

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        self._skip_auto_headers = _NO_AUTO_HEADERS


def _session(
    connector: aiohttp.BaseConnector,
    trace_configs: list[aiohttp.TraceConfig] | None = None,
    owner: bool = True,
) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=connector,
        connector_owner=owner,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=tuple(_NO_AUTO_HEADERS),  # if aiohttp ever stops calling the override
        request_class=_FaithfulRequest,
        timeout=aiohttp.ClientTimeout(total=None),
        trace_configs=trace_configs,
    )


RUNTIME = web.AppKey("runtime", Runtime)

R = TypeVar("R", bound=web.BaseRunner)


class Lifetime:
    """One process from start to stop, the same for `serve` and `supervise`.

    What the process opens is entered here and closed in reverse order on every path,
    a failure half-way through starting included: the listeners, the tasks spawned,
    the signal handlers, the runtime (its clients and store connections). SIGTERM and
    SIGINT end `until_stopped`; SIGHUP calls `reload`.
    """

    def __init__(
        self,
        runtime: Runtime,
        reload: Callable[[str], Coroutine[Any, Any, object]],
        log: logging.Logger,
    ) -> None:
        self._runtime = runtime
        self.stop = asyncio.Event()
        self._reload = reload
        self._log = log
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        async with AsyncExitStack() as stack:
            stack.callback(self._stopped)
            stack.push_async_callback(self._runtime.close)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop.set)
                stack.callback(loop.remove_signal_handler, sig)
            loop.add_signal_handler(signal.SIGHUP, lambda: self.spawn(self._reload("SIGHUP")))
            stack.callback(loop.remove_signal_handler, signal.SIGHUP)
            stack.push_async_callback(self.cancel_tasks)
            self.spawn(_flush_every(0.5))
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        return await self._stack.__aexit__(kind, exc, traceback)

    async def listen(self, runner: R, host: str, port: int, *, reuse_port: bool = False) -> R:
        """`runner` set up and accepting on host:port, until the way out."""
        self._stack.push_async_callback(runner.cleanup)  # safe on a runner never set up
        await runner.setup()
        await web.TCPSite(runner, host, port, reuse_port=reuse_port).start()
        return runner

    def on_exit(self, callback: Callable[[], Coroutine[Any, Any, object]]) -> None:
        """`callback` awaited on the way out, before what was opened earlier is closed."""
        self._stack.push_async_callback(callback)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """A task that lives until the stop, kept referenced so the loop cannot drop it."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def until_stopped(self) -> float:
        """Until SIGTERM or SIGINT; then /readyz says draining. The drain timeout is read
        at that moment, so a reload can change it."""
        await self.stop.wait()
        self._runtime.draining = True
        return self._runtime.snapshot.config.drain_timeout

    def _stopped(self) -> None:
        self._log.info("stopped")
        logs.flush()
        metrics.fold()


async def _flush_every(seconds: float) -> None:
    """Access lines and request metrics are gathered in memory on the request path;
    this hands them on (to stdout, to prometheus-client's values) while the process runs."""
    while True:
        await asyncio.sleep(seconds)
        logs.flush()
        metrics.fold()
