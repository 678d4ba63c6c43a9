"""The access line is hand-assembled JSON: it must stay valid JSON whatever the values."""

from __future__ import annotations

import io
import json

import pytest

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


def test_access_is_silent_until_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "_access_sink", None)
    logs.access(
        request_id="r", method="GET", path="/", status=200, duration=0.0, user=None,
        route="/", decision="public", upstream_status=200,
    )  # fmt: skip
