"""The inspection projection (REFERENCE §6.7): what maintenance *would* make of each task, without writing.

A cron-recovered terminal state first; else, when the task should be marked lost, the lost record; else the
task unchanged. Nothing is persisted, delivered or queued. `list`, `show`, audit, status and the maintenance
summaries all read tasks through here, so text and JSON show the same reconciled view (CONTRACT §6.6).
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from flowledger.tasks.core import rules
from flowledger.tasks.core.clock import to_ms
from flowledger.tasks.core.models import DEFAULT_RETENTION, Task
from flowledger.tasks.core.states import ACTIVE, DeliveryStatus, NotifyPolicy, Runtime, TaskStatus
from flowledger.tasks.health import cron_recovery
from flowledger.tasks.health.backing import LOST_GRACE, BackingView, Verdict, should_mark_lost
from flowledger.tasks.health.cron_recovery import Recovery

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement, Connection

    from flowledger.tasks.core.db import Database
    from flowledger.tasks.core.prepared import Prepared

# The SQL helpers below import SQLAlchemy when called: `project` is shared with the lean read path
# (tasks/health/sqlite_reads.py), which reconciles with the same rules and never loads the storage layer.

BATCH = 500


def recovered(task: Task, recovery: Recovery, retention: timedelta = DEFAULT_RETENTION) -> Task:
    return rules.prepare_write(recovery.apply_to(task), retention)


def marked_lost(task: Task, verdict: Verdict, now: datetime, retention: timedelta = DEFAULT_RETENTION) -> Task:
    """The lost record: ended now unless already ended, existing error kept, cleanup stamp if missing — what
    `rules.prepare_write` makes of those changes, built with one `replace` (the projection of every stale row of
    `status` and `tasks list` makes one; the changes and then `prepare_write` made two or three)."""
    created, started, last_event, ended = rules.normal_times(task.created_at, task.started_at, now,
                                                             task.ended_at or now)
    ended = ended or now  # never None (an end was given); `terminal_at` of the lost record is its end
    cleanup = task.cleanup_after if task.cleanup_after is not None else rules.cleanup_at(ended, retention)
    return task.replace(status=TaskStatus.LOST, created_at=created, started_at=started, last_event_at=last_event,
                        ended_at=ended, error=task.error or verdict.lost_error, cleanup_after=cleanup,
                        terminal_outcome=rules.normal_outcome(TaskStatus.LOST, task.terminal_outcome))


def project(task: Task, view: BackingView, recovery: Recovery | None,
            retention: timedelta = DEFAULT_RETENTION) -> Task:
    if recovery is not None:
        return recovered(task, recovery, retention)
    verdict = should_mark_lost(task, view)
    if verdict is not None:
        return marked_lost(task, verdict, view.now, retention)
    return task


def projected_status(task: Task, view: BackingView, recovery: Recovery | None) -> TaskStatus:
    """The status `project` would give `task`, without building the projected record (counts need only this)."""
    if recovery is not None:
        return recovery.status
    return TaskStatus.LOST if should_mark_lost(task, view) is not None else task.status


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
    from sqlalchemy import func

    from flowledger.tasks.core.tables import UTCMillis, task_runs

    c = task_runs.c
    return func.coalesce(c.last_event_at, c.started_at, c.created_at, type_=UTCMillis())


def active_may_change(now: datetime) -> ColumnElement[bool]:
    """Active rows whose projection can differ or that can be stale: past the shortest grace (the stale
    thresholds are longer), or cron (durable recovery needs no grace)."""
    from sqlalchemy import or_

    from flowledger.tasks.core.tables import task_runs

    return or_(activity() <= now - LOST_GRACE, task_runs.c.runtime == Runtime.CRON.value)


def _noteworthy(now: datetime) -> ColumnElement[bool]:
    """Rows that can produce an audit finding or a different projection; every other row is quiet. The
    definition: `stream_projected` reads the same rows kind by kind (`_noteworthy_kinds`).

    A fresh active row (inside the lost grace, not cron, no end time) is quiet: at a million records most active
    rows are, and projecting them is what used to make `status` slow.
    """
    from sqlalchemy import and_, or_

    from flowledger.tasks.core.tables import task_runs

    c = task_runs.c
    return or_(
        and_(c.status.in_([s.value for s in ACTIVE]), or_(active_may_change(now), c.ended_at.is_not(None))),
        c.status == TaskStatus.LOST.value,
        and_(c.delivery_status == DeliveryStatus.FAILED.value, c.notify_policy != NotifyPolicy.SILENT.value),
        and_(c.cleanup_after.is_(None), c.status.not_in([s.value for s in ACTIVE])),
        c.started_at < c.created_at,
        c.ended_at < c.started_at,
    )


# `_noteworthy` as one keyset query per kind of row, each answered by an index: the status index (active, lost)
# or a partial index that is empty on a healthy ledger (quiet_rows.QUIET_ROW_KINDS). One OR over them all was a read of
# every row (~0.3 s of `status` at a million records); the union of these is the same set of rows.
# Built on first use, like the SQL helpers above: the lean read path never needs them.
@functools.cache
def _kind_statements() -> tuple[Prepared, tuple[Prepared, ...]]:
    from sqlalchemy import bindparam, text

    from flowledger.tasks.core import store
    from flowledger.tasks.core.quiet_rows import QUIET_ROW_KINDS
    from flowledger.tasks.core.tables import task_runs

    by_status = store.keyset_select(task_runs.c.status == bindparam("b_status"))
    return by_status, tuple(store.keyset_select(text(where)) for where in QUIET_ROW_KINDS.values())


def _noteworthy_kinds() -> list[tuple[Prepared, dict[str, Any]]]:
    by_status, quiet = _kind_statements()
    return [(by_status, {"b_status": TaskStatus.LOST.value}), *((kind, {}) for kind in quiet)]


def _kind_rows(db: Database, kind: Prepared, params: dict[str, Any], batch: int) -> Iterator[tuple[int, Task]]:
    """(seq, task) of one kind in seq order, one short read transaction per keyset batch."""
    from flowledger.tasks.core import store

    after = 0
    while True:
        with db.read() as conn:
            rows = store.keyset_rows(conn, kind, {**params, "b_after": after, "b_limit": batch})
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1][0]


def due_rows(db: Database, now: datetime, batch: int) -> Iterator[tuple[int, Task]]:
    """(seq, task) of the active rows that need a look — past the lost grace, cron or ended (quiet_rows.ACTIVE_DUE,
    `active_may_change` and the ended ones) — in seq order: their seqs from one range of the due index, then the
    rows a batch at a time by primary key, each batch in a short read transaction that tests them again (a row
    that stopped being due meanwhile is left out, as a keyset read would)."""
    from sqlalchemy import select, text

    from flowledger.tasks.core import store
    from flowledger.tasks.core.quiet_rows import ACTIVE_DUE_WHERE
    from flowledger.tasks.core.tables import task_runs

    due = text(ACTIVE_DUE_WHERE).bindparams(b_stale_before=to_ms(now - LOST_GRACE))
    with db.read() as conn:
        seqs = [int(r[0]) for r in conn.execute(select(task_runs.c.seq).where(due).order_by(task_runs.c.seq))]
    for start in range(0, len(seqs), batch):
        chunk = seqs[start:start + batch]
        with db.read() as conn:
            stmt = store.task_select().where(task_runs.c.seq.in_(chunk), due)
            yield from ((int(r._mapping["seq"]), store.row_to_task(r))
                        for r in conn.execute(stmt.order_by(task_runs.c.seq)).all())


def stream_projected(db: Database, now: datetime, *, authoritative: bool,
                     retention: timedelta = DEFAULT_RETENTION, batch: int = BATCH
                     ) -> Iterator[tuple[Task, Task]]:
    """(stored, projected) for every noteworthy task in seq order, each once; memory stays at a batch per kind.

    A row that matches several kinds is met once per kind with the same seq: the merge puts those side by side
    and the first is kept.
    """
    streams = [due_rows(db, now, batch), *(_kind_rows(db, kind, params, batch) for kind, params in _noteworthy_kinds())]
    for stored in once_by_seq(streams, batch):
        yield from _projected(db, stored, now, authoritative, retention)


def once_by_seq(streams: Iterable[Iterator[tuple[int, Task]]], batch: int) -> Iterator[list[Task]]:
    """Streams of (seq, task), each in seq order, merged into batches of tasks in seq order, each task once (a row
    that matches several kinds comes once per kind with the same seq: the merge puts those side by side). Shared
    by both doors' noteworthy reads (here and tasks/health/sqlite_reads.py)."""
    pending: list[Task] = []
    last = None
    for seq, task in heapq.merge(*streams, key=lambda pair: pair[0]):
        if seq == last:
            continue
        last = seq
        pending.append(task)
        if len(pending) >= batch:
            yield pending
            pending = []
    if pending:
        yield pending


def _projected(db: Database, stored: list[Task], now: datetime, authoritative: bool, retention: timedelta
               ) -> Iterator[tuple[Task, Task]]:
    with db.read() as conn:
        projected = project_batch(conn, stored, now, authoritative=authoritative, retention=retention)
    return zip(stored, projected, strict=True)


def stream_newest(db: Database, now: datetime, *, runtime: Runtime | None, authoritative: bool,
                  retention: timedelta = DEFAULT_RETENTION, batch: int = BATCH) -> Iterator[list[Task]]:
    """Projected tasks newest first, one page per short read transaction (keyset on the created index)."""
    from sqlalchemy import and_, or_

    from flowledger.tasks.core import store
    from flowledger.tasks.core.tables import task_runs

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
