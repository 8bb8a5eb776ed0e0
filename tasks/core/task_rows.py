"""One row of `task_runs` (joined with its delivery origin) -> a `Task`: the mapping both read paths share.

The ORM store (tasks/core/store.py) and the lean SQLite reader (tasks/health/sqlite_reads.py) both hand their rows to
`mapping_to_task` / `raw_to_task`, so a record reads the same whichever door it came through. No SQLAlchemy
here: times are the epoch milliseconds the `UTCMillis` column stores, converted by `stored_time`.

The other way too: `task_values` / `driver_values` are the column values a task is written with, by the ORM store
and by the lean SQLite writer (flows/lean_writes.py) alike.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from flowledger.tasks.core.clock import from_ms, require_aware, to_ms
from flowledger.tasks.core.errors import InvalidPersistedValueError, StorageUnavailableError
from flowledger.tasks.core.models import DeliveryOrigin, Task, task_from_values
from flowledger.tasks.core.states import (
    DeliveryStatus,
    NotifyPolicy,
    Runtime,
    ScopeKind,
    TaskStatus,
    TerminalOutcome,
)

log = logging.getLogger("flowledger.tasks.core.store")  # the logger these warnings always used
ORIGIN_KEY = "requester_origin_json"
# The UTCMillis columns of task_runs (tasks/core/tables.py; tests/store/test_sqlite_reads.py checks the list).
TIME_KEYS = ("created_at", "started_at", "ended_at", "last_event_at", "cleanup_after")


def stored_time(value: Any) -> datetime | None:
    """A stored epoch-millisecond time as an aware UTC datetime (what `UTCMillis` returns on load)."""
    if value is None:
        return None
    try:
        return from_ms(int(value))
    except (TypeError, ValueError, OverflowError):  # SQLite keeps whatever a hand edit stored
        raise StorageUnavailableError(f"Invalid persisted timestamp {value!r}: expected epoch milliseconds.") from None


def raw_to_task(keys: Sequence[str], row: Sequence[Any]) -> Task:
    """A driver row (times still in epoch ms) in the order of `keys` -> the Task."""
    m = dict(zip(keys, row, strict=True))
    for key in TIME_KEYS:
        m[key] = stored_time(m[key])
    return mapping_to_task(m)


def stored_enum(kind: Any, value: Any, ident: str, column: str, *, optional: bool = False, record: str = "task"
                ) -> Any:
    """The `kind` member a stored `column` of the `record` row `ident` holds (flows/flow_rows.py reads flows'
    with it too); InvalidPersistedValueError naming a value that is none."""
    # The member by its value straight from the enum's own table (what `kind(value)` looks up first, at a seventh
    # of the cost: six per row read); anything else takes the full call, which also names a bad stored value.
    member = kind._value2member_map_.get(value) if isinstance(value, str) else None
    if member is not None:
        return member
    if value is None and optional:
        return None
    try:
        return kind(value)
    except ValueError:
        raise InvalidPersistedValueError(record, ident, column, value) from None


def mapping_to_task(m: Any) -> Task:
    ident = m["task_id"]
    scope = stored_enum(ScopeKind, m["scope_kind"], ident, "scope_kind")
    requester = m["requester_session_key"] or ""
    if not requester and scope == ScopeKind.SESSION:
        requester = m["owner_key"]
    origin = None
    if m[ORIGIN_KEY] is not None:
        try:
            origin = DeliveryOrigin.from_mapping(json.loads(m[ORIGIN_KEY]))
        except ValueError:
            # The record stays readable without its origin (delivery falls back to the session queue), but the
            # damage is named rather than silently dropped.
            log.warning("task %s: ignoring unreadable persisted requester_origin_json %r", ident,
                        str(m[ORIGIN_KEY])[:40])
            origin = None
    # Every field in `Task`'s declaration order (models.TASK_FIELDS; tests/unit/test_task_build.py checks this
    # against the keyword constructor): `task_from_values` skips the frozen `__init__`, a third of a row's cost.
    return task_from_values((
        ident,
        stored_enum(Runtime, m["runtime"], ident, "runtime"),
        requester,
        m["owner_key"],
        scope,
        m["task"],
        stored_enum(TaskStatus, m["status"], ident, "status"),
        stored_enum(DeliveryStatus, m["delivery_status"], ident, "delivery_status"),
        stored_enum(NotifyPolicy, m["notify_policy"], ident, "notify_policy"),
        m["created_at"],
        m["task_kind"],
        m["source_id"],
        m["child_session_key"],
        m["parent_flow_id"],
        m["parent_task_id"],
        m["agent_id"],
        m["requester_agent_id"],
        m["run_id"],
        m["label"],
        m["started_at"],
        m["ended_at"],
        m["last_event_at"],
        m["cleanup_after"],
        m["error"],
        m["progress_summary"],
        m["terminal_summary"],
        stored_enum(TerminalOutcome, m["terminal_outcome"], ident, "terminal_outcome", optional=True),
        origin,
        _media(ident, m["media_json"]),
    ))


def _media(ident: str, text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    try:
        items = json.loads(text)
    except ValueError:
        items = None
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise InvalidPersistedValueError("task", ident, "media_json", text)
    return tuple(items)


# --- a Task -> the column values it is written with ---------------------------------------------------


def task_values(task: Task) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "runtime": task.runtime.value,
        "task_kind": task.task_kind,
        "source_id": task.source_id,
        "requester_session_key": "" if task.scope_kind == ScopeKind.SYSTEM else task.requester_session_key,
        "owner_key": task.owner_key,
        "scope_kind": task.scope_kind.value,
        "child_session_key": task.child_session_key,
        "parent_flow_id": task.parent_flow_id,
        "parent_task_id": task.parent_task_id,
        "agent_id": task.agent_id,
        "requester_agent_id": task.requester_agent_id,
        "run_id": task.run_id,
        "label": task.label,
        "task": task.task,
        "status": task.status.value,
        "delivery_status": task.delivery_status.value,
        "notify_policy": task.notify_policy.value,
        "created_at": task.created_at,
        "started_at": task.started_at,
        "ended_at": task.ended_at,
        "last_event_at": task.last_event_at,
        "cleanup_after": task.cleanup_after,
        "error": task.error,
        "progress_summary": task.progress_summary,
        "terminal_summary": task.terminal_summary,
        "terminal_outcome": task.terminal_outcome.value if task.terminal_outcome else None,
        "media_json": json.dumps(list(task.media)) if task.media is not None else None,
    }


def driver_values(values: dict[str, Any]) -> dict[str, Any]:
    """Times as the epoch ms `UTCMillis` stores (naive datetimes refused the same way)."""
    return {k: (to_ms(require_aware(v)) if isinstance(v, datetime) else v) for k, v in values.items()}


def changed_values(task: Task, previous: Task | None) -> dict[str, Any]:
    """The columns a compare-and-set of `task` writes (never `task_id`): given the `previous` version the writer
    started from, only those that differ, and always `status`, so a writer holding a slightly stale copy cannot
    revert a column another writer changed meanwhile."""
    values = task_values(task)
    del values["task_id"]
    if previous is not None:
        before = task_values(previous)
        values = {k: v for k, v in values.items() if k == "status" or before[k] != v}
    return values
