"""Duration strings: the one grammar for timeouts and schedules."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowledger.tasks.core.durations import format_duration, parse_duration
from flowledger.tasks.core.errors import EXIT_USAGE, InvalidInput


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("1s", timedelta(seconds=1)),
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d2h3m4s5ms", timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=5)),
        ("90s", timedelta(seconds=90)),
        ("  10M ", timedelta(minutes=10)),
        ("1m500ms", timedelta(minutes=1, milliseconds=500)),
    ],
)
def test_parse_accepts(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "   ", "5", "5x", "m", "-5m", "1.5h", "5 m", "1h 30m", "30m1h", "1m1m", "5mm", "1w", "ms", "1h30"],
)
def test_parse_rejects_with_one_line(text: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_duration(text)
    assert info.value.exit_code == EXIT_USAGE
    assert "\n" not in info.value.message
    assert info.value.message.startswith("Invalid duration")


def test_zero_is_refused_unless_allowed() -> None:
    with pytest.raises(InvalidInput, match="longer than zero"):
        parse_duration("0s")
    assert parse_duration("0s", allow_zero=True) == timedelta(0)


def test_message_names_what_was_parsed() -> None:
    with pytest.raises(InvalidInput, match=r"^Invalid --every 'soon'"):
        parse_duration("soon", what="--every")


def test_non_string_is_refused() -> None:
    with pytest.raises(InvalidInput):
        parse_duration(5)  # type: ignore[arg-type]


def test_absurdly_long_is_refused() -> None:
    with pytest.raises(InvalidInput, match="100 years"):
        parse_duration("99999999d")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (timedelta(hours=1, minutes=2), "1h2m"),
        (timedelta(seconds=45), "45s"),
        (timedelta(milliseconds=500), "500ms"),
        (timedelta(days=1, hours=3), "1d3h"),
        (timedelta(0), "0s"),
        (timedelta(microseconds=999), "0s"),
        (timedelta(seconds=-90), "-1m30s"),
    ],
)
def test_format(value: timedelta, expected: str) -> None:
    assert format_duration(value) == expected


@given(st.integers(min_value=1, max_value=10 * 365 * 86_400_000))
def test_format_round_trips(ms: int) -> None:
    value = timedelta(milliseconds=ms)
    assert parse_duration(format_duration(value)) == value
