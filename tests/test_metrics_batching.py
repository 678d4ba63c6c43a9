"""The request path's histograms are added up in plain Python and folded into
prometheus-client's values later: what a scrape shows must be exactly what
prometheus-client's own observe() would have shown, bucket for bucket."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway import metrics

BUCKETS = (0.0001, 0.00025, 0.001, 0.01, 0.1, 1, 30)
amounts = st.lists(
    st.one_of(
        st.sampled_from(BUCKETS),  # exactly on a bound: le is inclusive
        st.floats(min_value=0, max_value=100, allow_nan=False),
    ),
    max_size=60,
)


def _pair() -> tuple[Histogram, Histogram, CollectorRegistry, CollectorRegistry]:
    direct_registry, batched_registry = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("h", "h", ["route"], buckets=BUCKETS, registry=direct_registry)
    batched = Histogram("h", "h", ["route"], buckets=BUCKETS, registry=batched_registry)
    return direct, batched, direct_registry, batched_registry


@settings(max_examples=200, deadline=None)
@given(first=amounts, second=amounts)
def test_folded_observations_read_as_prometheus_client_own(
    first: list[float], second: list[float]
) -> None:
    direct, batched, direct_registry, batched_registry = _pair()
    direct.labels("/r")  # the series exists on both sides, observed or not
    observer = metrics.observer(batched.labels("/r"))
    assert observer is not batched.labels("/r"), "batching is off with this prometheus-client"
    for amount in first:
        direct.labels("/r").observe(amount)
        observer.observe(amount)
    metrics.fold()
    for amount in second:  # a second fold adds to the first, never replaces it
        direct.labels("/r").observe(amount)
        observer.observe(amount)
    metrics.fold()
    metrics.fold()  # folding nothing changes nothing
    seen, wanted = _samples(batched_registry), _samples(direct_registry)
    assert seen.keys() == wanted.keys()
    for name, value in wanted.items():
        if name[0] == "h_sum":  # added up in another order: the last bits may differ
            assert seen[name] == pytest.approx(value, rel=1e-9, abs=1e-12)
        else:
            assert seen[name] == value, name  # counts: exact


def _samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, repr(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_one_observer_per_child() -> None:
    _, batched, _, _ = _pair()
    assert metrics.observer(batched.labels("/a")) is metrics.observer(batched.labels("/a"))
    assert metrics.observer(batched.labels("/a")) is not metrics.observer(batched.labels("/b"))
