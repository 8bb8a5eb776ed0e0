"""Generated ids are UUIDv7 strings: valid, unique, and ordered by creation within a process."""

from __future__ import annotations

import uuid

from flowledger.tasks.core.ids import new_id


def test_new_id_is_a_canonical_uuid7() -> None:
    raw = new_id()
    parsed = uuid.UUID(raw)
    assert str(parsed) == raw
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122


def test_new_ids_sort_in_creation_order_and_never_repeat() -> None:
    # Many ids fall in one millisecond: the counter, not the clock, must keep them ordered.
    ids = [new_id() for _ in range(20_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
