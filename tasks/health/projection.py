"""The inspection projection (REFERENCE §6.7): what maintenance *would* make of each task, without writing.

A cron-recovered terminal state first; else, when the task should be marked lost, the lost record; else the
task unchanged. Nothing is persisted, delivered or queued. `list`, `show`, audit, status and the maintenance
summaries all read tasks through here, so text and JSON show the same reconciled view (CONTRACT §6.6).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, func, or_

from flowledger.tasks.core import rules, store
from flowledger.tasks.core.db import Database
from flowledger.tasks.core.models import DEFAULT_RETENTION, Task
from flowledger.tasks.core.states import ACTIVE, DeliveryStatus, NotifyPolicy, Runtime, TaskStatus
from flowledger.tasks.core.tables import UTCMillis, task_runs
from flowledger.tasks.health import cron_recovery
from flowledger.tasks.health.backing import LOST_GRACE, BackingView, Verdict, should_mark_lost
from flowledger.tasks.health.cron_recovery import Recovery

BATCH = 500


def effective_cleanup_after(task: Task, retention: timedelta = DEFAULT_RETENTION) -> datetime:
    """The stored stamp, or the computed one; a lost task never outlives its computed retention."""
    computed = rules.cleanup_after_for(task, retention)
    if task.cleanup_after is None:
        return computed
    if task.status == TaskStatus.LOST:
        return min(task.cleanup_after, computed)
    return task.cleanup_after


def recovered(task: Task, recovery: Recovery, retention: timedelta = DEFAULT_RETENTION) -> Task:
    return rules.prepare_write(recovery.apply_to(task), retention)


def marked_lost(task: Task, verdict: Verdict, now: datetime, retention: timedelta = DEFAULT_RETENTION) -> Task:
    """The lost record: ended now unless already ended, existing error kept, cleanup stamp if missing."""
    lost = task.replace(status=TaskStatus.LOST, ended_at=task.ended_at or now, last_event_at=now,
                        error=task.error or verdict.lost_error)
    return rules.prepare_write(lost, retention)


def project(task: Task, view: BackingView, recovery: Recovery | None,
            retention: timedelta = DEFAULT_RETENTION) -> Task:
    if recovery is not None:
        return recovered(task, recovery, retention)
    verdict = should_mark_lost(task, view)
    if verdict is not None:
        return marked_lost(task, verdict, view.now, retention)
    return task


def project_batch(conn: Connection, tasks: Sequence[Task], now: datetime, *, authoritative: bool,
                  retention: timedelta = DEFAULT_RETENTION) -> list[Task]:
    """Project one batch with one prefetch of its backing and cron history."""
    view = BackingView.load(conn, tasks, now, authoritative=authoritative)
    recoveries = cron_recovery.load(conn, tasks)
    return [project(t, view, recoveries.get(t.task_id), retention) for t in tasks]


def project_all(conn: Connection, tasks: Sequence[Task], now: datetime, *, authoritative: bool,
                retention: timedelta = DEFAULT_RETENTION) -> list[Task]:
    out: list[Task] = []
    for chunk in chunks(tasks, BATCH):
        out.extend(project_batch(conn, chunk, now, authoritative=authoritative, retention=retention))
    return out


def chunks(items: Sequence[Task], size: int) -> Iterator[Sequence[Task]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def activity() -> ColumnElement[Any]:
    """`Task.last_activity_at` in SQL: the time the lost grace and the stale thresholds are measured from."""
    c = task_runs.c
    return func.coalesce(c.last_event_at, c.started_at, c.created_at, type_=UTCMillis())


def active_may_change(now: datetime) -> ColumnElement[bool]:
    """Active rows whose projection can differ or that can be stale: past the shortest grace (the stale
    thresholds are longer), or cron (durable recovery needs no grace)."""
    return or_(activity() <= now - LOST_GRACE, task_runs.c.runtime == Runtime.CRON.value)


def _noteworthy(now: datetime) -> ColumnElement[bool]:
    """Rows that can produce an audit finding or a different projection; every other row is quiet.

    A fresh active row (inside the lost grace, not cron, no end time) is quiet: at a million records most active
    rows are, and projecting them is what used to make `status` slow.
    """
    c = task_runs.c
    return or_(
        and_(c.status.in_([s.value for s in ACTIVE]), or_(active_may_change(now), c.ended_at.is_not(None))),
        c.status == TaskStatus.LOST.value,
        and_(c.delivery_status == DeliveryStatus.FAILED.value, c.notify_policy != NotifyPolicy.SILENT.value),
        and_(c.cleanup_after.is_(None), c.status.not_in([s.value for s in ACTIVE])),
        c.started_at < c.created_at,
        c.ended_at < c.started_at,
    )


def stream_projected(db: Database, now: datetime, *, authoritative: bool,
                     retention: timedelta = DEFAULT_RETENTION, batch: int = BATCH
                     ) -> Iterator[tuple[Task, Task]]:
    """(stored, projected) for every noteworthy task, in keyset batches of short read transactions."""
    after = 0
    where = _noteworthy(now)
    while True:
        with db.read() as conn:
            stmt = (store.task_select().where(task_runs.c.seq > after).where(where)
                    .order_by(task_runs.c.seq).limit(batch))
            rows = [(r._mapping["seq"], store.row_to_task(r)) for r in conn.execute(stmt)]
            if not rows:
                return
            stored = [t for _, t in rows]
            projected = project_batch(conn, stored, now, authoritative=authoritative, retention=retention)
        after = rows[-1][0]
        yield from zip(stored, projected, strict=True)


def stream_newest(db: Database, now: datetime, *, runtime: Runtime | None, authoritative: bool,
                  retention: timedelta = DEFAULT_RETENTION, batch: int = BATCH) -> Iterator[list[Task]]:
    """Projected tasks newest first, one page per short read transaction (keyset on the created index)."""
    c = task_runs.c
    last: tuple[datetime, int] | None = None
    while True:
        with db.read() as conn:
            stmt = store.task_select()
            if runtime is not None:
                stmt = stmt.where(c.runtime == runtime.value)
            if last is not None:
                stmt = stmt.where(or_(c.created_at < last[0], and_(c.created_at == last[0], c.seq < last[1])))
            rows = [(r._mapping["seq"], store.row_to_task(r)) for r in conn.execute(stmt.order_by(*store.NEWEST_FIRST)
                                                                                     .limit(batch))]
            if not rows:
                return
            projected = project_batch(conn, [t for _, t in rows], now, authoritative=authoritative,
                                      retention=retention)
        last = (rows[-1][1].created_at, rows[-1][0])
        yield projected
