"""Pure record rules: timestamp normalisation, cleanup stamps, run-scope selection, lookup preference, and the
record and history row of a write (shared by the ORM service and the lean SQLite door, flows/lean_writes.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from flowledger.tasks.core.models import DEFAULT_RETENTION, Task, TaskEvent
from flowledger.tasks.core.states import (
    DeliveryStatus,
    NotifyPolicy,
    Runtime,
    ScopeKind,
    TaskStatus,
    TerminalOutcome,
    is_terminal,
)


def normal_times(created_at: datetime, started_at: datetime | None, last_event_at: datetime | None,
                 ended_at: datetime | None) -> tuple[datetime, datetime | None, datetime | None, datetime | None]:
    """REFERENCE §2.2 step 10 on the four times: created ≤ started ≤ last_event, ended ≥ start."""
    present = [t for t in (created_at, started_at, last_event_at, ended_at) if t is not None]
    created = min(present)
    started = max(started_at, created) if started_at is not None else None
    anchor = started or created
    last_event = max(last_event_at, anchor) if last_event_at is not None else None
    ended = max(ended_at, anchor) if ended_at is not None else None
    return created, started, last_event, ended


def normal_outcome(status: TaskStatus, outcome: TerminalOutcome | None) -> TerminalOutcome | None:
    """Only a success carries an outcome, and a success always does."""
    if status != TaskStatus.SUCCEEDED:
        return None
    return TerminalOutcome.SUCCEEDED if outcome is None else outcome


def normalize_timestamps(task: Task) -> Task:
    """REFERENCE §2.2 step 10: created ≤ started ≤ last_event, ended ≥ start; applied on every write."""
    created, started, last_event, ended = normal_times(task.created_at, task.started_at, task.last_event_at,
                                                       task.ended_at)
    outcome = normal_outcome(task.status, task.terminal_outcome)
    if (created, started, last_event, ended, outcome) == (
        task.created_at, task.started_at, task.last_event_at, task.ended_at, task.terminal_outcome
    ):
        return task
    return task.replace(created_at=created, started_at=started, last_event_at=last_event, ended_at=ended,
                        terminal_outcome=outcome)


def cleanup_at(terminal_at: datetime, retention: timedelta = DEFAULT_RETENTION) -> datetime:
    return terminal_at + retention


def cleanup_after_for(task: Task, retention: timedelta = DEFAULT_RETENTION) -> datetime:
    return cleanup_at(task.terminal_at, retention)


def with_cleanup_stamp(task: Task, retention: timedelta = DEFAULT_RETENTION) -> Task:
    """A terminal task without a cleanup stamp gets one (REFERENCE §3.5); active tasks never carry one."""
    if is_terminal(task.status) and task.cleanup_after is None:
        return task.replace(cleanup_after=cleanup_after_for(task, retention))
    return task


def status_summary(task: Task) -> str | None:
    """What the history row of entering `task.status` says: the error of a failure, the summary of a success."""
    if task.status == TaskStatus.FAILED:
        return task.error
    if task.status == TaskStatus.SUCCEEDED:
        return task.terminal_summary
    return None


def prepare_write(task: Task, retention: timedelta = DEFAULT_RETENTION) -> Task:
    return with_cleanup_stamp(normalize_timestamps(task), retention)


# A success may be overridden by a later failure (states.should_apply); its requester was already told "done".
_CORRECTING = frozenset({TaskStatus.FAILED, TaskStatus.TIMED_OUT})
_SETTLED = frozenset({DeliveryStatus.DELIVERED, DeliveryStatus.SESSION_QUEUED, DeliveryStatus.FAILED})


def reopen_delivery_on_override(previous: Task, new: Task) -> Task:
    """A settled success turned failed/timed_out is due one more terminal notice — the correction — per its
    notify policy (issue 12 item 7): its delivery goes back to pending. The notice's idempotency key names the
    new status, so it is a message of its own, sent once."""
    if (previous.status == TaskStatus.SUCCEEDED and new.status in _CORRECTING
            and previous.delivery_status in _SETTLED and new.delivery_status == previous.delivery_status
            and new.notify_policy != NotifyPolicy.SILENT):
        return new.replace(delivery_status=DeliveryStatus.PENDING)
    return new


def _key(value: str | None) -> str:
    return (value or "").strip()


def run_scope(candidates: Sequence[Task], session_key: str | None, runtime: Runtime | None = None) -> list[Task]:
    """Which tasks a run-scoped event touches (REFERENCE §2.3), with the cross-tenant collision guard."""
    tasks = [t for t in candidates if runtime is None or t.runtime == runtime]
    if session_key is not None and session_key.strip():
        key = session_key.strip()
        by_child = [t for t in tasks if _key(t.child_session_key) == key]
        if by_child:
            return by_child
        return [t for t in tasks if t.scope_kind == ScopeKind.SESSION and t.owner_key == key]
    scopes = {(t.runtime, t.scope_kind, t.owner_key, _key(t.child_session_key)) for t in tasks}
    return list(tasks) if len(scopes) <= 1 else []


def preferred(candidates: Sequence[Task]) -> Task | None:
    """The task a run id names: non-cli before cli, then the earliest created."""
    if not candidates:
        return None
    return min(candidates, key=lambda t: (t.runtime == Runtime.CLI, t.created_at))


def effective_cleanup_after(task: Task, retention: timedelta = DEFAULT_RETENTION) -> datetime:
    """The stored stamp, or the computed one; a lost task never outlives its computed retention."""
    computed = cleanup_after_for(task, retention)
    if task.cleanup_after is None:
        return computed
    if task.status == TaskStatus.LOST:
        return min(task.cleanup_after, computed)
    return task.cleanup_after


CANCELLED_BY_OPERATOR = "Cancelled by operator."
ALREADY_TERMINAL = "Task is already terminal."  # the refusal of a cancel that comes too late


def cancelled(current: Task, now: datetime, reason: str | None) -> Task:
    """An operator's cancel of an active task (REFERENCE §3.6), before `prepare_write`."""
    return current.replace(status=TaskStatus.CANCELLED, ended_at=now, last_event_at=now,
                           error=reason or CANCELLED_BY_OPERATOR)


def history_event(current: Task, new: Task, now: datetime, *, summary: str | None = None,
                  progress: bool = False) -> TaskEvent | None:
    """The `task_events` row a write of `new` over `current` appends: one per status change, or a progress report;
    None when neither."""
    if new.status == current.status and not (progress and summary):
        return None
    kind = new.status.value if new.status != current.status else "progress"
    if summary is None and kind != "progress":
        summary = status_summary(new)
    return TaskEvent(task_id=new.task_id, at=new.last_event_at or new.ended_at or now, kind=kind,
                     summary=summary, previous_status=current.status.value)


def created_event(created: Task) -> TaskEvent:
    """The `task_events` row a new task starts its history with."""
    return TaskEvent(task_id=created.task_id, at=created.created_at, kind=created.status.value,
                     summary=status_summary(created))
