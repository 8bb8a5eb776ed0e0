"""One `flow_runs` row -> a `Flow`: the mapping the ORM store (flows/store.py) and the lean SQLite reader
(tasks/health/sqlite_reads.py via flows/lean_reads.py) share, so a flow reads the same through either door."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from flowledger.flows.models import ABSENT, LEGACY_CONTROLLER, Flow, FlowStatus, SyncMode, parse_sync_mode
from flowledger.tasks.core.errors import InvalidPersistedValueError
from flowledger.tasks.core.models import DeliveryOrigin
from flowledger.tasks.core.states import NotifyPolicy
from flowledger.tasks.core.task_rows import stored_time

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
    try:
        status = FlowStatus(m["status"])
    except ValueError:
        raise InvalidPersistedValueError("flow", ident, "status", m["status"]) from None
    try:
        policy = NotifyPolicy(m["notify_policy"])
    except ValueError:
        raise InvalidPersistedValueError("flow", ident, "notify_policy", m["notify_policy"]) from None
    origin = None
    if m["requester_origin_json"]:
        try:
            origin = DeliveryOrigin.from_mapping(json.loads(m["requester_origin_json"]))
        except ValueError:
            origin = None
    return Flow(
        flow_id=ident,
        sync_mode=mode,
        owner_key=m["owner_key"],
        controller_id=controller,
        revision=max(0, int(m["revision"] or 0)),
        status=status,
        notify_policy=policy,
        goal=m["goal"],
        current_step=m["current_step"],
        blocked_task_id=m["blocked_task_id"],
        blocked_summary=m["blocked_summary"],
        state=load_json(m["state_json"], ident, "state_json"),
        wait=load_json(m["wait_json"], ident, "wait_json"),
        cancel_requested_at=m["cancel_requested_at"],
        created_at=m["created_at"],
        updated_at=m["updated_at"] or m["created_at"],
        ended_at=m["ended_at"],
        requester_origin=origin,
    )
