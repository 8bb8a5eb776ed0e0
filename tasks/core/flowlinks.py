"""The parent-flow link check of task creation (REFERENCE §2.2 step 7), read straight from `flow_runs`.

It lives in the task layer because the rule guards a task write and the flow table is part of the one
schema; the flow layer may add stricter checks through `TaskHooks.validate_parent_flow`.
"""

from __future__ import annotations

from sqlalchemy import Connection, select

from flowledger.tasks.core.errors import ParentFlowLinkError
from flowledger.tasks.core.states import ScopeKind
from flowledger.tasks.core.tables import flow_runs

# `blocked` is deliberately absent: a blocked flow may still take a retry task.
TERMINAL_FLOW_STATUSES = frozenset({"succeeded", "failed", "cancelled", "lost"})


def check_parent_flow(conn: Connection, *, flow_id: str, owner_key: str, scope_kind: ScopeKind,
                      for_update: bool = False) -> None:
    """Raise ParentFlowLinkError(code) when a task with this owner and scope may not link to `flow_id`."""
    if scope_kind != ScopeKind.SESSION:
        raise ParentFlowLinkError("scope_kind_not_session", "Only session-scoped tasks can link to flows.")
    stmt = select(flow_runs.c.owner_key, flow_runs.c.status, flow_runs.c.cancel_requested_at).where(
        flow_runs.c.flow_id == flow_id
    )
    if for_update:
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).first()
    if row is None:
        raise ParentFlowLinkError("parent_flow_not_found", f"Parent flow not found: {flow_id}")
    if (row.owner_key or "").strip() != owner_key.strip():
        raise ParentFlowLinkError("owner_key_mismatch", "Task ownerKey must match parent flow ownerKey.")
    if row.cancel_requested_at is not None:
        raise ParentFlowLinkError("cancel_requested", "Parent flow cancellation has already been requested.")
    if row.status in TERMINAL_FLOW_STATUSES:
        raise ParentFlowLinkError("terminal", f"Parent flow is already {row.status}.")


def mirrored_flow_ids(conn: Connection, flow_ids: set[str]) -> set[str]:
    """Which of `flow_ids` are mirrored one-task flows (linked by the flow layer, not by the producer)."""
    if not flow_ids:
        return set()
    stmt = select(flow_runs.c.flow_id).where(flow_runs.c.flow_id.in_(sorted(flow_ids)),
                                              flow_runs.c.sync_mode.in_(["mirrored", "task_mirrored"]))
    return {row.flow_id for row in conn.execute(stmt)}
