"""The pure rules under FlowService's writes (REFERENCE §9.3): the patch semantics, the KEEP marker, when a
managed flow refuses a child task, and the timestamps of a write to an ended flow. No database, no clock."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flowledger.flows import store
from flowledger.flows.models import LINK_TERMINAL, Flow, FlowStatus, SyncMode
from flowledger.tasks.core.clock import coerce_time
from flowledger.tasks.core.errors import InvalidInputError
from flowledger.tasks.core.models import trimmed
from flowledger.tasks.core.states import NotifyPolicy, parse_enum

# A keyword left at KEEP leaves the field as it is; None clears it (for state/wait: an explicit JSON null).
KEEP: Any = type("Keep", (), {"__repr__": lambda self: "KEEP"})()

CONTROLLER_REQUIRED = "Managed flow controllerId is required."
# The fields a patch may name.
PATCHABLE = frozenset({"status", "notify_policy", "goal", "current_step", "blocked_task_id", "blocked_summary",
                       "state", "wait", "cancel_requested_at", "ended_at", "controller_id", "updated_at"})

when = coerce_time


def apply_patch(flow: Flow, patch: Mapping[str, Any], now: datetime) -> Flow:
    """REFERENCE §9.3 patch semantics: status/notify/goal only when truthy; other keys present = set/clear."""
    unknown = set(patch) - PATCHABLE
    if unknown:
        raise InvalidInputError(f"Unknown flow field(s): {', '.join(sorted(unknown))}.")
    changes: dict[str, Any] = {}
    if patch.get("status"):
        changes["status"] = parse_enum(FlowStatus, patch["status"], "flow status")
    if patch.get("notify_policy"):
        changes["notify_policy"] = parse_enum(NotifyPolicy, patch["notify_policy"], "notify policy")
    if patch.get("goal"):
        changes["goal"] = str(patch["goal"]).strip() or flow.goal
    for name in ("current_step", "blocked_task_id", "blocked_summary"):
        if name in patch and patch[name] is not KEEP:
            changes[name] = trimmed(patch[name])
    for name in ("state", "wait"):
        if name in patch and patch[name] is not KEEP:
            changes[name] = patch[name]
    for name in ("cancel_requested_at", "ended_at"):
        if name in patch and patch[name] is not KEEP:
            changes[name] = when(patch[name], name)
    if "controller_id" in patch and patch["controller_id"] is not KEEP:
        controller = trimmed(patch["controller_id"])
        if controller is None and flow.sync_mode == SyncMode.MANAGED:
            raise InvalidInputError(CONTROLLER_REQUIRED)
        changes["controller_id"] = controller
    changes["updated_at"] = when(patch.get("updated_at"), "updated_at") or now
    return flow.replace(**changes)


def given(**fields: Any) -> dict[str, Any]:
    """The keywords a caller actually gave (not left at KEEP)."""
    return {k: v for k, v in fields.items() if v is not KEEP}


def settle_timestamps(current: Flow, new: Flow) -> Flow:
    """A write to a managed flow that had already ended and stays ended (its driver recording the steps' final
    state after a cancel from another process) does not move `updated_at` past `ended_at`: the flow itself did
    not change after its end, and the audit holds `ended_at ≥ updated_at` for ended flows. (A mirrored flow's
    times follow its tasks; maintenance repairs those.)"""
    if (current.sync_mode == SyncMode.MANAGED and current.status in LINK_TERMINAL and new.status == current.status
            and new.ended_at is not None and new.updated_at > new.ended_at):
        return new.replace(updated_at=new.ended_at)
    return new


def run_refusal(flow: Flow | store.FlowHead) -> str | None:
    """Why a flow refuses a new child task, or None (REFERENCE §9.2)."""
    if flow.sync_mode != SyncMode.MANAGED:
        return "Flow does not accept managed child tasks."
    if flow.cancel_requested_at is not None:
        return "Flow cancellation has already been requested."
    if flow.status in LINK_TERMINAL:
        return f"Flow is already {flow.status.value}."
    return None
