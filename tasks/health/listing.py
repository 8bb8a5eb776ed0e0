"""Filtered, paged task listings over the reconciled view, and their counts (CONTRACT §7 "Lookups and listings").

The status filter applies to the projected status (CONTRACT §6.6), the other filters to stored columns, each
served by an index (runtime+status, owner_key, parent_flow_id, created_at+seq). Counting every match stays
cheap at a million records: one grouped COUNT of the stored statuses with the same WHERE, corrected by
projecting only the active rows whose projection can differ (`active_may_change`) — the same few rows `status`
projects. Projection only ever moves an active task to a terminal status, which bounds what a page must read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select

from flowledger.tasks.core import counts as kept_counts
from flowledger.tasks.core import store
from flowledger.tasks.core.db import Database
from flowledger.tasks.core.models import DEFAULT_RETENTION, Task
from flowledger.tasks.core.states import ACTIVE, Runtime, TaskStatus
from flowledger.tasks.core.tables import task_runs
from flowledger.tasks.health import cron_recovery
from flowledger.tasks.health.backing import BackingView
from flowledger.tasks.health.projection import BATCH, active_may_change, project_batch, projected_status

_ACTIVE = [s.value for s in ACTIVE]
COUNT_BATCH = 2000
# Up to this many candidate rows, sorting them newest first beats walking the created index for a page.
SORT_AT_MOST = 20_000


@dataclass(frozen=True, slots=True)
class TaskFilter:
    runtime: Runtime | None = None
    status: TaskStatus | None = None  # the projected status
    owner_key: str | None = None
    parent_flow_id: str | None = None
    since: datetime | None = None  # created at or after

    def stored_where(self) -> list[ColumnElement[bool]]:
        """Every filter but the status, on stored columns."""
        c = task_runs.c
        where: list[ColumnElement[bool]] = []
        if self.runtime is not None:
            where.append(c.runtime == self.runtime.value)
        if self.owner_key is not None:
            where.append(c.owner_key == self.owner_key)
        if self.parent_flow_id is not None:
            where.append(c.parent_flow_id == self.parent_flow_id)
        if self.since is not None:
            where.append(c.created_at >= self.since)
        return where

    def candidate_where(self, *, by_status_index: bool = True) -> list[ColumnElement[bool]]:
        """Stored rows that can project to the wanted status: that status; for `lost` also every active row,
        for another terminal status also the active cron rows (the projection never moves a row otherwise).

        Without `by_status_index` the status test is written so no engine can answer it from the status index
        (`status || ''`): a newest-first page of a common status then walks the created index and stops after
        a page, instead of sorting every row of that status for each page.
        """
        where = self.stored_where()
        if self.status is None:
            return where
        column: ColumnElement[str] = task_runs.c.status if by_status_index else task_runs.c.status.concat("")
        if self.status in ACTIVE:
            where.append(column == self.status.value)
        elif self.status == TaskStatus.LOST:  # any active task may be marked lost
            where.append(column.in_([self.status.value, *_ACTIVE]))
        else:  # only cron recovery turns an active task into another terminal status
            where.append(or_(column == self.status.value,
                             and_(column.in_(_ACTIVE), task_runs.c.runtime == Runtime.CRON.value)))
        return where


@dataclass(frozen=True, slots=True)
class Projector:
    """What projecting needs: the clock's `now`, the ledger's authority and retention."""

    now: datetime
    authoritative: bool
    retention: timedelta = DEFAULT_RETENTION

    def project(self, conn: Any, tasks: list[Task]) -> list[Task]:
        return project_batch(conn, tasks, self.now, authoritative=self.authoritative, retention=self.retention)

    def statuses(self, conn: Any, tasks: list[Task]) -> list[TaskStatus]:
        """The projected status of each task, as `project` would give it, without building the records."""
        view = BackingView.load(conn, tasks, self.now, authoritative=self.authoritative)
        recoveries = cron_recovery.load(conn, tasks)
        return [projected_status(task, view, recoveries.get(task.task_id)) for task in tasks]


def page(db: Database, query: TaskFilter, projector: Projector, *, limit: int | None, offset: int = 0) -> list[Task]:
    """Newest first, reconciled, `offset` matches skipped, at most `limit` (None = all)."""
    if query.status is None:  # the stored order is the answer: let the database skip and cut
        with db.read() as conn:
            stmt = store.task_select().where(*query.stored_where()).order_by(*store.NEWEST_FIRST).offset(offset)
            rows = [store.row_to_task(r) for r in conn.execute(stmt.limit(limit) if limit is not None else stmt)]
            return [t for chunk in _chunks(rows) for t in projector.project(conn, chunk)]
    with db.read() as conn:  # few candidates: sort them (status index); many: walk the created index
        candidates = int(conn.execute(select(func.count()).select_from(task_runs)
                                      .where(*query.candidate_where())).scalar() or 0)
    wanted = (limit or candidates) + offset
    selective = candidates <= max(SORT_AT_MOST, 20 * wanted)
    out: list[Task] = []
    skipped = 0
    for batch in _newest(db, query.candidate_where(by_status_index=selective), projector):
        for task in batch:
            if task.status != query.status:
                continue
            if skipped < offset:
                skipped += 1
                continue
            out.append(task)
            if limit is not None and len(out) >= limit:
                return out
    return out


def count_by_status(db: Database, query: TaskFilter, projector: Projector) -> dict[str, int]:
    """Projected status -> count over every task matching the filters but the status.

    Only the active rows whose projection can differ are read, one active status at a time: a keyset on
    (status, seq) walks the status index in order (both statuses at once made SQLite sort every active row
    again for each batch), and only their projected *status* is computed, never the projected record.
    """
    where = query.stored_where()
    counts = {s.value: 0 for s in TaskStatus}
    with db.read() as conn:
        if where:
            stmt = select(task_runs.c.status, func.count()).where(*where).group_by(task_runs.c.status)
            tallies: list[tuple[str, int]] = [(str(s), int(n)) for s, n in conn.execute(stmt)]
        else:  # unfiltered: the counts the writing transactions keep (a few rows, not a scan of every task)
            tallies = [(status, n) for status, _runtime, n in kept_counts.read(conn)]
        for status, count in tallies:
            counts[status] = counts.get(status, 0) + count
    for active in ACTIVE:
        changing = [*where, task_runs.c.status == active.value, active_may_change(projector.now)]
        after = 0
        while True:
            with db.read() as conn:
                stmt = (store.task_select().where(task_runs.c.seq > after, *changing).order_by(task_runs.c.seq)
                        .limit(COUNT_BATCH))
                rows = [(r._mapping["seq"], store.row_to_task(r)) for r in conn.execute(stmt)]
                if not rows:
                    break
                stored = [t for _, t in rows]
                for status in projector.statuses(conn, stored):
                    if status != active:
                        counts[active.value] -= 1
                        counts[status.value] += 1
            after = rows[-1][0]
    return counts


def _newest(db: Database, where: list[ColumnElement[bool]], projector: Projector) -> Iterator[list[Task]]:
    """Projected pages newest first, one short read transaction each (keyset on the created index)."""
    c = task_runs.c
    last: tuple[datetime, int] | None = None
    while True:
        with db.read() as conn:
            stmt = store.task_select().where(*where)
            if last is not None:
                stmt = stmt.where(or_(c.created_at < last[0], and_(c.created_at == last[0], c.seq < last[1])))
            rows = [(r._mapping["seq"], store.row_to_task(r))
                    for r in conn.execute(stmt.order_by(*store.NEWEST_FIRST).limit(BATCH))]
            if not rows:
                return
            projected = projector.project(conn, [t for _, t in rows])
        last = (rows[-1][1].created_at, rows[-1][0])
        yield projected


def _chunks(tasks: list[Task]) -> Iterator[list[Task]]:
    for start in range(0, len(tasks), BATCH):
        yield tasks[start:start + BATCH]
