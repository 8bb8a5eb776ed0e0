"""TaskService: the only door to task records. Every state change is one transaction holding a
compare-and-set update and an appended `task_events` row; side effects run after commit."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, text

from flowledger.tasks.core import flowlinks, generation, limits, prefixes, rules, store
from flowledger.tasks.core.clock import Clock, SystemClock, coerce_time
from flowledger.tasks.core.db import Database
from flowledger.tasks.core.errors import InvalidInput, OperationRefused, OwnerKeyRequired, TaskNotFound
from flowledger.tasks.core.ids import new_id
from flowledger.tasks.core.models import (
    DEFAULT_RETENTION,
    DeliveryOrigin,
    Task,
    TaskEvent,
    collapse_whitespace,
    trimmed,
)
from flowledger.tasks.core.sessionkeys import parse_agent_id
from flowledger.tasks.core.states import (
    ACTIVE,
    DeliveryStatus,
    NotifyPolicy,
    Runtime,
    ScopeKind,
    TaskStatus,
    TerminalOutcome,
    allowed_predecessors,
    is_terminal,
    lifecycle_outcome,
    parse_enum,
    should_apply,
)
from flowledger.tasks.core.tables import task_runs

log = logging.getLogger(__name__)

CANCELLED_BY_OPERATOR = "Cancelled by operator."
# The compare-and-set guard of each run-scoped target, computed once rather than on every write.
_PREDECESSORS = {status: allowed_predecessors(status) for status in TaskStatus}


@dataclass(frozen=True, slots=True)
class Change:
    """A committed write: the task as it is now, as it was, and the history row it appended."""

    task: Task
    previous: Task | None
    event: TaskEvent | None


Changes = list[Change]
Tasks = list[Task]
TaskEvents = list[TaskEvent]


@dataclass(frozen=True, slots=True)
class CancelResult:
    found: bool
    cancelled: bool
    reason: str | None = None
    task: Task | None = None


class TaskHooks:
    """Extension points for the layers above (flows, delivery). The base class does nothing."""

    def validate_parent_flow(self, conn: Connection, *, flow_id: str, owner_key: str, scope_kind: ScopeKind) -> None:
        """Raise ParentFlowLinkError when a task may not link to `flow_id`."""

    def prepare_insert(self, conn: Connection, task: Task, now: datetime) -> Task:
        """Runs inside the creating transaction just before a new task row is inserted; may return a changed task
        (the flow layer links a new acp/subagent task to its one-task mirrored flow here)."""
        return task

    def on_written(self, conn: Connection, change: Change, now: datetime) -> None:
        """Runs inside the writing transaction (flow sync must commit or fail with the task)."""

    def after_commit(self, changes: Sequence[Change]) -> None:
        """Runs after commit (delivery, wakes); failures here never undo the task write."""


class CancelAdapter(Protocol):
    """A live runtime handle that can stop work; returns None when stopped, else the refusal reason."""

    def cancel(self, task: Task, reason: str | None) -> str | None: ...


@dataclass
class CompositeHooks(TaskHooks):
    members: list[TaskHooks] = field(default_factory=list)

    def validate_parent_flow(self, conn: Connection, *, flow_id: str, owner_key: str, scope_kind: ScopeKind) -> None:
        for hook in self.members:
            hook.validate_parent_flow(conn, flow_id=flow_id, owner_key=owner_key, scope_kind=scope_kind)

    def prepare_insert(self, conn: Connection, task: Task, now: datetime) -> Task:
        for hook in self.members:
            task = hook.prepare_insert(conn, task, now)
        return task

    def on_written(self, conn: Connection, change: Change, now: datetime) -> None:
        for hook in self.members:
            hook.on_written(conn, change, now)

    def after_commit(self, changes: Sequence[Change]) -> None:
        for hook in self.members:
            try:
                hook.after_commit(changes)
            except Exception:  # a side effect must never mask the recorded outcome
                log.exception("after-commit hook %s failed", type(hook).__name__)


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
            raise TaskNotFound(lookup)
        return task

    @staticmethod
    def resolve(conn: Connection, lookup: str) -> Task | None:
        """Task id, then run id (preferred task), then the newest task of that owner or child session, then a
        unique task id prefix (CONTRACT §7; AmbiguousLookup when several ids start so)."""
        token = (lookup or "").strip()
        if not token:
            return None
        found = store.get(conn, token)
        if found is not None:
            return found
        by_run = rules.preferred(store.by_run_id(conn, token))
        if by_run is not None:
            return by_run
        related = store.newest_related(conn, token)
        if related is not None:
            return related
        task_id = prefixes.unique_id(conn, task_runs.c.task_id, token, "tasks")
        return store.get(conn, task_id) if task_id is not None else None

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
                raise TaskNotFound(lookup)
            return store.events_for(conn, task.task_id)

    # --- create -------------------------------------------------------------------------------------

    def create(
        self,
        *,
        runtime: Runtime | str,
        task: str,
        owner_key: str | None = None,
        requester_session_key: str | None = None,
        scope_kind: ScopeKind | str | None = None,
        child_session_key: str | None = None,
        parent_flow_id: str | None = None,
        parent_task_id: str | None = None,
        agent_id: str | None = None,
        requester_agent_id: str | None = None,
        run_id: str | None = None,
        source_id: str | None = None,
        task_kind: str | None = None,
        label: str | None = None,
        status: TaskStatus | str | None = None,
        delivery_status: DeliveryStatus | str | None = None,
        notify_policy: NotifyPolicy | str | None = None,
        started_at: datetime | None = None,
        last_event_at: datetime | None = None,
        ended_at: datetime | None = None,
        cleanup_after: datetime | None = None,
        error: str | None = None,
        progress_summary: str | None = None,
        terminal_summary: str | None = None,
        terminal_outcome: TerminalOutcome | str | None = None,
        requester_origin: Mapping[str, Any] | DeliveryOrigin | None = None,
        prefer_metadata: bool = False,
        task_id: str | None = None,
    ) -> Task:
        """Record new work (REFERENCE §2.2); a repeat with the same run scope returns the merged record."""
        draft = self._draft(locals())
        changes: Changes = []

        def unit(conn: Connection) -> Task:
            changes.clear()  # the database may run this unit again after a lock error
            now = self.clock.now()
            if draft.parent_flow_id:
                self._validate_parent_flow(conn, draft.parent_flow_id, draft.owner_key, draft.scope_kind)
            if draft.run_id and self.db.is_postgres:
                # Two creates of one run scope must not both miss each other's row and insert twice.
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"task-run:{draft.run_id}"})
            existing = self._dedupe(conn, draft) if draft.run_id else None
            if existing is not None:
                merged = self._merge(existing, draft, prefer_metadata=prefer_metadata)
                if merged == existing:
                    return existing
                if merged.parent_flow_id and merged.parent_flow_id != existing.parent_flow_id:
                    self._validate_parent_flow(conn, merged.parent_flow_id, merged.owner_key, merged.scope_kind)
                change = self._write(conn, existing, merged, now=now, expected={existing.status})
                if change is None:
                    raise OperationRefused(f"Task {existing.task_id} changed while it was being merged.")
                changes.append(change)
                return change.task
            last_event = draft.last_event_at or draft.started_at or now
            # A task created already terminal ended when it was last heard of, so retention counts from there.
            ended = draft.ended_at or (last_event if is_terminal(draft.status) else None)
            created = rules.prepare_write(draft.replace(created_at=now, last_event_at=last_event, ended_at=ended),
                                          self.retention)
            created = self.hooks.prepare_insert(conn, created, now)
            store.insert_task(conn, created)
            event = TaskEvent(task_id=created.task_id, at=created.created_at, kind=created.status.value,
                              summary=rules.status_summary(created))
            store.append_event(conn, event)
            change = Change(created, None, event)
            self.hooks.on_written(conn, change, now)
            changes.append(change)
            log.info("task %s created (%s, %s)", created.task_id, created.runtime, created.status)
            return created

        result = self.db.transact(unit)
        self.hooks.after_commit(changes)
        return result

    def start_generation(self, tool: str, session_key: str, prompt: str,
                         requester_origin: Mapping[str, Any] | DeliveryOrigin | None = None
                         ) -> generation.GenerationStart:
        """A session-backed image/music/video generation job, or the active one it repeats (tasks/core/generation.py)."""
        return generation.start_generation(self, tool, session_key, prompt, requester_origin)

    def create_many(self, records: Iterable[Mapping[str, Any]], *, batch_size: int = 5000) -> int:
        """Bulk-create brand-new tasks, one transaction per batch (see tasks/core/bulk.py); returns how many."""
        from flowledger.tasks.core import bulk

        return bulk.bulk_create(self, records, batch_size=batch_size)

    def _validate_parent_flow(self, conn: Connection, flow_id: str, owner_key: str, scope_kind: ScopeKind) -> None:
        flowlinks.check_parent_flow(conn, flow_id=flow_id, owner_key=owner_key, scope_kind=scope_kind)
        self.hooks.validate_parent_flow(conn, flow_id=flow_id, owner_key=owner_key, scope_kind=scope_kind)

    def _draft(self, args: dict[str, Any]) -> Task:
        rt = parse_enum(Runtime, args["runtime"], "runtime")
        text = str(args["task"] or "").strip()
        if not text:
            raise InvalidInput("Task text is required.")
        explicit_scope = parse_enum(ScopeKind, args["scope_kind"], "scope_kind") if args["scope_kind"] else None
        requester = trimmed(args["requester_session_key"])
        if requester is None:
            requester = "" if explicit_scope == ScopeKind.SYSTEM else (trimmed(args["owner_key"]) or "")
        scope = explicit_scope or (ScopeKind.SESSION if requester else ScopeKind.SYSTEM)
        owner = trimmed(args["owner_key"]) or requester
        if not owner and scope != ScopeKind.SYSTEM:
            raise OwnerKeyRequired()
        child = args["child_session_key"]
        agent = trimmed(args["agent_id"]) or parse_agent_id(child) or parse_agent_id(owner) or parse_agent_id(requester)
        requester_agent = (trimmed(args["requester_agent_id"]) or "").lower() or None
        requester_agent = requester_agent or parse_agent_id(owner) or parse_agent_id(requester)
        status = TaskStatus.QUEUED
        if args["status"] is not None:
            status = parse_enum(TaskStatus, args["status"], "status")
        if args["delivery_status"] is not None:
            delivery = parse_enum(DeliveryStatus, args["delivery_status"], "delivery_status")
        elif scope == ScopeKind.SYSTEM:
            delivery = DeliveryStatus.NOT_APPLICABLE
        else:
            delivery = DeliveryStatus.PENDING if owner else DeliveryStatus.PARENT_MISSING
        if args["notify_policy"] is not None:
            policy = parse_enum(NotifyPolicy, args["notify_policy"], "notify_policy")
        else:
            policy = NotifyPolicy.SILENT if delivery == DeliveryStatus.NOT_APPLICABLE else NotifyPolicy.DONE_ONLY
        outcome = None
        if args["terminal_outcome"] is not None:
            outcome = parse_enum(TerminalOutcome, args["terminal_outcome"], "terminal_outcome")
        origin = DeliveryOrigin.from_mapping(args["requester_origin"])
        if args["ended_at"] is not None and status in ACTIVE:
            raise InvalidInput(f"ended_at is only accepted for a task created terminal, not {status.value}.")
        limits.check_text(text, "Task text")
        limits.check_session_key(owner, "Owner key")
        limits.check_session_key(requester, "Requester session key")
        limits.check_session_key(child if isinstance(child, str) else None, "Child session key")
        return Task(
            task_id=limits.check_id(trimmed(args["task_id"]), "task id") or new_id(),
            runtime=rt,
            task_kind=trimmed(args["task_kind"]),
            source_id=trimmed(args["source_id"]),
            requester_session_key=requester,
            owner_key=owner,
            scope_kind=scope,
            child_session_key=child if child and str(child).strip() else None,
            parent_flow_id=trimmed(args["parent_flow_id"]),
            parent_task_id=trimmed(args["parent_task_id"]),
            agent_id=agent,
            requester_agent_id=requester_agent,
            run_id=trimmed(args["run_id"]),
            label=limits.check_label(trimmed(args["label"])),
            task=text,
            status=status,
            delivery_status=delivery,
            notify_policy=policy,
            created_at=self.clock.now(),
            started_at=coerce_time(args["started_at"], "started_at"),
            last_event_at=coerce_time(args["last_event_at"], "last_event_at"),
            ended_at=coerce_time(args["ended_at"], "ended_at"),
            cleanup_after=coerce_time(args["cleanup_after"], "cleanup_after"),
            error=limits.program_text(args["error"]),
            progress_summary=limits.program_text(collapse_whitespace(args["progress_summary"])),
            terminal_summary=limits.program_text(collapse_whitespace(args["terminal_summary"])),
            terminal_outcome=outcome,
            requester_origin=origin if origin and (origin.channel or origin.to) else None,
        )

    @staticmethod
    def _dedupe(conn: Connection, draft: Task) -> Task | None:
        assert draft.run_id is not None
        found = store.dedupe_candidates(conn, draft.run_id, for_update=True)
        # A task the flow layer linked to its own one-task flow is still the producer's unlinked task.
        auto: set[str] = set()
        if draft.parent_flow_id is None:
            auto = flowlinks.mirrored_flow_ids(conn, {t.parent_flow_id for t in found if t.parent_flow_id})

        def scope(t: Task) -> tuple[object, ...]:
            flow = "" if t.parent_flow_id in auto else (t.parent_flow_id or "").strip()
            return (t.runtime, t.scope_kind, t.owner_key.strip(), (t.child_session_key or "").strip(), flow)

        candidates = [t for t in found if scope(t) == scope(draft)]
        for candidate in candidates:
            if candidate.label == draft.label and candidate.task == draft.task:
                return candidate
        if draft.runtime == Runtime.ACP and candidates:
            return rules.preferred(candidates)
        return None

    @staticmethod
    def _merge(existing: Task, draft: Task, *, prefer_metadata: bool) -> Task:
        changes: dict[str, Any] = {}
        for name in ("requester_origin", "source_id", "task_kind", "parent_flow_id", "parent_task_id",
                     "agent_id", "requester_agent_id"):
            if getattr(existing, name) is None and getattr(draft, name) is not None:
                changes[name] = getattr(draft, name)
        if prefer_metadata:
            if draft.label is not None and draft.label != existing.label:
                changes["label"] = draft.label
            if draft.task != existing.task:
                changes["task"] = draft.task
        elif existing.label is None and draft.label is not None:
            changes["label"] = draft.label
        if draft.delivery_status == DeliveryStatus.PENDING and existing.delivery_status not in (
            DeliveryStatus.DELIVERED, DeliveryStatus.PENDING
        ):
            changes["delivery_status"] = DeliveryStatus.PENDING
        if existing.notify_policy == NotifyPolicy.SILENT and draft.notify_policy != NotifyPolicy.SILENT:
            changes["notify_policy"] = draft.notify_policy
        return existing.replace(**changes) if changes else existing

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
        if new.requester_origin != current.requester_origin:
            store.upsert_origin(conn, new.task_id, new.requester_origin)
        event = None
        if new.status != current.status or (progress and summary):
            kind = new.status.value if new.status != current.status else "progress"
            if summary is None and kind != "progress":
                summary = rules.status_summary(new)
            event = TaskEvent(task_id=new.task_id, at=new.last_event_at or new.ended_at or now, kind=kind,
                              summary=summary, previous_status=current.status.value)
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
            raise InvalidInput("run_id is required.")

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
            raise InvalidInput(f"Invalid status {target.value!r}: expected one of failed|timed_out|cancelled.")
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
            return CancelResult(found=True, cancelled=False, reason="Task is already terminal.", task=task)
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
            new = current.replace(status=TaskStatus.CANCELLED, ended_at=now, last_event_at=now,
                                  error=reason or CANCELLED_BY_OPERATOR)
            change = self._write(conn, current, new, now=now, expected=ACTIVE, summary=reason)
            return [change] if change else []

        changes = self.run_unit(unit)
        if changes:
            return CancelResult(found=True, cancelled=True, task=changes[0].task)
        latest = self.get(task.task_id)
        if latest is not None and latest.status == TaskStatus.CANCELLED:
            return CancelResult(found=True, cancelled=True, task=latest)
        return CancelResult(found=True, cancelled=False, reason="Task is already terminal.", task=latest)

    def set_notify_policy(self, lookup: str, policy: NotifyPolicy | str) -> Task:
        value = parse_enum(NotifyPolicy, policy, "notify policy")

        def unit(conn: Connection, now: datetime) -> Changes:
            current = self.resolve(conn, lookup)
            if current is None:
                raise TaskNotFound(lookup)
            current = store.get(conn, current.task_id, for_update=True) or current
            new = current.replace(notify_policy=value, last_event_at=max(now, current.last_event_at or now))
            change = self._write(conn, current, new, now=now, expected={current.status})
            if change is None:
                raise OperationRefused(f"Task {current.task_id} changed while its notify policy was being set.")
            return [change]

        return self.run_unit(unit)[0].task


def _codex_native(task: Task) -> bool:
    ident = task.run_id or task.source_id or ""
    return task.runtime == Runtime.SUBAGENT and task.task_kind == "codex-native" and ident.startswith("codex-thread:")
