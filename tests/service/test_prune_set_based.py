"""The set-based prune (tasks/health/prune.py) on both engines: batches named by a cleanup-index range, not id lists.

Many equal stamps (what a bulk load writes), rows that are stamped but not due interleaved with due ones, the
exact stamp boundary, the children deleted with their task and nobody else's, and on SQLite the checkpoints
moved into the pauses with the connection's automatic checkpoint given back afterwards.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from ledger_helpers import set_columns
from sqlalchemy import func, select

from flowledger import FrozenClock, Ledger
from flowledger.tasks.core.tables import task_delivery_state, task_events, task_runs
from flowledger.tasks.health import maintenance, prune, sweep_pacing

MS = timedelta(milliseconds=1)
RETENTION = timedelta(days=7)


def count(ledger: Ledger, table: Any, task_ids: Sequence[str]) -> int:
    with ledger.db.read() as conn:
        stmt = select(func.count()).select_from(table).where(table.c.task_id.in_(list(task_ids)))
        return int(conn.execute(stmt).scalar_one())


def finished(ledger: Ledger, n: int, label: str) -> list[str]:
    return [ledger.tasks.create(runtime="cli", task=f"{label} {i}", owner_key="agent:main:main", status="succeeded",
                                requester_origin={"channel": "webhook", "to": "x"}).task_id for i in range(n)]


def test_equal_stamps_across_many_batches_prune_exactly_the_due_rows(ledger: Ledger, clock: FrozenClock) -> None:
    """One stamp shared by every due row, not-due rows between them in seq order: batches of 3 resume inside the
    run of equal stamps, take each due row once and leave the others with their history."""
    due_ids: list[str] = []
    kept_ids: list[str] = []
    for i in range(4):
        due_ids += finished(ledger, 3, f"due {i}")
        kept_ids += finished(ledger, 1, f"kept {i}")
        active = ledger.tasks.create(runtime="cli", task=f"active {i}", owner_key="agent:main:main", run_id=f"r{i}",
                                     status="running", started_at=clock.now())
        kept_ids.append(active.task_id)
    stamp = clock.now() + RETENTION
    for task_id in due_ids:
        set_columns(ledger, task_id, cleanup_after=stamp)
    for task_id in kept_ids:  # stamped at the same instant, but not due: one later, or still active
        set_columns(ledger, task_id, cleanup_after=stamp + MS if "kept" in ledger.tasks.get(task_id).task else stamp)
    clock.advance(RETENTION - MS)
    assert maintenance.prune_due(ledger.tasks, clock.now(), batch=3) == 0
    clock.advance(MS)  # now == stamp: due
    assert maintenance.count_due(ledger.tasks, clock.now()) == len(due_ids)
    assert maintenance.prune_due(ledger.tasks, clock.now(), batch=3) == len(due_ids)
    for table in (task_runs, task_events, task_delivery_state):
        assert count(ledger, table, due_ids) == 0
    assert count(ledger, task_runs, kept_ids) == len(kept_ids)
    assert count(ledger, task_events, kept_ids) == len(kept_ids)
    assert count(ledger, task_delivery_state, kept_ids) == 4  # the finished ones carry an origin
    assert maintenance.prune_due(ledger.tasks, clock.now(), batch=3) == 0


def test_a_batch_bound_steps_over_rows_that_are_not_due(ledger: Ledger, clock: FrozenClock) -> None:
    ids = finished(ledger, 5, "done")
    for task_id, days in zip(ids, [-2, +1, -2, -1, -3], strict=True):
        set_columns(ledger, task_id, cleanup_after=clock.now() + timedelta(days=days))
    where = maintenance.due(clock.now())
    with ledger.db.read() as conn:
        first = prune.batch_bound(conn, where, None, 2)  # in stamp order: ids[4] (-3 d), then ids[0] (-2 d)
        assert first is not None and first[0] == clock.now() - timedelta(days=2)
        second = prune.batch_bound(conn, where, first, 2)  # ids[2] (-2 d, later seq), ids[3] (-1 d)
        assert second is not None and second[0] == clock.now() - timedelta(days=1)
        assert prune.batch_bound(conn, where, second, 1) is None  # ids[1] is not due
    assert maintenance.prune_due(ledger.tasks, clock.now(), batch=2) == 4
    assert [t for t in ids if ledger.tasks.get(t) is not None] == [ids[1]]


def test_sqlite_prune_checkpoints_in_its_pauses_and_gives_the_automatic_checkpoint_back(
        sqlite_ledger: Ledger, clock: FrozenClock) -> None:
    ids = finished(sqlite_ledger, 6, "done")
    clock.advance(RETENTION)
    with sqlite_ledger.db.write_connection() as conn:
        driver: Any = conn.connection.driver_connection
        with sweep_pacing.lock_share(sqlite_ledger.tasks, conn) as share:
            assert share is not None
            assert driver.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
            mark = share.mark()
            assert not share.others_committed(mark)
            finished(sqlite_ledger, 1, "another connection")
            assert share.others_committed(mark)
            share.pause(0.0)  # checkpoints, then returns: no time left
        assert driver.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    assert maintenance.prune_due(sqlite_ledger.tasks, clock.now(), batch=2) == 6
    assert count(sqlite_ledger, task_runs, ids) == 0
    with sqlite_ledger.db.write_connection() as conn:  # the pooled connection the prune used
        assert conn.connection.driver_connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000


def test_sqlite_pause_ends_when_another_writer_commits(sqlite_ledger: Ledger) -> None:
    """The pause is for a waiting writer: once one has committed, the sweep takes the lock again."""
    with sqlite_ledger.db.write_connection() as conn, sweep_pacing.lock_share(sqlite_ledger.tasks, conn) as share:
        assert share is not None
        writer = threading.Thread(target=lambda: (time.sleep(0.1), finished(sqlite_ledger, 1, "writer")))
        started = time.monotonic()
        writer.start()
        share.pause(60.0)
        writer.join()
        assert time.monotonic() - started < 30.0


def test_a_pruned_task_takes_its_payload_and_generation_media_rows_along(ledger: Ledger, clock: FrozenClock) -> None:
    """A task's per-task rows go with it, by the set-based prune and by the per-task delete alike: a queued
    task's payload and a generation job's items would otherwise be left behind forever, nobody's rows."""
    from sqlalchemy import insert

    from flowledger.tasks.core import store
    from flowledger.tasks.core.tables import generation_media, task_payloads

    due_ids = finished(ledger, 3, "due")
    kept_ids = finished(ledger, 1, "kept")
    by_hand = finished(ledger, 1, "by hand")
    with ledger.db.write() as conn:
        for task_id in [*due_ids, *kept_ids, *by_hand]:
            conn.execute(insert(task_payloads).values(task_id=task_id, argv_json='["true"]'))
            conn.execute(insert(generation_media).values(task_id=task_id, item_key="k", item="https://x/1.png",
                                                         session_key="agent:main:main"))
    stamp = clock.now() + RETENTION
    for task_id in due_ids:
        set_columns(ledger, task_id, cleanup_after=stamp)
    for task_id in [*kept_ids, *by_hand]:
        set_columns(ledger, task_id, cleanup_after=stamp + MS)
    clock.advance(RETENTION)
    assert maintenance.prune_due(ledger.tasks, clock.now(), batch=2) == len(due_ids)
    with ledger.db.write() as conn:
        assert store.delete_tasks(conn, by_hand) == 1
    for table in (task_payloads, generation_media):
        assert count(ledger, table, due_ids) == 0
        assert count(ledger, table, by_hand) == 0
        assert count(ledger, table, kept_ids) == 1
