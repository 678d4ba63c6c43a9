"""The access line is hand-assembled JSON: it must stay valid JSON whatever the values."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import logs


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    buffer = io.StringIO()
    monkeypatch.setattr(logs, "_access_sink", buffer)
    return buffer


@pytest.mark.parametrize(
    "user", [None, "alice", 'quo"te', "back\\slash", "new\nline", "Zoë", "\x00\x1f", "😀"]
)
def test_access_line_is_valid_json_for_any_value(sink: io.StringIO, user: str | None) -> None:
    logs.access(
        request_id="r-1",
        method="GET",
        path='/a"b\\c',
        status=200,
        duration=0.0012345,
        user=user,
        route='regex:^/x"\\d',
        decision="allow",
        upstream_status=None,
    )
    line = sink.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1
    record = json.loads(line)
    assert record["user"] == user
    assert record["path"] == '/a"b\\c'
    assert record["route"] == 'regex:^/x"\\d'
    assert record["duration_ms"] == 1.234
    assert record["upstream_status"] is None
    assert record["logger"] == "gateway.access"


def test_access_is_silent_until_setup(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Before `logs.setup()` (tests, `check-config`, `explain`) an access line goes nowhere:
    not to stdout, not to stderr, not later at a flush, and the call sets nothing up."""
    monkeypatch.setattr(logs, "_access_sink", None)
    capfd.readouterr()
    logs.access(
        request_id="r", method="GET", path="/", status=200, duration=0.0, user=None,
        route="/", decision="public", upstream_status=200,
    )  # fmt: skip
    logs.flush()
    assert logs._access_sink is None
    assert capfd.readouterr() == ("", "")


def test_access_writes_once_set_up(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The other half: after `setup()` the same call is a line on stdout (so the silence
    above is the missing sink, not a broken `access`)."""
    monkeypatch.setattr(logs, "_access_sink", logs.LineSink(1))
    capfd.readouterr()
    logs.access(
        request_id="r", method="GET", path="/", status=200, duration=0.0, user=None,
        route="/", decision="public", upstream_status=200,
    )  # fmt: skip
    logs.flush()
    out, err = capfd.readouterr()
    assert json.loads(out)["request_id"] == "r"
    assert err == ""


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=4_102_444_800_000), min_size=1, max_size=8))
def test_access_time_is_the_millisecond_it_was_taken_in(milliseconds: list[int]) -> None:
    """The text is reused within a millisecond and a second: never across them."""
    for ms in milliseconds:
        for moment in (ms / 1000, (ms + 0.999) / 1000):
            whole, fraction = divmod(int(moment * 1000), 1000)
            expected = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            assert logs._iso(moment) == f"{expected}.{fraction:03d}Z"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.text(max_size=80))
def test_remembered_values_read_as_escaped_each_time(client: str, user: str) -> None:
    """The same value twice (the second time from the memo) and a bounded memo."""
    buffer = io.StringIO()
    previous = logs._access_sink
    logs._access_sink = buffer  # type: ignore[assignment]
    try:
        for _ in range(2):
            logs.access(
                request_id="r", method=client, path="/", status=200, duration=0.0, user=user,
                route=user, decision=client, upstream_status=None, client=client,
            )  # fmt: skip
    finally:
        logs._access_sink = previous
    for line in buffer.getvalue().splitlines():
        record = json.loads(line)
        assert (record["client"], record["method"], record["decision"]) == (client,) * 3
        assert (record["user"], record["route"]) == (user, user)
    assert len(logs._QUOTED) <= 4096
    assert all(len(value) <= 64 for value in logs._QUOTED)
