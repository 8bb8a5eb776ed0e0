"""Task records as plain immutable values. The store maps them to rows; nothing here does I/O."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any, TypeVar

from flowledger.tasks.core.clock import iso_z
from flowledger.tasks.core.states import (
    DeliveryStatus,
    NotifyPolicy,
    Runtime,
    ScopeKind,
    TaskStatus,
    TerminalOutcome,
)

_Frozen = TypeVar("_Frozen")


def slot_setters(cls: type[Any]) -> tuple[Callable[[Any, Any], None], ...]:
    """Each field's slot setter of a slotted frozen dataclass, in declaration order. Set directly: the frozen
    `__setattr__` stands between callers and a built record, not between its module and a record it is building
    (what the dataclass `__init__` does too, by `object.__setattr__`)."""
    return tuple(getattr(cls, f.name).__set__ for f in dataclasses.fields(cls))


def slot_builder(cls: type[_Frozen]) -> Callable[[Iterable[Any]], _Frozen]:
    """`cls(*values)` for a slotted frozen dataclass, from every field's value in declaration order, without the
    frozen `__init__` (a keyword argument and an `object.__setattr__` per field): a third of the cost. No
    defaults: every value, always (a short iterable raises ValueError, never half a record)."""
    setters = slot_setters(cls)
    new = object.__new__

    def build(values: Iterable[Any]) -> _Frozen:
        built = new(cls)
        for setter, value in zip(setters, values, strict=True):
            setter(built, value)
        return built

    return build


# Retention for every terminal status, lost included (CONTRACT §6.2).
DEFAULT_RETENTION = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class DeliveryOrigin:
    """Where a completion message goes directly: a configured channel and a target on it."""

    channel: str
    to: str
    account_id: str | None = None
    thread_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"channel": self.channel, "to": self.to, "account_id": self.account_id,
                "thread_id": self.thread_id}

    @classmethod
    def from_mapping(cls, data: Any) -> DeliveryOrigin | None:
        if data is None:
            return None
        if isinstance(data, DeliveryOrigin):
            return data
        if not isinstance(data, dict):
            return None
        channel = str(data.get("channel") or "").strip()
        to = str(data.get("to") or "").strip()
        account = data.get("account_id", data.get("accountId"))
        thread = data.get("thread_id", data.get("threadId"))
        return cls(
            channel=channel,
            to=to,
            account_id=str(account) if account not in (None, "") else None,
            thread_id=str(thread) if thread not in (None, "") else None,
        )


@dataclass(frozen=True, slots=True)
class Task:
    task_id: str
    runtime: Runtime
    requester_session_key: str
    owner_key: str
    scope_kind: ScopeKind
    task: str
    status: TaskStatus
    delivery_status: DeliveryStatus
    notify_policy: NotifyPolicy
    created_at: datetime
    task_kind: str | None = None
    source_id: str | None = None
    child_session_key: str | None = None
    parent_flow_id: str | None = None
    parent_task_id: str | None = None
    agent_id: str | None = None
    requester_agent_id: str | None = None
    run_id: str | None = None
    label: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    last_event_at: datetime | None = None
    cleanup_after: datetime | None = None
    error: str | None = None
    progress_summary: str | None = None
    terminal_summary: str | None = None
    terminal_outcome: TerminalOutcome | None = None
    requester_origin: DeliveryOrigin | None = None
    media: tuple[str, ...] | None = None  # what a generation job produced (paths or URLs), in order

    def replace(self, **changes: Any) -> Task:
        """`dataclasses.replace` at half its cost (it rebuilds the keyword arguments and runs `__init__`): every
        write and every projected row makes one or two of these."""
        if not changes.keys() <= _TASK_FIELD_SET:
            return dataclasses.replace(self, **changes)  # its TypeError names the unknown field
        new = task_from_values(_task_field_values(self))
        for name, value in changes.items():
            _FIELD_SETTER[name](new, value)
        return new

    @property
    def last_activity_at(self) -> datetime:
        """The time the lost grace and the stale thresholds are measured from."""
        return self.last_event_at or self.started_at or self.created_at

    @property
    def terminal_at(self) -> datetime:
        return self.ended_at or self.last_event_at or self.created_at

    def to_json(self) -> dict[str, Any]:
        """The contract's Task JSON object (CONTRACT §3): snake_case keys, ISO-8601 Z, absent as null."""
        return {
            "task_id": self.task_id,
            "runtime": self.runtime.value,
            "task_kind": self.task_kind,
            "source_id": self.source_id,
            "requester_session_key": self.requester_session_key,
            "owner_key": self.owner_key,
            "scope_kind": self.scope_kind.value,
            "child_session_key": self.child_session_key,
            "parent_flow_id": self.parent_flow_id,
            "parent_task_id": self.parent_task_id,
            "agent_id": self.agent_id,
            "requester_agent_id": self.requester_agent_id,
            "run_id": self.run_id,
            "label": self.label,
            "task": self.task,
            "status": self.status.value,
            "delivery_status": self.delivery_status.value,
            "notify_policy": self.notify_policy.value,
            "created_at": iso_z(self.created_at),
            "started_at": iso_z(self.started_at),
            "ended_at": iso_z(self.ended_at),
            "last_event_at": iso_z(self.last_event_at),
            "cleanup_after": iso_z(self.cleanup_after),
            "error": self.error,
            "progress_summary": self.progress_summary,
            "terminal_summary": self.terminal_summary,
            "terminal_outcome": self.terminal_outcome.value if self.terminal_outcome else None,
            "requester_origin": self.requester_origin.to_json() if self.requester_origin else None,
            "media": list(self.media) if self.media is not None else None,
        }


_TASK_FIELDS = tuple(f.name for f in dataclasses.fields(Task))
_TASK_FIELD_SET = frozenset(_TASK_FIELDS)
_SLOT_SETTERS = slot_setters(Task)
_FIELD_SETTER = dict(zip(_TASK_FIELDS, _SLOT_SETTERS, strict=True))
_task_field_values: Callable[[Task], tuple[Any, ...]] = attrgetter(*_TASK_FIELDS)
# `Task(*values)` at a third of the cost: the store builds one per row it reads, every write one or two more.
task_from_values: Callable[[Iterable[Any]], Task] = slot_builder(Task)


TASK_FIELDS = _TASK_FIELDS


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One row of a task's append-only history: a status it entered, or a progress report."""

    task_id: str
    at: datetime
    kind: str  # a TaskStatus value or "progress"
    summary: str | None = None
    previous_status: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "at": iso_z(self.at), "kind": self.kind, "summary": self.summary,
                "previous_status": self.previous_status}


def collapse_whitespace(value: str | None) -> str | None:
    """Summaries collapse whitespace runs to one space; empty becomes absent (REFERENCE §2.1)."""
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def trimmed(value: str | None) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None
