"""TaskService: the only door to task records. Every state change is one transaction holding a
compare-and-set update and an appended `task_events` row; side effects run after commit."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, Unpack

from sqlalchemy import Connection

from flowledger.tasks.core import batch_writes, bulk, generation, limits, rules, store
from flowledger.tasks.core.clock import Clock, SystemClock, coerce_time
from flowledger.tasks.core.db import Database, serialize_on
from flowledger.tasks.core.drafts import (
    TaskDraft,
    check_draft_keys,
    check_parent_flow,
    merge_repeat,
    new_record,
    parse_draft,
    repeated_run,
    run_scope_key,
)
from flowledger.tasks.core.errors import InvalidInputError, OperationRefusedError, TaskNotFoundError
from flowledger.tasks.core.hooks import Change, Changes, CompositeHooks
from flowledger.tasks.core.lookup import lookup_task
from flowledger.tasks.core.models import (
    DEFAULT_RETENTION,
    DeliveryOrigin,
    Task,
    TaskEvent,
    collapse_whitespace,
)
from flowledger.tasks.core.states import (
    ACTIVE,
    NotifyPolicy,
    Runtime,
    TaskStatus,
    TerminalOutcome,
    allowed_predecessors,
    is_terminal,
    lifecycle_outcome,
    parse_enum,
    should_apply,
)

log = logging.getLogger(__name__)

CANCELLED_BY_OPERATOR = rules.CANCELLED_BY_OPERATOR  # moved to rules.py (the lean door cancels too)
# The compare-and-set guard of each run-scoped target, computed once rather than on every write.
# What a batch's creates and guarded writes give back, one entry per draft or write (`list` is a method below).
Created = list[tuple[Task, Change | None]]
Applied = list[Change | None]
_PREDECESSORS = {status: allowed_predecessors(status) for status in TaskStatus}


Tasks = list[Task]
TaskEvents = list[TaskEvent]


@dataclass(frozen=True, slots=True)
class CancelResult:
    found: bool
    cancelled: bool
    reason: str | None = None
    task: Task | None = None


class CancelAdapter(Protocol):
    """A live runtime handle that can stop work; returns None when stopped, else the refusal reason."""

    def cancel(self, task: Task, reason: str | None) -> str | None: ...


class TaskService:
    def __init__(
        self,
        db: Database,
        clock: Clock | None = None,
        *,
        retention: timedelta = DEFAULT_RETENTION,
    ) -> None:
        self.db = db
        self.clock: Clock = clock or SystemClock()
        self.retention = retention
        self.hooks = CompositeHooks()
        self.cancel_adapters: dict[Runtime, CancelAdapter] = {}

    # --- reads --------------------------------------------------------------------------------------

    def get(self, lookup: str) -> Task | None:
        with self.db.read() as conn:
            return self.resolve(conn, lookup)

    def require(self, lookup: str) -> Task:
        task = self.get(lookup)
        if task is None:
            raise TaskNotFoundError(lookup)
        return task

    @staticmethod
    def resolve(conn: Connection, lookup: str) -> Task | None:
        """Task id, then run id, then owner or child session, then a unique id prefix (core/lookup.py)."""
        return lookup_task(conn, lookup)

    def list(
        self,
        runtime: Runtime | str | None = None,
        status: TaskStatus | str | None = None,
        *,
        limit: int | None = None,
        owner_key: str | None = None,
        related_session: str | None = None,
        agent_id: str | None = None,
    ) -> Tasks:
        rt = parse_enum(Runtime, runtime, "runtime") if runtime is not None else None
        st = parse_enum(TaskStatus, status, "status") if status is not None else None
        with self.db.read() as conn:
            return store.list_tasks(conn, runtime=rt, status=st, limit=limit, owner_key=owner_key,
                                    related_session=related_session, agent_id=agent_id)

    def list_for_owner(self, owner_key: str) -> Tasks:
        return self.list(owner_key=owner_key)

    def events(self, lookup: str) -> TaskEvents:
        with self.db.read() as conn:
            task = self.resolve(conn, lookup)
            if task is None:
                raise TaskNotFoundError(lookup)
            return store.events_for(conn, task.task_id)

    # --- create -------------------------------------------------------------------------------------

    def create(self, *, prefer_metadata: bool = False, **fields: Unpack[TaskDraft]) -> Task:
        """Record new work (REFERENCE §2.2); a repeat with the same run scope returns the merged record."""
        check_draft_keys(fields, "create()")
        now = self.clock.now()  # one reading of the clock for the whole operation
        draft = parse_draft(fields, now)
        changes: Changes = []

        def unit(conn: Connection) -> Task:
            changes.clear()  # the database may run this unit again after a lock error
            created, change = self.create_in(conn, draft, now, prefer_metadata=prefer_metadata)
            if change is not None:
                changes.append(change)
            return created

        result = self.db.transact(unit)
        self.hooks.after_commit(changes)
        return result

    def create_in(self, conn: Connection, draft: Task, now: datetime, *, prefer_metadata: bool = False,
                  parent_checked: bool = False) -> tuple[Task, Change | None]:
        """`create`'s write in the caller's transaction (tasks/core/batch_transitions.py creates many in one): the
        task, and the change to hand to `hooks.after_commit` once committed (None when nothing was written).
        `parent_checked`: the caller already ran `check_parent_flow` for this draft in this transaction."""
        if draft.run_id:  # two creates of one run scope must not both miss each other's row and insert twice
            serialize_on(conn, run_scope_key(draft.run_id))
        if draft.parent_flow_id and not parent_checked:
            check_parent_flow(conn, self.hooks, draft.parent_flow_id, draft.owner_key, draft.scope_kind)
        existing = repeated_run(conn, draft) if draft.run_id else None
        if existing is not None:
            return self._merged_in(conn, existing, draft, now, prefer_metadata=prefer_metadata)
        created = new_record(conn, draft, now, retention=self.retention, hooks=self.hooks)
        store.insert_task(conn, created)
        return created, self._created(conn, created, now)

    def create_many_in(self, conn: Connection, drafts: Sequence[Task],
                       now: datetime) -> Created:
        """`create_in(conn, draft, now, parent_checked=True)` for each draft, the reads and inserts shared: one
        dedupe lookup for every run id, the new rows in one multi-row INSERT (core/batch_writes.py), then each
        new task's history row and hooks in order. A batch naming a run id twice creates one draft at a time (the
        second must see the first)."""
        run_ids = [d.run_id for d in drafts if d.run_id]
        if len(set(run_ids)) != len(run_ids):
            return [self.create_in(conn, draft, now, parent_checked=True) for draft in drafts]
        for run_id in run_ids:
            serialize_on(conn, run_scope_key(run_id))  # a no-op for keys the open write batch holds already
        found = batch_writes.by_run_ids(conn, run_ids) if run_ids else {}
        out: list[tuple[Task, Change | None] | None] = []
        fresh: list[tuple[int, Task]] = []
        for draft in drafts:
            existing = repeated_run(conn, draft, found.get(draft.run_id, [])) if draft.run_id else None
            if existing is not None:
                out.append(self._merged_in(conn, existing, draft, now, prefer_metadata=False))
            else:
                fresh.append((len(out), new_record(conn, draft, now, retention=self.retention, hooks=self.hooks)))
                out.append(None)
        batch_writes.insert_tasks(conn, [created for _, created in fresh])
        for index, created in fresh:
            out[index] = (created, self._created(conn, created, now))
        return [item for item in out if item is not None]

    def _created(self, conn: Connection, created: Task, now: datetime) -> Change:
        """What follows a new task's row: its creation event and the hooks."""
        event = rules.created_event(created)
        store.append_event(conn, event)
        change = Change(created, None, event)
        self.hooks.on_written(conn, change, now)
        log.info("task %s created (%s, %s)", created.task_id, created.runtime, created.status)
        return change

    def _merged_in(self, conn: Connection, existing: Task, draft: Task, now: datetime, *,
                   prefer_metadata: bool) -> tuple[Task, Change | None]:
        """A create that repeats `existing`'s run scope: what it adds, written (REFERENCE §2.2)."""
        merged = merge_repeat(existing, draft, prefer_metadata=prefer_metadata)
        if merged == existing:
            return existing, None
        if merged.parent_flow_id and merged.parent_flow_id != existing.parent_flow_id:
            check_parent_flow(conn, self.hooks, merged.parent_flow_id, merged.owner_key, merged.scope_kind)
        change = self._write(conn, existing, merged, now=now, expected={existing.status})
        if change is None:
            raise OperationRefusedError(f"Task {existing.task_id} changed while it was being merged.")
        return change.task, change

    def draft(self, **fields: Unpack[TaskDraft]) -> Task:
        """A new task as `create` would validate it from the same keyword arguments, not yet written (for
        `create_in`)."""
        check_draft_keys(fields, "draft()")
        return parse_draft(fields, self.clock.now())

    def start_generation(self, tool: str, session_key: str, prompt: str,
                         requester_origin: Mapping[str, Any] | DeliveryOrigin | None = None
                         ) -> generation.GenerationStart:
        """A session-backed image/music/video generation job, or the active one it repeats (core/generation.py)."""
        return generation.start_generation(self.db, self.clock, self.hooks, tool, session_key, prompt,
                                           requester_origin, retention=self.retention)

    def create_many(self, records: Iterable[Mapping[str, Any]], *, batch_size: int = 5000) -> int:
        """Bulk-create brand-new tasks, one transaction per batch (see tasks/core/bulk.py); returns how many."""
        return bulk.bulk_create(self.db, self.clock, self.hooks, records, retention=self.retention,
                                batch_size=batch_size)

    # --- writing ------------------------------------------------------------------------------------

    def _write(
        self,
        conn: Connection,
        current: Task,
        new: Task,
        *,
        now: datetime,
        expected: set[TaskStatus] | frozenset[TaskStatus],
        summary: str | None = None,
        progress: bool = False,
    ) -> Change | None:
        """Compare-and-set `new` over `current`, append the history row, run in-transaction hooks."""
        new = rules.prepare_write(rules.reopen_delivery_on_override(current, new), self.retention)
        if not store.compare_and_set(conn, new, expected=expected, previous=current):
            return None
        return self._written(conn, current, new, now=now, summary=summary, progress=progress)

    def _written(self, conn: Connection, current: Task, new: Task, *, now: datetime, summary: str | None = None,
                 progress: bool = False) -> Change:
        """What follows a guarded write that moved the row: the origin, the history row, the hooks."""
        if new.requester_origin != current.requester_origin:
            store.upsert_origin(conn, new.task_id, new.requester_origin)
        event = rules.history_event(current, new, now, summary=summary, progress=progress)
        if event is not None:
            store.append_event(conn, event)
            if new.status != current.status:
                log.info("task %s %s -> %s", new.task_id, current.status, new.status)
        change = Change(new, current, event)
        self.hooks.on_written(conn, change, now)
        return change

    def apply(self, conn: Connection, current: Task, new: Task, *, expected: set[TaskStatus] | frozenset[TaskStatus],
              now: datetime, summary: str | None = None) -> Change | None:
        """For maintenance and flows inside this package family: one guarded write in the caller's tx."""
        return self._write(conn, current, new, now=now, expected=expected, summary=summary)

    def apply_many(self, conn: Connection, writes: Sequence[tuple[Task, Task, frozenset[TaskStatus]]], *,
                   now: datetime) -> Applied:
        """`apply(conn, current, new, expected=…)` for each (current, new, expected) of distinct tasks, the
        compare-and-sets first, all in one statement where that saves round trips (core/batch_writes.py), then each
        moved task's history row and hooks in order; each write's change, None where its compare-and-set was
        refused."""
        prepared = [(current, rules.prepare_write(rules.reopen_delivery_on_override(current, new), self.retention),
                     expected) for current, new, expected in writes]
        moved = batch_writes.compare_and_set_many(conn, [(new, expected, current)
                                                         for current, new, expected in prepared])
        return [self._written(conn, current, new, now=now) if new.task_id in moved else None
                for current, new, _expected in prepared]

    def run_unit(self, fn: Callable[[Connection, datetime], Changes]) -> Changes:
        """Run a unit of guarded writes in one transaction, then the after-commit hooks."""
        changes = self.db.transact(lambda conn: fn(conn, self.clock.now()))
        self.hooks.after_commit(changes)
        return changes

    def _run_scoped(
        self,
        run_id: str,
        session_key: str | None,
        runtime: Runtime | None,
        build: Callable[[Task, datetime], tuple[Task, str | None, bool] | None],
        target: TaskStatus | None,
    ) -> Tasks:
        """Apply `build` to every task in the run scope that the no-downgrade rule lets through."""
        if not run_id or not run_id.strip():
            raise InvalidInputError("run_id is required.")

        def unit(conn: Connection, now: datetime) -> Changes:
            out: Changes = []
            candidates = store.by_run_id(conn, run_id.strip(), for_update=True)
            for current in rules.run_scope(candidates, session_key, runtime):
                if target is not None and not should_apply(current.status, target):
                    continue
                built = build(current, now)
                if built is None:
                    continue
                new, summary, progress = built
                expected = _PREDECESSORS[target] & {current.status} if target else {current.status}
                change = self._write(conn, current, new, now=now, expected=expected, summary=summary,
                                     progress=progress)
                if change is not None:
                    out.append(change)
            return out

        return [c.task for c in self.run_unit(unit)]

    # --- run-scoped producer updates (REFERENCE §3.3) -------------------------------------------------

    def start(self, run_id: str, at: datetime | None = None, session_key: str | None = None,
              runtime: Runtime | str | None = None) -> Tasks:
        when = coerce_time(at, "at")

        def build(t: Task, now: datetime) -> tuple[Task, str | None, bool]:
            moment = when or now
            return t.replace(status=TaskStatus.RUNNING, started_at=t.started_at or moment,
                             last_event_at=moment), None, False

        rt = parse_enum(Runtime, runtime, "runtime") if runtime else None
        return self._run_scoped(run_id, session_key, rt, build, TaskStatus.RUNNING)

    def progress(self, run_id: str, summary: str, at: datetime | None = None, session_key: str | None = None,
                 runtime: Runtime | str | None = None) -> Tasks:
        when = coerce_time(at, "at")
        text = limits.program_text(collapse_whitespace(summary))

        def build(t: Task, now: datetime) -> tuple[Task, str | None, bool]:
            return t.replace(progress_summary=text or t.progress_summary, last_event_at=when or now), text, True

        rt = parse_enum(Runtime, runtime, "runtime") if runtime else None
        return self._run_scoped(run_id, session_key, rt, build, None)

    def complete(self, run_id: str, summary: str | None = None, outcome: TerminalOutcome | str | None = None,
                 ended_at: datetime | None = None, session_key: str | None = None,
                 runtime: Runtime | str | None = None, media: Sequence[str] | None = None) -> Tasks:
        """`media`: what a generation job produced (CONTRACT §7), added to the items already recorded."""
        when = coerce_time(ended_at, "ended_at")
        result = parse_enum(TerminalOutcome, outcome, "outcome") if outcome is not None else None
        text = limits.program_text(collapse_whitespace(summary))
        items = generation.media_items(media)

        def build(t: Task, now: datetime) -> tuple[Task, str | None, bool]:
            moment = when or now
            return t.replace(status=TaskStatus.SUCCEEDED, ended_at=moment, last_event_at=moment,
                             terminal_summary=text or t.terminal_summary,
                             terminal_outcome=result or t.terminal_outcome,
                             media=generation.merged_media(t.media, items)), None, False

        rt = parse_enum(Runtime, runtime, "runtime") if runtime else None
        return self._run_scoped(run_id, session_key, rt, build, TaskStatus.SUCCEEDED)

    def fail(self, run_id: str, error: str | None = None, status: TaskStatus | str = TaskStatus.FAILED,
             ended_at: datetime | None = None, session_key: str | None = None,
             runtime: Runtime | str | None = None, summary: str | None = None) -> Tasks:
        target = parse_enum(TaskStatus, status, "status")
        if target not in {TaskStatus.FAILED, TaskStatus.TIMED_OUT, TaskStatus.CANCELLED}:
            raise InvalidInputError(f"Invalid status {target.value!r}: expected one of failed|timed_out|cancelled.")
        when = coerce_time(ended_at, "ended_at")
        text = limits.program_text(collapse_whitespace(summary))

        def build(t: Task, now: datetime) -> tuple[Task, str | None, bool]:
            moment = when or now
            return t.replace(status=target, ended_at=moment, last_event_at=moment,
                             error=limits.program_text(error) or t.error,
                             terminal_summary=text or t.terminal_summary), None, False

        rt = parse_enum(Runtime, runtime, "runtime") if runtime else None
        return self._run_scoped(run_id, session_key, rt, build, target)

    def ingest(self, run_id: str, stream: str, data: Mapping[str, Any], ts: datetime | None = None,
               session_key: str | None = None) -> Tasks:
        """The agent-event listener (REFERENCE §3.2): late events on terminal tasks are ignored whole."""
        when = coerce_time(ts, "ts")

        def build(t: Task, now: datetime) -> tuple[Task, str | None, bool] | None:
            if is_terminal(t.status):
                return None
            moment = when or now
            new = t.replace(last_event_at=moment)
            if data.get("startedAt") is not None or data.get("started_at") is not None:
                new = new.replace(started_at=coerce_time(data.get("startedAt", data.get("started_at")), "startedAt"))
            if stream == "lifecycle":
                phase = str(data.get("phase") or "")
                if phase == "start":
                    new = new.replace(status=TaskStatus.RUNNING, started_at=new.started_at or moment)
                elif phase in {"end", "error"}:
                    outcome = lifecycle_outcome(phase, data)
                    ended = coerce_time(data.get("endedAt", data.get("ended_at")), "endedAt") or moment
                    err = data.get("error")
                    error = limits.program_text(err) if isinstance(err, str) and err else None
                    if phase == "error":
                        error = error or t.error
                    new = new.replace(status=outcome.status, ended_at=ended,
                                      error=error or outcome.default_error or new.error)
            elif stream == "error" and isinstance(data.get("error"), str):
                new = new.replace(error=limits.program_text(data["error"]))
            return new, None, False

        return self._run_scoped(run_id, session_key, None, build, None)

    # --- operator paths -----------------------------------------------------------------------------

    def cancel(self, lookup: str, reason: str | None = None) -> CancelResult:
        """Cancel per runtime (REFERENCE §3.6): a live adapter stops the work, else the registry records it."""
        task = self.get(lookup)
        if task is None:
            return CancelResult(found=False, cancelled=False, reason="Task not found.")
        if is_terminal(task.status):
            return CancelResult(found=True, cancelled=False, reason=rules.ALREADY_TERMINAL, task=task)
        if task.runtime in (Runtime.ACP, Runtime.SUBAGENT) and not task.child_session_key and not _codex_native(task):
            return CancelResult(found=True, cancelled=False, reason="Task has no cancellable child session.",
                                task=task)
        adapter = self.cancel_adapters.get(task.runtime)
        if adapter is not None:
            refusal = adapter.cancel(task, reason)
            if refusal is not None:
                return CancelResult(found=True, cancelled=False, reason=refusal, task=task)
        return self._record_cancel(task, reason)

    def _record_cancel(self, task: Task, reason: str | None) -> CancelResult:
        def unit(conn: Connection, now: datetime) -> Changes:
            current = store.get(conn, task.task_id, for_update=True)
            if current is None or current.status not in ACTIVE:
                return []
            new = rules.cancelled(current, now, reason)
            change = self._write(conn, current, new, now=now, expected=ACTIVE, summary=reason)
            return [change] if change else []

        changes = self.run_unit(unit)
        if changes:
            return CancelResult(found=True, cancelled=True, task=changes[0].task)
        latest = self.get(task.task_id)
        if latest is not None and latest.status == TaskStatus.CANCELLED:
            return CancelResult(found=True, cancelled=True, task=latest)
        return CancelResult(found=True, cancelled=False, reason=rules.ALREADY_TERMINAL, task=latest)

    def set_notify_policy(self, lookup: str, policy: NotifyPolicy | str) -> Task:
        value = parse_enum(NotifyPolicy, policy, "notify policy")

        def unit(conn: Connection, now: datetime) -> Changes:
            current = self.resolve(conn, lookup)
            if current is None:
                raise TaskNotFoundError(lookup)
            current = store.get(conn, current.task_id, for_update=True) or current
            new = current.replace(notify_policy=value, last_event_at=max(now, current.last_event_at or now))
            change = self._write(conn, current, new, now=now, expected={current.status})
            if change is None:
                raise OperationRefusedError(f"Task {current.task_id} changed while its notify policy was being set.")
            return [change]

        return self.run_unit(unit)[0].task


def _codex_native(task: Task) -> bool:
    ident = task.run_id or task.source_id or ""
    return task.runtime == Runtime.SUBAGENT and task.task_kind == "codex-native" and ident.startswith("codex-thread:")
