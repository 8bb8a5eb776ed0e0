"""How the sweep shares the database with other writers: write transactions sized to a target lock hold, and
on SQLite a pause after each, spent checkpointing and ended once a waiting writer has had its turn.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection

from flowledger.tasks.core.service import TaskService

# 15 ms, measured at 1 M records against 25 ms: a concurrent writer's p99 wait 19 ms instead of 34 ms and its
# worst 54–79 ms instead of 79–80 ms, for a pass ~10 % longer.
TARGET_HOLD = 0.015
# PostgreSQL locks only the rows a batch touches (no other writer wants a due or stale row), so its batches
# may run longer: fewer round trips and commits. Not much longer: another writer's commit flushes the WAL the
# sweep wrote before it, so big batches show up as slow commits elsewhere (1 M records: 0.25 s → worst 96–103 ms,
# 0.1 s → 85 ms, at the same pass time).
PG_TARGET_HOLD = 0.1
MAX_YIELD = 0.05


class Pacer:
    """Sizes write transactions to a target lock hold and, on SQLite, leaves the lock free between them.

    SQLite's busy handler polls a waiting writer at growing intervals and is not fair; after each write
    transaction the sweep pauses about as long as it held the lock (capped), so a concurrent writer always
    finds a free window. PostgreSQL locks rows, not the database: nobody waits on us there.
    """

    def __init__(self, service: TaskService, size: int, *, lo: int, hi: int) -> None:
        self.pause = not service.db.is_postgres
        self.target = PG_TARGET_HOLD if service.db.is_postgres else TARGET_HOLD
        self.size, self.lo, self.hi = size, lo, hi

    def done(self, started: float, n: int, lock: SqliteLockShare | None = None) -> None:
        held = time.monotonic() - started
        if n >= self.size:  # only a full batch says how long a full batch takes
            scaled = int(self.size * self.target / max(held, 1e-4))
            self.size = max(self.lo, min(self.hi, scaled, self.size * 2))
        if self.pause:
            # At most as long as we held it: half as long was measured at 1 M records, and a writer's p99 wait
            # rose from 34 to 55–79 ms for a pass only ~15 % shorter.
            pause = min(MAX_YIELD, held)
            if lock is None:
                time.sleep(pause)
            else:
                lock.pause(pause)


class SqliteLockShare:
    """What the sweep does with the lock free on SQLite: copy its pages back, then wait for a waiting writer.

    With the automatic checkpoint the commit that crosses 1,000 WAL pages copies them back to the database
    and syncs it: the sweep's commits did (the time counted as lock hold, which the pacer then paused for
    again), or a concurrent writer's commit did, and waited for it. A PASSIVE checkpoint (no write lock) in
    each pause keeps the WAL short for everyone.

    The pause then ends as soon as another connection commits (`PRAGMA data_version` moves): the writer that
    waited for the lock had its turn. A writer polls at growing intervals, so the full pause was mostly spent
    waiting for its next poll after it had already written; with no other writer it lasts as long as before.
    """

    POLL = 0.001

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    def mark(self) -> int:
        """Where the database stands; `others_committed` tells whether another connection committed since."""
        return int(self.driver.execute("PRAGMA data_version").fetchone()[0])

    def others_committed(self, mark: int) -> bool:
        return self.mark() != mark

    def pause(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        seen = self.mark()
        self.driver.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        while time.monotonic() < until and not self.others_committed(seen):
            time.sleep(min(self.POLL, max(0.0, until - time.monotonic())))


@contextlib.contextmanager
def lock_share(service: TaskService, conn: Connection) -> Iterator[SqliteLockShare | None]:
    """SQLite: the sweep's connection checkpoints in its pauses, not in its commits (the automatic checkpoint is
    off on it meanwhile and given back after); None elsewhere."""
    if not service.db.is_sqlite:
        yield None
        return
    driver: Any = conn.connection.driver_connection
    previous = int(driver.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
    driver.execute("PRAGMA wal_autocheckpoint = 0")
    try:
        yield SqliteLockShare(driver)
    finally:
        try:
            driver.execute(f"PRAGMA wal_autocheckpoint = {previous}")
        except sqlite3.Error:  # never hand a connection without its automatic checkpoint back to the pool
            conn.invalidate()
