"""Many task writes in one transaction: what a flow controller needs when several steps start, or end, together.

Each task still gets exactly what its single-task call would give it — `TaskService.create`'s dedupe, link checks
and hooks, or the run-scoped compare-and-set of `start`/`complete` with the no-downgrade guard — and its own
`task_events` row; only the commit is shared. One commit instead of N is the whole gain: on SQLite a write
transaction costs far more than the rows it writes (the pool, BEGIN IMMEDIATE, the commit), and a
flow of instant steps pays it three times per step otherwise.

The batch commits whole or not at all: a crash mid-batch leaves every task as it was before it, never half a
batch. A task whose compare-and-set is refused (another writer moved it first, or it is already terminal) is
skipped exactly as the single-task call skips it; the others still commit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import Connection

from flowledger.tasks.core import batch_writes, limits, rules, write_batch
from flowledger.tasks.core.clock import coerce_time
from flowledger.tasks.core.db import serialize_on_all
from flowledger.tasks.core.drafts import check_parent_flow, run_scope_key
from flowledger.tasks.core.errors import InvalidInputError
from flowledger.tasks.core.hooks import Change, Changes
from flowledger.tasks.core.models import Task, collapse_whitespace
from flowledger.tasks.core.service import TaskService
from flowledger.tasks.core.states import (
    Runtime,
    TaskStatus,
    TerminalOutcome,
    allowed_predecessors,
    parse_enum,
    should_apply,
)

# How a run-scoped transition turns the stored task into the one to write.
_Build = Callable[[Task, datetime], Task]
_RUNNING_FROM = allowed_predecessors(TaskStatus.RUNNING)
_SUCCEEDED_FROM = allowed_predecessors(TaskStatus.SUCCEEDED)


def create_many_in_one(service: TaskService, drafts: Sequence[Task] | Callable[[Connection], Sequence[Task]],
                       *, start: bool = False) -> list[Task]:
    """Create every draft (`TaskService.draft`) as `create` would, in one transaction; the tasks in order.

    `drafts` may be a function of that transaction's connection, for a caller that must read before it knows
    what to create (e.g. that the parent flow still takes children, and its owner and origin). Anything it or
    one create raises (a refused flow link, storage) rolls the whole batch back.

    `start`: then move each task to running in the same transaction, as `TaskService.start(run_id)` would move
    it (the no-downgrade rule, a guarded write, its own `running` event after its creation event): the create
    and the start of a step whose runtime records its start before it runs anything, in one commit."""
    changes: Changes = []

    def unit(conn: Connection) -> list[Task]:
        changes.clear()  # the database may run this unit again after a lock error
        with write_batch.opened(conn) as batch:
            out = batched(conn)
            batch_writes.insert_event_rows(conn, batch.events)
        return out

    def batched(conn: Connection) -> list[Task]:
        wanted = drafts(conn) if callable(drafts) else drafts
        # A create serialises on its run id; taking them all first, sorted (one statement), keeps two batches
        # sharing run ids from deadlocking on PostgreSQL; the batch remembers them, so no create takes one again.
        serialize_on_all(conn, [run_scope_key(d.run_id) for d in wanted if d.run_id])
        now = service.clock.now()
        out: list[Task] = []
        created: list[Change | None] = []
        # The parent-flow link check reads the flow row: once per (flow, owner, scope) in the batch, not once
        # per task (the row cannot change under our write transaction's lock on SQLite; on PostgreSQL a single
        # create has the same window between its check and its commit).
        checked: set[tuple[str, str, str]] = set()
        for draft in wanted:
            if draft.parent_flow_id:
                link = (draft.parent_flow_id, draft.owner_key, draft.scope_kind.value)
                if link not in checked:
                    check_parent_flow(conn, service.hooks, draft.parent_flow_id, draft.owner_key, draft.scope_kind)
                    checked.add(link)
        for task, change in service.create_many_in(conn, wanted, now):
            created.append(change)
            out.append(task)
        # The starts after every create, their compare-and-sets in one statement (core/batch_writes.py); each
        # task's changes still reach `after_commit` in its own order: created, then started.
        starting: list[int] = []
        seen: set[str] = set()  # a run id named twice in the batch gives its one task twice: started once
        for i, task in enumerate(out):
            if start and task.task_id not in seen and should_apply(task.status, TaskStatus.RUNNING):
                starting.append(i)
            seen.add(task.task_id)
        started = service.apply_many(conn, [(out[i], _started(out[i], now, None), _RUNNING_FROM & {out[i].status})
                                            for i in starting], now=now)
        moved: dict[int, Change | None] = dict(zip(starting, started, strict=True))
        for i, change in enumerate(created):
            if change is not None:
                changes.append(change)
            if (start_change := moved.get(i)) is not None:
                changes.append(start_change)
                out[i] = start_change.task
        return out

    if not callable(drafts) and not drafts:
        return []
    result = service.db.transact(unit)
    service.hooks.after_commit(changes)
    return result


def start_many(service: TaskService, run_ids: Sequence[str], *, at: datetime | None = None,
               runtime: Runtime | str | None = None) -> list[Task]:
    """`TaskService.start` for each run id, in one transaction; the tasks that moved to running."""
    when = coerce_time(at, "at")
    return _run_scoped_many(service, run_ids, runtime, TaskStatus.RUNNING, _RUNNING_FROM,
                            lambda t, now: _started(t, now, when))


def _started(t: Task, now: datetime, when: datetime | None) -> Task:
    """`TaskService.start`'s change to one task."""
    moment = when or now
    return t.replace(status=TaskStatus.RUNNING, started_at=t.started_at or moment, last_event_at=moment)


def complete_many(service: TaskService, run_ids: Sequence[str], *, summary: str | None = None,
                  outcome: TerminalOutcome | str | None = None, ended_at: datetime | None = None,
                  runtime: Runtime | str | None = None) -> list[Task]:
    """`TaskService.complete` for each run id (one summary for all), in one transaction; the tasks that
    succeeded."""
    when = coerce_time(ended_at, "ended_at")
    result = parse_enum(TerminalOutcome, outcome, "outcome") if outcome is not None else None
    text = limits.program_text(collapse_whitespace(summary))

    def completed(t: Task, now: datetime) -> Task:
        moment = when or now
        return t.replace(status=TaskStatus.SUCCEEDED, ended_at=moment, last_event_at=moment,
                         terminal_summary=text or t.terminal_summary, terminal_outcome=result or t.terminal_outcome)

    return _run_scoped_many(service, run_ids, runtime, TaskStatus.SUCCEEDED, _SUCCEEDED_FROM, completed)


def _run_scoped_many(service: TaskService, run_ids: Sequence[str], runtime: Runtime | str | None,
                     target: TaskStatus, predecessors: frozenset[TaskStatus],
                     build: _Build) -> list[Task]:
    """The run-scoped write of `TaskService._run_scoped` (no session key) for many run ids in one unit."""
    rt = parse_enum(Runtime, runtime, "runtime") if runtime else None
    # Sorted, so two batches lock their rows in the same order (PostgreSQL would otherwise be free to deadlock
    # them); a run id named twice is written once.
    if any(not r or not r.strip() for r in run_ids):
        raise InvalidInputError("run_id is required.")
    scoped = sorted({r.strip() for r in run_ids})

    def unit(conn: Connection, now: datetime) -> Changes:
        with write_batch.opened(conn) as batch:
            out = batched(conn, now)
            batch_writes.insert_event_rows(conn, batch.events)
        return out

    def batched(conn: Connection, now: datetime) -> Changes:
        found = batch_writes.by_run_ids(conn, scoped)
        # By task id: a task two run ids' scopes both pick is written once.
        writes: dict[str, tuple[Task, Task, frozenset[TaskStatus]]] = {}
        for run_id in scoped:
            for current in rules.run_scope(found.get(run_id, []), None, rt):
                if should_apply(current.status, target):  # no downgrade: a terminal task stays as it is
                    writes.setdefault(current.task_id, (current, build(current, now), predecessors & {current.status}))
        return [c for c in service.apply_many(conn, list(writes.values()), now=now) if c is not None]

    if not scoped:
        return []
    return [c.task for c in service.run_unit(unit)]
