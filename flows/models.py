"""Flow records and the result shapes of flow operations, as plain immutable values (REFERENCE §9.1).

`state` and `wait` are arbitrary JSON where an explicit `null` is a value of its own: a flow that never had a
state holds `ABSENT`, one whose state was set to `None` holds `None`. The store writes the text `'null'` for the
second and SQL NULL for the first, so the distinction survives a round trip on every engine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from flowledger.tasks.core.clock import iso_z
from flowledger.tasks.core.models import DeliveryOrigin, Task, slot_builder
from flowledger.tasks.core.states import NotifyPolicy


class _Absent:
    """The value of a JSON field that was never set (distinct from an explicit JSON null)."""

    _instance: _Absent | None = None

    def __new__(cls) -> _Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False


ABSENT: Final = _Absent()


class FlowStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    BLOCKED = "blocked"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"


class SyncMode(StrEnum):
    MANAGED = "managed"
    MIRRORED = "mirrored"


# "Terminal" differs by call site (REFERENCE §9.4): links, run_task and cancel treat a blocked flow as live;
# maintenance (pruning, timestamp repair) treats it as finished.
LINK_TERMINAL: frozenset[FlowStatus] = frozenset(
    {FlowStatus.SUCCEEDED, FlowStatus.FAILED, FlowStatus.CANCELLED, FlowStatus.LOST}
)
MAINTENANCE_TERMINAL: frozenset[FlowStatus] = LINK_TERMINAL | {FlowStatus.BLOCKED}
ACTIVE_FLOW: frozenset[FlowStatus] = frozenset({FlowStatus.QUEUED, FlowStatus.RUNNING})

LEGACY_CONTROLLER = "core/legacy-restored"
GRAPH_CONTROLLER = "flowledger/graph"


def parse_sync_mode(value: object) -> SyncMode:
    """Restore rule: `mirrored` and the reference's `task_mirrored` are mirrored; anything else is managed."""
    text = str(value or "").strip()
    return SyncMode.MIRRORED if text in {"mirrored", "task_mirrored"} else SyncMode.MANAGED


@dataclass(frozen=True, slots=True)
class Flow:
    flow_id: str
    sync_mode: SyncMode
    owner_key: str
    status: FlowStatus
    notify_policy: NotifyPolicy
    goal: str
    created_at: datetime
    updated_at: datetime
    revision: int = 0
    controller_id: str | None = None
    current_step: str | None = None
    blocked_task_id: str | None = None
    blocked_summary: str | None = None
    state: Any = ABSENT
    wait: Any = ABSENT
    cancel_requested_at: datetime | None = None
    ended_at: datetime | None = None
    requester_origin: DeliveryOrigin | None = None

    def replace(self, **changes: Any) -> Flow:
        return dataclasses.replace(self, **changes)

    @property
    def is_link_terminal(self) -> bool:
        return self.status in LINK_TERMINAL

    @property
    def last_activity_at(self) -> datetime:
        return self.ended_at or self.updated_at or self.created_at

    def to_json(self) -> dict[str, Any]:
        """The contract's Flow JSON object (CONTRACT §3): absent and null JSON both print as null."""
        return {
            "flow_id": self.flow_id,
            "sync_mode": self.sync_mode.value,
            "owner_key": self.owner_key,
            "controller_id": self.controller_id,
            "revision": self.revision,
            "status": self.status.value,
            "notify_policy": self.notify_policy.value,
            "goal": self.goal,
            "current_step": self.current_step,
            "blocked_task_id": self.blocked_task_id,
            "blocked_summary": self.blocked_summary,
            "state": None if self.state is ABSENT else self.state,
            "wait": None if self.wait is ABSENT else self.wait,
            "cancel_requested_at": iso_z(self.cancel_requested_at),
            "created_at": iso_z(self.created_at),
            "updated_at": iso_z(self.updated_at),
            "ended_at": iso_z(self.ended_at),
        }


FLOW_FIELDS = tuple(f.name for f in dataclasses.fields(Flow))
# `Flow(*values)` at a third of the cost: `status` maps every flow of the ledger for its audit.
flow_from_values: Callable[[Iterable[Any]], Flow] = slot_builder(Flow)


class UpdateReason(StrEnum):
    NOT_FOUND = "not_found"
    REVISION_CONFLICT = "revision_conflict"
    PERSIST_FAILED = "persist_failed"
    NOT_MANAGED = "not_managed"  # only from an owner-bound view (REFERENCE §9.3)


@dataclass(frozen=True, slots=True)
class FlowUpdate:
    """Result of a revision-checked operation: applied with the new flow, or the reason and the current flow."""

    applied: bool
    reason: UpdateReason | None = None
    flow: Flow | None = None
    current: Flow | None = None


@dataclass(frozen=True, slots=True)
class RunTaskResult:
    found: bool
    created: bool
    reason: str | None = None
    task: Task | None = None
    flow: Flow | None = None


@dataclass(frozen=True, slots=True)
class FlowCancelResult:
    found: bool
    cancelled: bool
    reason: str | None = None
    flow: Flow | None = None
    tasks: Sequence[Task] = field(default_factory=tuple)


# The list types FlowService and its owner-bound view return (a `list` method in their classes shadows `list`).
FlowList = list[Flow]
TaskList = list[Task]
