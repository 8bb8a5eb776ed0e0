"""The per-task sweep (REFERENCE §6.5) as plan (pure) + apply (guarded writes).

For each task the first step that applies wins: cron recovery → lost → prune → cleanup stamp. The preview
counts the plan; `apply` applies the very same plan batch by batch, re-reading every record inside the write
transaction and skipping any that changed since it was planned (and re-checking backing before `lost`).

Stamped rows already due are pruned first, set-based by cleanup-index ranges (tasks/health/prune.py; nothing else can
happen to them this pass); every other row that can need work (active past the grace or cron, lost, unstamped)
is streamed in keyset batches, so memory stays flat and a steady-state pass is O(active + due), never a read of
every row into Python. Write transactions are sized to hold the lock ~15 ms, and on SQLite the sweep leaves
the lock free after each until a waiting writer has committed (at most about as long), checkpointing
meanwhile (tasks/health/sweep_pacing.py), so a concurrent writer never waits long.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, bindparam, func, or_, select

from flowledger.tasks.core import batch_writes, rules, store
from flowledger.tasks.core.clock import to_ms
from flowledger.tasks.core.hooks import Change
from flowledger.tasks.core.models import Task, TaskEvent
from flowledger.tasks.core.prepared import Prepared
from flowledger.tasks.core.rules import effective_cleanup_after
from flowledger.tasks.core.service import TaskService
from flowledger.tasks.core.states import ACTIVE, Runtime, TaskStatus, is_terminal
from flowledger.tasks.core.tables import task_delivery_state, task_events, task_runs
from flowledger.tasks.health import cron_recovery, prune, sweep_pacing
from flowledger.tasks.health.backing import LOST_GRACE, BackingView, judge, should_mark_lost
from flowledger.tasks.health.projection import activity, marked_lost, recovered
from flowledger.tasks.health.sweep_pacing import Pacer

log = logging.getLogger(__name__)

READ_BATCH = 500
# Write transactions start at these sizes and are then sized to hold the lock (tasks/health/sweep_pacing.py).
WRITE_BATCH = 50
PRUNE_BATCH = 500
MAX_WRITE_BATCH = 2000
MAX_PRUNE_BATCH = 5000
STALE_RUNNING = timedelta(minutes=30)
PRUNED_TABLES = (task_runs.name, task_events.name, task_delivery_state.name)
DIAGNOSTICS_LIMIT = 100
_ACTIVE_ORDER = (TaskStatus.QUEUED, TaskStatus.RUNNING)
_ACTIVE = sorted(s.value for s in ACTIVE)
_ACTIVE_OR_LOST = [*_ACTIVE, TaskStatus.LOST.value]


class Step(StrEnum):
    RECOVER = "recover"
    LOST = "lost"
    PRUNE = "prune"
    STAMP = "stamp"


@dataclass(frozen=True, slots=True)
class Planned:
    step: Step
    current: Task
    new: Task | None  # None for prune


@dataclass
class TaskCounts:
    reconciled: int = 0
    recovered: int = 0
    cleanup_stamped: int = 0
    pruned: int = 0

    def add(self, step: Step, n: int = 1) -> None:
        if step == Step.RECOVER:
            self.recovered += n
        elif step == Step.LOST:
            self.reconciled += n
        elif step == Step.PRUNE:
            self.pruned += n
        else:
            self.cleanup_stamped += n

    def to_json(self) -> dict[str, int]:
        return {"reconciled": self.reconciled, "recovered": self.recovered,
                "cleanup_stamped": self.cleanup_stamped, "pruned": self.pruned}


@dataclass
class SweepResult:
    counts: TaskCounts = field(default_factory=TaskCounts)
    stale_running: list[dict[str, Any]] = field(default_factory=list)
    stale_running_total: int = 0


def decide(task: Task, view: BackingView, recovery: cron_recovery.Recovery | None, now: datetime,
           retention: timedelta) -> Planned | None:
    """The one step maintenance takes for `task` now, or None (pure)."""
    if recovery is not None:
        return Planned(Step.RECOVER, task, recovered(task, recovery, retention))
    verdict = should_mark_lost(task, view)
    if verdict is not None:
        return Planned(Step.LOST, task, marked_lost(task, verdict, now, retention))
    if not is_terminal(task.status):
        return None
    if task.cleanup_after is not None or task.status == TaskStatus.LOST:
        if now >= effective_cleanup_after(task, retention):
            return Planned(Step.PRUNE, task, None)
    elif now - task.terminal_at >= retention:
        return Planned(Step.PRUNE, task, None)
    if task.cleanup_after is None:
        return Planned(Step.STAMP, task, rules.with_cleanup_stamp(task, retention))
    return None


def stale_running_entry(task: Task, view: BackingView) -> dict[str, Any] | None:
    """Diagnostics for a running task aged ≥ 30 min (REFERENCE §6.7): retained or would_reconcile, and why."""
    if task.status != TaskStatus.RUNNING:
        return None
    age = view.now - task.last_activity_at
    if age < STALE_RUNNING:
        return None
    verdict = judge(task, view)
    lost = should_mark_lost(task, view)
    reason = "lost_grace_pending" if not verdict.backed and lost is None else verdict.reason
    entry: dict[str, Any] = {"task_id": task.task_id, "runtime": task.runtime.value,
                             "decision": "would_reconcile" if lost is not None else "retained",
                             "reason": reason, "age_ms": to_ms(view.now) - to_ms(task.last_activity_at),
                             "child_session_key": task.child_session_key, "run_id": task.run_id}
    if lost is not None:
        entry["detail"] = lost.lost_error
    return entry


def _per_task_kinds(now: datetime, *, include_due: bool) -> list[tuple[Prepared, dict[str, Any]]]:
    """Each kind of row that needs a per-task decision, as one index-friendly keyset statement (status or cleanup
    index) with its parameters.

    The terminal kinds come before the active ones: a row this pass marks lost (or recovers) is then not read
    again as a lost (or terminal) row — nothing would happen to it (it was just stamped, so it is neither due
    nor unstamped), and at a million records that was 10,000 rows read and decided for nothing.
    """
    lost, lost_not_due, unstamped, active, due_rows = _kind_statements()
    at: dict[str, Any] = {"b_now": to_ms(now), "b_lost": TaskStatus.LOST.value}
    kinds: list[tuple[Prepared, dict[str, Any]]] = [(lost, at) if include_due else (lost_not_due, at),
             (unstamped, {f"b_not_{i}": s for i, s in enumerate(_ACTIVE_OR_LOST)})]
    kinds.extend((active, {"b_status": s.value, "b_stale_before": to_ms(now - LOST_GRACE),
                           "b_cron": Runtime.CRON.value}) for s in _ACTIVE_ORDER)
    if include_due:
        kinds.append((due_rows, {"b_now": to_ms(now), **{f"b_active_{i}": s for i, s in enumerate(_ACTIVE)}}))
    return kinds


# The kinds' statements run on the driver (store.keyset_select): SQLAlchemy's row processing cost as much as
# building the tasks. The SQL is the SQLAlchemy filters' own (`active_may_change`, `due`), with named parameters.
@functools.cache
def _kind_statements() -> tuple[Prepared, ...]:
    c = task_runs.c
    lost = c.status == bindparam("b_lost")
    return (
        store.keyset_select(lost),
        store.keyset_select(and_(lost, or_(c.cleanup_after.is_(None), c.cleanup_after > bindparam("b_now")))),
        store.keyset_select(and_(c.cleanup_after.is_(None),
                                 c.status.not_in([bindparam(f"b_not_{i}") for i in range(len(_ACTIVE_OR_LOST))]))),
        store.keyset_select(and_(c.status == bindparam("b_status"),
                                 or_(activity() <= bindparam("b_stale_before"), c.runtime == bindparam("b_cron")))),
        store.keyset_select(and_(c.cleanup_after <= bindparam("b_now"),
                                 c.status.not_in([bindparam(f"b_active_{i}") for i in range(len(_ACTIVE))]))),
    )


def due(now: datetime) -> ColumnElement[bool]:
    """Stamped terminal rows whose stamp has passed: pruned whatever else they hold (`decide` agrees).

    The status test is written as NOT IN on purpose: an engine without statistics would otherwise walk the
    status index over every terminal row instead of the cleanup_after range.
    """
    c = task_runs.c
    return and_(c.cleanup_after <= now, c.status.not_in(_ACTIVE))


def candidates(conn: Connection, kind: tuple[Prepared, dict[str, Any]], *, after_seq: int, batch: int
               ) -> list[tuple[int, Task]]:
    """One keyset batch of one kind of row; rows that cannot need work never leave the database."""
    statement, params = kind
    return store.keyset_rows(conn, statement, {**params, "b_after": after_seq, "b_limit": batch})


def plan_batches(service: TaskService, now: datetime, *, authoritative: bool, result: SweepResult,
                 batch: int = READ_BATCH, include_due: bool = True) -> Iterator[list[Planned]]:
    """Stream the plan, one read transaction per batch; diagnostics accumulate in `result`.

    With include_due=False the stamped rows already due are left out: `sweep` prunes them set-based.
    """
    for kind in _per_task_kinds(now, include_due=include_due):
        after = 0
        while True:
            with service.db.read() as conn:
                rows = candidates(conn, kind, after_seq=after, batch=batch)
                if not rows:
                    break
                tasks = [t for _, t in rows]
                view = BackingView.load(conn, tasks, now, authoritative=authoritative)
                recoveries = cron_recovery.load(conn, tasks)
            after = rows[-1][0]
            planned: list[Planned] = []
            for task in tasks:
                recovery = recoveries.get(task.task_id)
                step = decide(task, view, recovery, now, service.retention)
                if step is not None:
                    planned.append(step)
                entry = None if recovery is not None else stale_running_entry(task, view)
                if entry is not None:
                    result.stale_running_total += 1
                    if len(result.stale_running) < DIAGNOSTICS_LIMIT:
                        result.stale_running.append(entry)
            yield planned


def count_due(service: TaskService, now: datetime) -> int:
    with service.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(task_runs).where(due(now))).scalar_one())


def prune_due(service: TaskService, now: datetime, *, batch: int = PRUNE_BATCH) -> int:
    """Delete every due row with its delivery row and events, set-based, in short write transactions.

    Each transaction bounds its batch on the (cleanup_after, seq) index from where the last one stopped and
    deletes that range with the due filter (tasks/health/prune.py): what it deletes is due at that moment, and no id
    list is built. Resuming after the last bound matters on PostgreSQL, which keeps a deleted row's index entry
    until vacuum: re-reading the index from its start made every batch step over all the rows the pass had
    already deleted (a 1 M-record pass went from 35 s to 640 s when its batches were made five times smaller).
    """
    service.db.analyze_if_never_analyzed(PRUNED_TABLES)
    pacer = Pacer(service, batch, lo=min(batch, 50), hi=max(batch, MAX_PRUNE_BATCH))
    where = due(now)
    pruned = 0
    after: prune.Bound | None = None
    # One connection for the whole phase, each batch its own transaction on it. A bigger page cache, rarer WAL
    # checkpoints and a checkpoint after every batch were tried: no gain at 1 M rows. What decides the cost is
    # how many pages a batch dirties: with time-ordered ids (tasks/core/ids.py) the old rows a batch deletes are
    # neighbours in every index, not one random leaf per row.
    with service.db.write_connection() as conn, sweep_pacing.lock_share(service, conn) as share:
        while True:
            started = time.monotonic()
            size = pacer.size
            with conn.begin():
                n, upto = prune.delete_next_batch(conn, where, after, size)
            pruned += n
            if upto is None:
                return pruned
            after = upto
            pacer.done(started, size, share)


def sweep(service: TaskService, now: datetime, *, apply: bool, authoritative: bool,
          read_batch: int = READ_BATCH, write_batch: int = WRITE_BATCH) -> SweepResult:
    """Preview (count the plan) or apply it; the numbers of the two agree when nothing moves meanwhile.

    Rows already due are pruned first, set-based (nothing else can happen to them this pass); then the rows that
    need a per-task decision are planned and applied batch by batch, so a row changed this pass is never pruned
    in the same pass.
    """
    result = SweepResult()
    if apply:
        result.counts.add(Step.PRUNE, prune_due(service, now))
    else:
        result.counts.add(Step.PRUNE, count_due(service, now))
    pacer = Pacer(service, write_batch, lo=min(write_batch, 10), hi=max(write_batch, MAX_WRITE_BATCH))
    with contextlib.ExitStack() as stack:
        share = None
        if apply and service.db.is_sqlite:  # a connection of its own to checkpoint and watch for writers with
            watcher = stack.enter_context(service.db.engine.connect())
            share = stack.enter_context(sweep_pacing.lock_share(service, watcher))
        for planned in plan_batches(service, now, authoritative=authoritative, result=result, batch=read_batch,
                                    include_due=False):
            if not apply:
                for step in planned:
                    result.counts.add(step.step)
                continue
            rest = list(planned)
            while rest:
                chunk, rest = rest[:pacer.size], rest[pacer.size:]
                started = time.monotonic()
                applied = apply_steps(service, chunk, now, authoritative=authoritative)
                for step_kind, n in applied.items():
                    result.counts.add(step_kind, n)
                pacer.done(started, len(chunk), share)
    return result


def write_batch(service: TaskService, conn: Connection, pairs: Sequence[tuple[Task, Task]],
                now: datetime) -> list[Change]:
    """Write (current, new) pairs whose rows the caller locked and re-read unchanged — their changed columns, one
    statement per set of columns (batch_writes.write_locked) — and their history in one more, then
    run the in-transaction hooks per change (as `TaskService.apply` does).
    """
    if not pairs:
        return []
    news = [(current, rules.prepare_write(new, service.retention)) for current, new in pairs]
    batch_writes.write_locked(conn, news)
    changes: list[Change] = []
    for current, new in news:
        event = None
        if new.status != current.status:
            event = TaskEvent(task_id=new.task_id, at=new.last_event_at or new.ended_at or now,
                              kind=new.status.value, summary=rules.status_summary(new),
                              previous_status=current.status.value)
            log.info("task %s %s -> %s", new.task_id, current.status, new.status)
        changes.append(Change(new, current, event))
    batch_writes.insert_event_rows(conn, [c.event for c in changes if c.event is not None])
    for change in changes:
        service.hooks.on_written(conn, change, now)
    return changes


def apply_steps(service: TaskService, steps: Sequence[Planned], now: datetime, *,
                authoritative: bool) -> dict[Step, int]:
    """Apply planned steps in one short write transaction; records that changed since planning are skipped."""
    applied: dict[Step, int] = {}

    def unit(conn: Connection, _now: datetime) -> list[Change]:
        applied.clear()
        ids = [s.current.task_id for s in steps]
        stmt = store.task_select().where(task_runs.c.task_id.in_(ids)).with_for_update(of=task_runs)
        current = {t.task_id: t for t in (store.row_to_task(r) for r in conn.execute(stmt))}
        unchanged = [s for s in steps if current.get(s.current.task_id) == s.current]
        lost = [s.current for s in unchanged if s.step == Step.LOST]
        view = BackingView.load(conn, lost, now, authoritative=authoritative) if lost else None
        writes: list[Planned] = []
        prune: list[str] = []
        for s in unchanged:
            if s.step == Step.PRUNE:
                prune.append(s.current.task_id)
            elif s.step != Step.LOST or (view is not None and should_mark_lost(s.current, view) is not None):
                writes.append(s)  # a lost step is dropped when its backing came back between plan and apply
        changes = write_batch(service, conn, [(s.current, s.new) for s in writes if s.new is not None], now)
        for s, change in zip(writes, changes, strict=True):
            applied[s.step] = applied.get(s.step, 0) + 1
            if s.step == Step.LOST:
                log.info("task %s marked lost: %s", s.current.task_id, change.task.error)
        if prune:
            applied[Step.PRUNE] = store.delete_tasks(conn, prune)
        return changes

    service.run_unit(unit)
    return applied
