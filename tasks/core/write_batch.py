"""What the writes of one batch transaction (tasks/core/batch_transitions.py) share, kept on its connection.

On PostgreSQL each statement is a round trip, and a batch of N task writes ran three or four per task that only
repeat what the batch already knows: its history rows (inserted one by one, though nothing in the transaction
reads them back), the run-scope advisory lock (taken for the whole batch first, then again per create) and its
managed flow's row (read again for every task write, though the first read locked it for the rest of the
transaction). While a batch is open on a connection:

- `events`: the history rows appended so far, in order; the batch inserts them in one multi-row statement just
  before it commits (`store.append_event` adds here instead of writing). Each task keeps its own rows, in the
  order they were appended; the transaction still commits them with the task rows, whole or not at all.
- `locked`: run-scope keys whose advisory lock this transaction holds (`db.serialize_on` skips them).
- `quiet_flows`: flows whose sync this transaction showed to be a no-op for any later task write in it (a
  managed flow with no pending cancel, or already ended: task writes never move it), read under the row lock,
  so nobody else can change them before the commit (flows/mirror.py).

Nothing here outlives the transaction: the scope is closed (and forgotten) when the batch's unit returns or
raises, and a unit run again after a lock error opens a fresh one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

_KEY = "flowledger.write_batch"


@dataclass(slots=True)
class WriteBatch:
    events: list[Any] = field(default_factory=list)  # TaskEvent (models imports nothing from here either way)
    locked: set[str] = field(default_factory=set)
    quiet_flows: set[str] = field(default_factory=set)


def current(conn: Connection) -> WriteBatch | None:
    """The batch open on this connection, if any."""
    batch: WriteBatch | None = conn.info.get(_KEY)
    return batch


@contextlib.contextmanager
def opened(conn: Connection) -> Iterator[WriteBatch]:
    """Open a batch on `conn` for the body (the caller flushes `events` before it leaves)."""
    batch = conn.info[_KEY] = WriteBatch()
    try:
        yield batch
    finally:
        conn.info.pop(_KEY, None)
