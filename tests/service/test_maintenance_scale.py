"""The paths that keep the sweep, status and `tasks list` fast at a million records, on both engines: due rows
pruned set-based in several transactions, state changes written in batches with their history and hooks, only
rows that can change read back into Python (fresh active rows stay in SQL), and a limited list read in pages."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from ledger_helpers import set_columns
from sqlalchemy import Connection, func, insert, select

from flowledger import FrozenClock, Ledger, TaskStatus
from flowledger.flows import health
from flowledger.tasks.core.clock import to_ms
from flowledger.tasks.core.errors import InvalidInput
from flowledger.tasks.core.service import Change, TaskHooks
from flowledger.tasks.core.tables import cron_run_log, task_delivery_state, task_events, task_runs
from flowledger.tasks.health import maintenance

MS = timedelta(milliseconds=1)
GRACE = timedelta(minutes=5)
RETENTION = timedelta(days=7)



def row_count(ledger: Ledger, table: Any, task_ids: Sequence[str]) -> int:
    with ledger.db.read() as conn:
        stmt = select(func.count()).select_from(table).where(table.c.task_id.in_(list(task_ids)))
        return int(conn.execute(stmt).scalar_one())


def done(ledger: Ledger, n: int, **kw: Any) -> list[str]:
    return [ledger.tasks.create(runtime="cli", task=f"done {i}", owner_key="agent:main:main", status="succeeded",
                                requester_origin={"channel": "webhook", "to": "x"}, **kw).task_id for i in range(n)]


def running(ledger: Ledger, n: int, *, runtime: str = "cli") -> list[str]:
    return [ledger.tasks.create(runtime=runtime, task=f"run {i}", owner_key="agent:main:main", run_id=f"r-{i}",
                                status="running", started_at=ledger.clock.now()).task_id for i in range(n)]


def test_due_rows_are_pruned_set_based_at_the_exact_stamp(ledger: Ledger, clock: FrozenClock) -> None:
    ids = done(ledger, 5)
    kept = done(ledger, 1)
    set_columns(ledger, kept[0], cleanup_after=clock.now() + RETENTION + MS)
    clock.advance(RETENTION - MS)
    assert maintenance.count_due(ledger.tasks, clock.now()) == 0
    clock.advance(MS)  # cleanup_after == now: due
    assert maintenance.count_due(ledger.tasks, clock.now()) == 5
    assert row_count(ledger, task_events, ids) == 5 and row_count(ledger, task_delivery_state, ids) == 5
    # A batch of 2 takes three transactions, each resuming after the last (stamp, seq) deleted: equal stamps too.
    assert maintenance.prune_due(ledger.tasks, clock.now(), batch=2) == 5
    for table in (task_runs, task_events, task_delivery_state):
        assert row_count(ledger, table, ids) == 0
    assert ledger.tasks.get(kept[0]) is not None
    assert maintenance.prune_due(ledger.tasks, clock.now()) == 0


def test_prune_batches_resume_in_stamp_order_across_mixed_stamps(ledger: Ledger, clock: FrozenClock) -> None:
    """Stamps out of creation order, ties, and a not-yet-due row between them: every due row goes exactly once."""
    ids = done(ledger, 8)
    offsets_days = [-3, -1, -1, -2, +1, -1, -3, 0]  # relative to now; 0 is due (cleanup_after == now)
    for task_id, days in zip(ids, offsets_days, strict=True):
        set_columns(ledger, task_id, cleanup_after=clock.now() + timedelta(days=days))
    assert maintenance.prune_due(ledger.tasks, clock.now(), batch=2) == 7
    assert [t for t in ids if ledger.tasks.get(t) is not None] == [ids[4]]
    assert row_count(ledger, task_events, ids) == 1 and row_count(ledger, task_delivery_state, ids) == 1


def test_lost_rows_are_pruned_by_their_stamp_or_their_computed_retention(ledger: Ledger,
                                                                          clock: FrozenClock) -> None:
    [stamped_past, computed_past] = running(ledger, 2)
    clock.advance(GRACE)
    assert ledger.maintenance(apply=True).maintenance.tasks.reconciled == 2
    # One stored stamp already passed (set-based), one pushed out but past its computed retention (per task).
    set_columns(ledger, stamped_past, cleanup_after=clock.now() + timedelta(days=1))
    set_columns(ledger, computed_past, cleanup_after=clock.now() + timedelta(days=30))
    clock.advance(RETENTION)
    due = maintenance.count_due(ledger.tasks, clock.now())
    assert due == 1
    preview = ledger.maintenance(apply=False).maintenance.tasks.to_json()
    assert preview == {"reconciled": 0, "recovered": 0, "cleanup_stamped": 0, "pruned": 2}
    assert ledger.maintenance(apply=True).maintenance.tasks.to_json() == preview
    assert ledger.tasks.get(stamped_past) is None and ledger.tasks.get(computed_past) is None


class Recorder(TaskHooks):
    def __init__(self) -> None:
        self.written: list[Change] = []
        self.committed: list[Change] = []

    def on_written(self, conn: Connection, change: Change, now: datetime) -> None:
        self.written.append(change)

    def after_commit(self, changes: Sequence[Change]) -> None:
        self.committed.extend(changes)


def test_lost_marked_in_batches_with_history_and_hooks(ledger: Ledger, clock: FrozenClock) -> None:
    ids = running(ledger, 7)
    recorder = Recorder()
    ledger.tasks.hooks.members.append(recorder)  # type: ignore[attr-defined]
    clock.advance(GRACE)
    result = maintenance.sweep(ledger.tasks, clock.now(), apply=True, authoritative=False, read_batch=3,
                               write_batch=2)
    assert result.counts.reconciled == 7
    # Later lost -> lost writes are delivery recording the notices the after-commit hooks sent.
    marked = [c for c in recorder.written if c.previous is not None and c.previous.status == TaskStatus.RUNNING]
    assert sorted(c.task.task_id for c in marked) == sorted(ids)
    committed = [c for c in recorder.committed if c.previous is not None and c.previous.status == TaskStatus.RUNNING]
    assert sorted(c.task.task_id for c in committed) == sorted(ids)
    for change in committed:
        assert change.previous is not None and change.previous.status == TaskStatus.RUNNING
        assert change.event is not None and change.event.kind == "lost"
    for task_id in ids:
        lost = ledger.tasks.require(task_id)
        assert lost.status == TaskStatus.LOST and lost.error == "backing session missing"
        assert lost.cleanup_after == clock.now() + RETENTION
        assert [(e.kind, e.previous_status) for e in ledger.tasks.events(task_id)] == [
            ("running", None), ("lost", "running")]


def test_stamp_written_in_batches_changes_only_the_stamp(ledger: Ledger, clock: FrozenClock) -> None:
    ids = done(ledger, 3)
    for task_id in ids:
        set_columns(ledger, task_id, cleanup_after=None)
    before = {t: ledger.tasks.require(t) for t in ids}
    assert ledger.maintenance(apply=True).maintenance.tasks.cleanup_stamped == 3
    for task_id in ids:
        assert ledger.tasks.require(task_id) == before[task_id].replace(cleanup_after=clock.now() + RETENTION)
        assert [e.kind for e in ledger.tasks.events(task_id)] == ["succeeded"]


def test_fresh_active_rows_are_quiet_until_the_grace(ledger: Ledger, clock: FrozenClock) -> None:
    ids = running(ledger, 3)
    clock.advance(GRACE - MS)
    assert [t for _, t in health.stream_projected(ledger.db, clock.now(), authoritative=False)] == []
    assert health.status(ledger).tasks.running == 3
    clock.advance(MS)
    projected = [t for _, t in health.stream_projected(ledger.db, clock.now(), authoritative=False)]
    assert sorted(t.task_id for t in projected) == sorted(ids)
    assert {t.status for t in projected} == {TaskStatus.LOST}
    assert health.status(ledger).tasks.to_json()["by_status"]["lost"] == 3


def test_fresh_active_row_with_an_end_time_is_still_audited(ledger: Ledger, clock: FrozenClock) -> None:
    [task_id] = running(ledger, 1)
    set_columns(ledger, task_id, ended_at=clock.now())
    codes = [f.code for f in health.run_audit(ledger).findings]
    assert codes == ["inconsistent_timestamps"]


def test_fresh_cron_run_is_recovered_inside_the_grace(ledger: Ledger, clock: FrozenClock) -> None:
    started = clock.now() - timedelta(seconds=30)
    task = ledger.tasks.create(runtime="cron", task="nightly", run_id=f"cron:job-f:{to_ms(started)}",
                               source_id="job-f", status="running", started_at=started)
    with ledger.db.write() as conn:
        conn.execute(insert(cron_run_log).values(job_id="job-f", action="finished", run_at=started, status="ok",
                                                 duration_ms=1000, ts=started + timedelta(seconds=1)))
    assert health.status(ledger).tasks.to_json()["by_status"]["succeeded"] == 1
    assert ledger.maintenance(apply=True).maintenance.tasks.recovered == 1
    assert ledger.tasks.require(task.task_id).status == TaskStatus.SUCCEEDED


def test_project_list_with_a_limit_reads_pages_newest_first(ledger: Ledger, clock: FrozenClock,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "LIST_PAGE", 1)
    ids = running(ledger, 3) + done(ledger, 3)  # same created_at: ties fall back to insertion order
    clock.advance(GRACE)
    every = health.project_list(ledger)
    assert [t.task_id for t in every] == list(reversed(ids))
    assert [t.task_id for t in health.project_list(ledger, limit=4)] == [t.task_id for t in every[:4]]
    # The status filter applies to the projected status, before the limit.
    lost = health.project_list(ledger, status="lost", limit=2)
    assert [t.task_id for t in lost] == [ids[2], ids[1]] and {t.status for t in lost} == {TaskStatus.LOST}
    assert health.project_list(ledger, runtime="acp", limit=5) == []
    assert len(health.project_list(ledger, limit=100)) == 6
    for bad in (0, -1, True):
        with pytest.raises(InvalidInput):
            health.project_list(ledger, limit=bad)
