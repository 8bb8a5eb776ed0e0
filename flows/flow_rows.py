"""One `flow_runs` row -> a `Flow`: the mapping the ORM store (flows/store.py) and the lean SQLite reader
(tasks/health/sqlite_reads.py via flows/lean_reads.py) share, so a flow reads the same through either door."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from flowledger.flows.models import (
    ABSENT,
    LEGACY_CONTROLLER,
    Flow,
    FlowStatus,
    SyncMode,
    flow_from_values,
    parse_sync_mode,
)
from flowledger.tasks.core.errors import InvalidPersistedValueError
from flowledger.tasks.core.models import DeliveryOrigin
from flowledger.tasks.core.states import NotifyPolicy
from flowledger.tasks.core.task_rows import stored_enum, stored_time

# The UTCMillis columns of flow_runs (tasks/core/tables.py; tests/store/test_sqlite_reads.py checks the list).
TIME_KEYS = ("cancel_requested_at", "created_at", "updated_at", "ended_at")


def raw_to_flow(keys: Sequence[str], row: Sequence[Any]) -> Flow:
    """A driver row (times still in epoch ms) in the order of `keys` -> the Flow."""
    m = dict(zip(keys, row, strict=True))
    for key in TIME_KEYS:
        m[key] = stored_time(m[key])
    return mapping_to_flow(m)


def load_json(text: str | None, ident: str, column: str) -> Any:
    if text is None:
        return ABSENT
    try:
        return json.loads(text)
    except ValueError:
        raise InvalidPersistedValueError("flow", ident, column, text[:40]) from None


def mapping_to_flow(m: Any) -> Flow:
    """A `flow_runs` row as a mapping (times already datetimes) -> the Flow."""
    ident = m["flow_id"]
    mode = parse_sync_mode(m["sync_mode"])
    controller = m["controller_id"]
    if mode == SyncMode.MANAGED and not (controller or "").strip():
        controller = LEGACY_CONTROLLER
    status = stored_enum(FlowStatus, m["status"], ident, "status", record="flow")
    policy = stored_enum(NotifyPolicy, m["notify_policy"], ident, "notify_policy", record="flow")
    origin = None
    if m["requester_origin_json"]:
        try:
            origin = DeliveryOrigin.from_mapping(json.loads(m["requester_origin_json"]))
        except ValueError:
            origin = None
    # In FLOW_FIELDS order (tests/unit/test_flow_build.py checks the mapping against the constructor).
    return flow_from_values((
        ident, mode, m["owner_key"], status, policy, m["goal"], m["created_at"], m["updated_at"] or m["created_at"],
        max(0, int(m["revision"] or 0)), controller, m["current_step"], m["blocked_task_id"], m["blocked_summary"],
        load_json(m["state_json"], ident, "state_json"), load_json(m["wait_json"], ident, "wait_json"),
        m["cancel_requested_at"], m["ended_at"], origin))
