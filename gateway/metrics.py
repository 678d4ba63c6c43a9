"""Prometheus metrics, served on the admin listener.

One registry of our own (never the global one, so importing a library cannot
add series to /metrics). Label values come from the config (route labels) or
from fixed lists in code (decisions, results, store operations), never from a
request, so the number of series stays bounded whatever clients send.

With `workers: N` each worker writes its values to files in the directory the
supervisor names in PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess
mode), and the supervisor's /metrics adds them up.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Awaitable, Coroutine, Iterator
from typing import Any, Literal, Protocol, TypeVar, get_args

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric

from .store import AccessCheck, Limits, Rotation, Session, Store, StoreUnavailable

disable_created_metrics()  # type: ignore[no-untyped-call]  # `_created`: noise in every scrape
REGISTRY = CollectorRegistry(auto_describe=True)
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1)

REQUESTS = Counter(
    "gateway_requests",
    "Requests answered, by route (the config's label for it), auth decision and status class.",
    ["route", "decision", "status"],
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "gateway_request_duration_seconds",
    "Time from request to the end of the response (a streamed body included), by route.",
    ["route"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
REFRESHES = Counter(
    "gateway_refreshes",
    "Refresh token presentations, by result: rotated, grace (a racing request got the same"
    " successor), reuse, missing (no such session), invalid, user_gone.",
    ["result"],
    registry=REGISTRY,
)
REUSE = Counter(
    "gateway_refresh_reuse",
    "Refresh tokens presented again after the grace window: the session was revoked.",
    registry=REGISTRY,
)
LOGINS = Counter(
    "gateway_logins",
    "Sign-in attempts, by result: success, failure, throttled, unavailable.",
    ["result"],
    registry=REGISTRY,
)
LOGOUTS = Counter("gateway_logouts", "Sessions ended by logout.", registry=REGISTRY)
REVOCATIONS = Counter(
    "gateway_revocations",
    "Users revoked through this gateway's admin endpoint (gateway revoke with memory://).",
    registry=REGISTRY,
)
RELOADS = Counter(
    "gateway_config_reloads",
    "Config reloads, by result: success, failure (invalid, old config kept), restart_required.",
    ["result"],
    registry=REGISTRY,
)
LAST_RELOAD_OK = Gauge(
    "gateway_config_last_reload_successful",
    "1 when the last reload attempt was applied (or none was made), 0 when it was refused.",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
STORE_ERRORS = Counter(
    "gateway_store_errors",
    "Store calls that failed or timed out (the request failed closed with 503).",
    ["operation"],
    registry=REGISTRY,
)
STORE_SECONDS = Histogram(
    "gateway_store_duration_seconds",
    "Store call latency, by operation.",
    ["operation"],
    buckets=_STORE_BUCKETS,
    registry=REGISTRY,
)
WORKERS = Gauge(
    "gateway_workers",
    "Worker processes running (workers: N).",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)

LAST_RELOAD_OK.set(1)


class Observer(Protocol):
    def observe(self, amount: float) -> None: ...


class _Observations:
    """One histogram child's observations, added up in plain Python until `fold()`.

    prometheus-client's `observe()` takes one lock for the sum and another for the
    bucket; with two histograms per request that was most of what metrics cost the
    request path. Here an observation is a list increment, and `fold()` (with each log
    flush, and before every scrape) hands the totals to the child's own values, bucket
    by bucket, so /metrics and the multiprocess files read exactly as before.
    """

    __slots__ = ("_bounds", "_buckets", "_counts", "_sum", "_total")

    def __init__(self, child: Any) -> None:
        self._buckets = child._buckets  # one value per upper bound, +Inf last
        self._sum = child._sum
        self._bounds = tuple(child._upper_bounds)
        self._counts = [0] * len(self._bounds)
        self._total = 0.0

    def observe(self, amount: float) -> None:
        # the first bound >= amount: the bucket prometheus-client's observe() picks
        self._counts[bisect_left(self._bounds, amount)] += 1
        self._total += amount

    def fold(self) -> None:
        counts = self._counts
        if not any(counts):
            return
        for i, n in enumerate(counts):
            if n:
                self._buckets[i].inc(n)
                counts[i] = 0
        self._sum.inc(self._total)
        self._total = 0.0


_observers: dict[int, tuple[Any, Observer]] = {}


def observer(child: Any) -> Observer:
    """The batching observer for a histogram child (one per child), or the child itself
    should a prometheus-client release lay its values out differently."""
    known = _observers.get(id(child))
    if known is None:
        batched = all(hasattr(child, name) for name in ("_buckets", "_sum", "_upper_bounds"))
        known = _observers[id(child)] = (child, _Observations(child) if batched else child)
    return known[1]


_request_children: dict[tuple[str, str, str], tuple[Any, Observer]] = {}
_request_counts: dict[tuple[str, str, str], int] = {}


_STATUS_CLASSES = {n: f"{n}xx" for n in range(1, 6)}


def request_done(route: str, decision: str, status: int, seconds: float) -> None:
    """On every request: counted here, handed to prometheus-client by `fold()`.

    `status` is counted by class (2xx ... 5xx; "none" when no answer went out), which is
    what an alert on errors needs without a series per status code.
    """
    status_class = _STATUS_CLASSES.get(status // 100, "none")
    key = (route, decision, status_class)
    children = _request_children.get(key)
    if children is None:
        counter = REQUESTS.labels(route, decision, status_class)
        children = _request_children[key] = (counter, observer(REQUEST_SECONDS.labels(route)))
    _request_counts[key] = _request_counts.get(key, 0) + 1
    histogram = children[1]
    if type(histogram) is _Observations:  # its observe() written out: a call saved per request
        histogram._counts[bisect_left(histogram._bounds, seconds)] += 1
        histogram._total += seconds
    else:
        histogram.observe(seconds)


def fold() -> None:
    """What the request path counted, into prometheus-client's values: before a scrape,
    and every half second (the supervisor reads the workers' files, not their memory)."""
    for key, n in _request_counts.items():
        _request_children[key][0].inc(n)
    _request_counts.clear()
    for _, batched in _observers.values():
        if isinstance(batched, _Observations):
            batched.fold()


# Counted by the supervisor itself when there are workers (it decides reloads, restarts
# workers and serves the admin endpoints); the workers' files may hold zero-valued copies,
# which are left out.
_SUPERVISOR_OWNED = (RELOADS, LAST_RELOAD_OK, WORKERS, REVOCATIONS)  # admin is the supervisor's


class _Workers:
    """Every worker's values from the multiprocess directory, plus the supervisor's own."""

    def __init__(self, directory: str) -> None:
        self._files = multiprocess.MultiProcessCollector(None, path=directory)  # type: ignore[no-untyped-call]
        self._owned = {f.name for m in _SUPERVISOR_OWNED for f in m.collect()}

    def collect(self) -> Iterator[Metric]:
        for family in self._files.collect():  # type: ignore[no-untyped-call]
            if family.name not in self._owned:
                yield family
        for metric in _SUPERVISOR_OWNED:
            yield from metric.collect()


def exposition(workers_directory: str | None = None) -> tuple[bytes, str]:
    """The text for /metrics: this process's registry, or every worker's under a supervisor."""
    fold()
    if workers_directory is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    combined = CollectorRegistry(auto_describe=False)
    combined.register(_Workers(workers_directory))
    return generate_latest(combined), CONTENT_TYPE_LATEST


Operation = Literal[
    "access_revoked", "create_family", "rotate", "end_family", "revoke_user", "sessions",
    "attempt", "take_back", "ping", "login_state", "mark_once", "provider_link",
    "provider_index", "bump",
]  # fmt: skip
T = TypeVar("T")


def measured(store: Store) -> Store:
    """The same store, each call timed and each failure counted by operation."""
    return MeasuredStore(store)


class MeasuredStore:
    """Every method of Store written out, so mypy refuses this class as a Store the day
    the protocol grows a method it lacks. Each returns `_timed`'s coroutine rather than
    being one itself: one coroutine frame around the store's, as a decorator would add."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self._children: dict[Operation, tuple[Observer, Counter]] = {
            name: (observer(STORE_SECONDS.labels(name)), STORE_ERRORS.labels(name))
            for name in get_args(Operation)
        }
        self._per_request = self._children["access_revoked"]

    async def _timed(self, operation: Operation, call: Awaitable[T]) -> T:
        seconds, errors = self._children[operation]
        started = time.perf_counter()
        try:
            return await call
        except StoreUnavailable:
            errors.inc()
            raise
        finally:
            seconds.observe(time.perf_counter() - started)

    async def access_revoked(self, check: AccessCheck) -> bool:
        # `_timed` written out: this one runs on every request with a token
        started = time.perf_counter()
        try:
            return await self._inner.access_revoked(check)
        except StoreUnavailable:
            self._per_request[1].inc()
            raise
        finally:
            seconds, histogram = time.perf_counter() - started, self._per_request[0]
            if type(histogram) is _Observations:  # observe() written out, as request_done
                histogram._counts[bisect_left(histogram._bounds, seconds)] += 1
                histogram._total += seconds
            else:
                histogram.observe(seconds)

    def create_family(
        self, session: Session, token_digest: str, ttl: float
    ) -> Coroutine[Any, Any, None]:
        return self._timed("create_family", self._inner.create_family(session, token_digest, ttl))

    def rotate(
        self,
        family: str,
        subject: str,
        presented: str,
        successor: str,
        *,
        now: float,
        grace: float,
        ttl: float,
        client: str,
        user_agent: str,
        revoked_for: float,
    ) -> Coroutine[Any, Any, Rotation]:
        call = self._inner.rotate(
            family, subject, presented, successor, now=now, grace=grace, ttl=ttl,
            client=client, user_agent=user_agent, revoked_for=revoked_for,
        )  # fmt: skip
        return self._timed("rotate", call)

    def end_family(
        self, family: str, subject: str, jti: str | None, deny_for: float
    ) -> Coroutine[Any, Any, None]:
        return self._timed("end_family", self._inner.end_family(family, subject, jti, deny_for))

    def revoke_user(self, subject: str, now: float, keep_for: float) -> Coroutine[Any, Any, int]:
        return self._timed("revoke_user", self._inner.revoke_user(subject, now, keep_for))

    def sessions(self, subject: str) -> Coroutine[Any, Any, list[Session]]:
        return self._timed("sessions", self._inner.sessions(subject))

    def attempt(self, username: str, client: str, limits: Limits) -> Coroutine[Any, Any, float]:
        return self._timed("attempt", self._inner.attempt(username, client, limits))

    def take_back(self, username: str, client: str, *, success: bool) -> Coroutine[Any, Any, None]:
        return self._timed("take_back", self._inner.take_back(username, client, success=success))

    def put_login_state(self, key: str, value: str, ttl: float) -> Coroutine[Any, Any, None]:
        return self._timed("login_state", self._inner.put_login_state(key, value, ttl))

    def take_login_state(self, key: str) -> Coroutine[Any, Any, str | None]:
        return self._timed("login_state", self._inner.take_login_state(key))

    def bump(self, key: str, window: float) -> Coroutine[Any, Any, int]:
        return self._timed("bump", self._inner.bump(key, window))

    def mark_once(self, key: str, ttl: float) -> Coroutine[Any, Any, bool]:
        return self._timed("mark_once", self._inner.mark_once(key, ttl))

    def put_provider_link(
        self, family: str, subject: str, value: str, ttl: float
    ) -> Coroutine[Any, Any, None]:
        call = self._inner.put_provider_link(family, subject, value, ttl)
        return self._timed("provider_link", call)

    def provider_link(self, family: str, subject: str) -> Coroutine[Any, Any, str | None]:
        return self._timed("provider_link", self._inner.provider_link(family, subject))

    def drop_provider_link(self, family: str, subject: str) -> Coroutine[Any, Any, None]:
        return self._timed("provider_link", self._inner.drop_provider_link(family, subject))

    def index_provider_session(
        self, index: str, family: str, subject: str, ttl: float
    ) -> Coroutine[Any, Any, None]:
        call = self._inner.index_provider_session(index, family, subject, ttl)
        return self._timed("provider_index", call)

    def provider_sessions(self, index: str) -> Coroutine[Any, Any, dict[str, str]]:
        return self._timed("provider_index", self._inner.provider_sessions(index))

    def ping(self) -> Coroutine[Any, Any, str | None]:
        return self._timed("ping", self._inner.ping())

    async def close(self) -> None:
        await self._inner.close()
