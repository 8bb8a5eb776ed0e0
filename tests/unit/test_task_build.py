"""`models.task_from_values` and `Task.replace` build the Task the dataclass constructor and `dataclasses.replace`
build: same fields, equal, hashable alike, still frozen; and the row mapping lists every field in order."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from flowledger.tasks.core import task_rows
from flowledger.tasks.core.models import TASK_FIELDS, DeliveryOrigin, Task, task_from_values
from flowledger.tasks.core.states import (
    DeliveryStatus,
    NotifyPolicy,
    Runtime,
    ScopeKind,
    TaskStatus,
    TerminalOutcome,
)

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def _full() -> Task:
    """A task whose every field holds a value distinct from every other field's."""
    return Task(task_id="t-1", runtime=Runtime.ACP, requester_session_key="req", owner_key="owner",
                scope_kind=ScopeKind.SESSION, task="work", status=TaskStatus.SUCCEEDED,
                delivery_status=DeliveryStatus.DELIVERED, notify_policy=NotifyPolicy.DONE_ONLY, created_at=T0,
                task_kind="kind", source_id="src", child_session_key="child", parent_flow_id="flow",
                parent_task_id="parent", agent_id="agent", requester_agent_id="ragent", run_id="run", label="label",
                started_at=T0 + timedelta(seconds=1), ended_at=T0 + timedelta(seconds=3),
                last_event_at=T0 + timedelta(seconds=2), cleanup_after=T0 + timedelta(days=7), error="err",
                progress_summary="prog", terminal_summary="done", terminal_outcome=TerminalOutcome.SUCCEEDED,
                requester_origin=DeliveryOrigin(channel="c", to="x"), media=("a.png",))


def test_task_from_values_equals_the_constructor() -> None:
    task = _full()
    built = task_from_values(getattr(task, name) for name in TASK_FIELDS)
    assert built == task and hash(built) == hash(task)
    assert dataclasses.asdict(built) == dataclasses.asdict(task)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.status = TaskStatus.RUNNING  # type: ignore[misc]
    with pytest.raises(ValueError):  # every field, always: a short tuple is refused, never half a Task
        task_from_values(getattr(task, name) for name in TASK_FIELDS[:-1])


def test_replace_equals_dataclasses_replace() -> None:
    task = _full()
    changes = {"status": TaskStatus.FAILED, "error": "boom", "terminal_outcome": None}
    assert task.replace(**changes) == dataclasses.replace(task, **changes)
    assert task.replace() == task and task.replace() is not task
    with pytest.raises(TypeError):
        task.replace(no_such_field=1)


def test_the_row_mapping_fills_every_field_in_order() -> None:
    task = _full()
    row = {"task_id": task.task_id, "runtime": "acp", "task_kind": "kind", "source_id": "src",
           "requester_session_key": "req", "owner_key": "owner", "scope_kind": "session", "child_session_key": "child",
           "parent_flow_id": "flow", "parent_task_id": "parent", "agent_id": "agent", "requester_agent_id": "ragent",
           "run_id": "run", "label": "label", "task": "work", "status": "succeeded", "delivery_status": "delivered",
           "notify_policy": "done_only", "created_at": task.created_at, "started_at": task.started_at,
           "ended_at": task.ended_at, "last_event_at": task.last_event_at, "cleanup_after": task.cleanup_after,
           "error": "err", "progress_summary": "prog", "terminal_summary": "done", "terminal_outcome": "succeeded",
           task_rows.ORIGIN_KEY: '{"channel": "c", "to": "x"}', "media_json": '["a.png"]'}
    assert task_rows.mapping_to_task(row) == task
