"""One row of `task_runs` (joined with its delivery origin) -> a `Task`: the mapping both read paths share.

The ORM store (tasks/core/store.py) and the lean SQLite reader (tasks/health/sqlite_reads.py) both hand their rows to
`mapping_to_task` / `raw_to_task`, so a record reads the same whichever door it came through. No SQLAlchemy
here: times are the epoch milliseconds the `UTCMillis` column stores, converted by `stored_time`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from flowledger.tasks.core.clock import from_ms
from flowledger.tasks.core.errors import InvalidPersistedValueError, StorageUnavailableError
from flowledger.tasks.core.models import DeliveryOrigin, Task
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


def _enum(kind: Any, value: Any, ident: str, column: str, *, optional: bool = False) -> Any:
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
        raise InvalidPersistedValueError("task", ident, column, value) from None


def mapping_to_task(m: Any) -> Task:
    ident = m["task_id"]
    scope = _enum(ScopeKind, m["scope_kind"], ident, "scope_kind")
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
    return Task(
        task_id=ident,
        runtime=_enum(Runtime, m["runtime"], ident, "runtime"),
        task_kind=m["task_kind"],
        source_id=m["source_id"],
        requester_session_key=requester,
        owner_key=m["owner_key"],
        scope_kind=scope,
        child_session_key=m["child_session_key"],
        parent_flow_id=m["parent_flow_id"],
        parent_task_id=m["parent_task_id"],
        agent_id=m["agent_id"],
        requester_agent_id=m["requester_agent_id"],
        run_id=m["run_id"],
        label=m["label"],
        task=m["task"],
        status=_enum(TaskStatus, m["status"], ident, "status"),
        delivery_status=_enum(DeliveryStatus, m["delivery_status"], ident, "delivery_status"),
        notify_policy=_enum(NotifyPolicy, m["notify_policy"], ident, "notify_policy"),
        created_at=m["created_at"],
        started_at=m["started_at"],
        ended_at=m["ended_at"],
        last_event_at=m["last_event_at"],
        cleanup_after=m["cleanup_after"],
        error=m["error"],
        progress_summary=m["progress_summary"],
        terminal_summary=m["terminal_summary"],
        terminal_outcome=_enum(TerminalOutcome, m["terminal_outcome"], ident, "terminal_outcome", optional=True),
        requester_origin=origin,
        media=_media(ident, m["media_json"]),
    )


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
