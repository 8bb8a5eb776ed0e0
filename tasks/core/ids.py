"""New record ids: UUIDv7 strings (RFC 9562) — time-ordered, with 74 random bits.

The reference system uses random v4 ids. Ordered ids keep every index keyed by an id (task_runs.task_id,
task_events.task_id, the delivery row, run ids, parent_flow_id) appending at its right edge, and make the rows a
sweep prunes together — old ones — neighbours in those indexes: pruning 300,000 of 1,000,000 records went from
~30 s to ~5 s of SQLite work (docs/performance.md). Ids stay opaque strings: any id a caller supplies is kept.
"""

from __future__ import annotations

import uuid6


def new_id() -> str:
    """A fresh UUIDv7 in canonical text form; monotonic within this process."""
    return str(uuid6.uuid7())
