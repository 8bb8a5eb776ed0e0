"""Stored epoch milliseconds ↔ aware UTC datetimes (tasks/core/clock.py): the conversion every row read goes
through, exact on both sides of the epoch and at millisecond boundaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from flowledger.tasks.core.clock import from_ms, to_ms

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@given(st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_999))
def test_from_ms_is_the_epoch_plus_that_many_milliseconds(value: int) -> None:
    assert from_ms(value) == EPOCH + timedelta(milliseconds=value)
    assert from_ms(value).tzinfo is UTC
    assert to_ms(from_ms(value)) == value


def test_from_ms_at_boundaries() -> None:
    assert from_ms(0) == EPOCH
    assert from_ms(-1) == EPOCH - timedelta(milliseconds=1)
    assert from_ms(1_796_317_972_346) == datetime(2026, 12, 3, 17, 12, 52, 346_000, tzinfo=UTC)
