"""The task service's extension points and what they are handed.

A `Change` is one committed write; `TaskHooks` let the layers above (flows, delivery) take part in a write: check a
parent flow link, adjust a row before insert, write in the same transaction, act after commit. They live apart
from the service so that what writes tasks in batches (bulk.py) uses them without importing the service.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection

from flowledger.tasks.core.models import Task, TaskEvent
from flowledger.tasks.core.states import ScopeKind

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Change:
    """A committed write: the task as it is now, as it was, and the history row it appended."""

    task: Task
    previous: Task | None
    event: TaskEvent | None


Changes = list[Change]


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
