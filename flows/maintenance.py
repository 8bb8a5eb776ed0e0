"""Flow maintenance (REFERENCE §9.6, CONTRACT §6.5): a pure-ish plan read in one pass, then an apply that
re-checks every flow under a row lock and skips any that changed since the plan.

For each flow the first matching step wins:
1. mirrored timestamp repair: a terminal mirrored flow whose updated_at passed its ended_at;
2. managed cancel finalisation: cancel requested, not terminal, no active child → cancelled;
3. blocked-task repair (reference-bugs 143739): a blocked flow pointing at a task that no longer exists drops
   the dangling id, keeps (or writes) a summary and gets an ended_at, so it ages out instead of staying stuck;
4. prune: terminal (blocked included), no active child, finished ≥ 7 days ago → deleted.
Steps 1–3 count as `reconciled`, step 4 as `pruned`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import Connection

from flowledger.flows import store
from flowledger.flows.models import MAINTENANCE_TERMINAL, Flow, FlowStatus, SyncMode
from flowledger.tasks.core.models import DEFAULT_RETENTION, Task
from flowledger.tasks.core.states import ACTIVE

if TYPE_CHECKING:
    from flowledger.flows.ledger import Ledger

BATCH = 500


class FlowRepair(StrEnum):
    TIMESTAMPS = "repair_timestamps"
    CANCEL = "finalise_cancel"
    BLOCKED = "repair_blocked"
    PRUNE = "prune"


@dataclass(frozen=True, slots=True)
class FlowAction:
    flow_id: str
    kind: FlowRepair
    revision: int


@dataclass(frozen=True, slots=True)
class FlowMaintenancePlan:
    actions: Sequence[FlowAction] = field(default_factory=tuple)

    @property
    def reconciled(self) -> int:
        return sum(a.kind != FlowRepair.PRUNE for a in self.actions)

    @property
    def pruned(self) -> int:
        return sum(a.kind == FlowRepair.PRUNE for a in self.actions)


def decide(flow: Flow, linked: Sequence[Task], existing_ids: set[str], now: datetime,
           retention: timedelta = DEFAULT_RETENTION) -> FlowRepair | None:
    """The one maintenance step this flow needs now, if any. Pure."""
    terminal = flow.status in MAINTENANCE_TERMINAL
    if (flow.sync_mode == SyncMode.MIRRORED and terminal and flow.ended_at is not None
            and flow.ended_at >= flow.created_at and flow.updated_at > flow.ended_at):
        return FlowRepair.TIMESTAMPS
    active = any(t.status in ACTIVE for t in linked)
    if (flow.sync_mode == SyncMode.MANAGED and flow.cancel_requested_at is not None and not flow.is_link_terminal
            and not active):
        return FlowRepair.CANCEL
    if flow.status == FlowStatus.BLOCKED and flow.blocked_task_id and flow.blocked_task_id not in existing_ids:
        return FlowRepair.BLOCKED
    if terminal and not active and now - flow.last_activity_at >= retention:
        return FlowRepair.PRUNE
    return None


def repaired(flow: Flow, kind: FlowRepair, now: datetime) -> Flow:
    """The flow after a non-prune repair (revision untouched)."""
    if kind == FlowRepair.TIMESTAMPS:
        return flow.replace(updated_at=flow.ended_at)
    if kind == FlowRepair.CANCEL:
        assert flow.cancel_requested_at is not None
        end = max(now, flow.updated_at, flow.cancel_requested_at)
        return flow.replace(status=FlowStatus.CANCELLED, blocked_task_id=None, blocked_summary=None, wait=None,
                            current_step=None, ended_at=end, updated_at=end)
    summary = flow.blocked_summary or f"Blocked task {flow.blocked_task_id} no longer exists."
    end = flow.ended_at or flow.updated_at
    return flow.replace(blocked_task_id=None, blocked_summary=summary, ended_at=end,
                        updated_at=max(end, flow.updated_at))


def _decide_batch(conn: Connection, flows: Sequence[Flow], now: datetime, retention: timedelta
                  ) -> list[tuple[Flow, FlowRepair]]:
    linked = store.linked_for(conn, [f.flow_id for f in flows])
    blockers = [f.blocked_task_id for f in flows if f.blocked_task_id]
    existing = store.existing_task_ids(conn, blockers)
    out = []
    for flow in flows:
        kind = decide(flow, linked.get(flow.flow_id, []), existing, now, retention)
        if kind is not None:
            out.append((flow, kind))
    return out


def plan_flows(conn: Connection, now: datetime, retention: timedelta = DEFAULT_RETENTION) -> FlowMaintenancePlan:
    """What maintenance would do to every flow now; writes nothing (the preview)."""
    actions: list[FlowAction] = []
    after = 0
    while True:
        batch = store.stream(conn, after_seq=after, batch=BATCH)
        if not batch:
            break
        after = batch[-1][0]
        for flow, kind in _decide_batch(conn, [f for _, f in batch], now, retention):
            actions.append(FlowAction(flow.flow_id, kind, flow.revision))
    return FlowMaintenancePlan(tuple(actions))


def apply_flows(ledger: Ledger, plan: FlowMaintenancePlan, now: datetime,
                retention: timedelta = DEFAULT_RETENTION) -> tuple[int, int]:
    """Apply `plan`, one transaction per batch; a flow whose revision or verdict changed is skipped.

    Returns (reconciled, pruned).
    """
    reconciled = pruned = 0
    actions = list(plan.actions)
    for start in range(0, len(actions), BATCH):
        chunk = actions[start:start + BATCH]

        def unit(conn: Connection, chunk: Sequence[FlowAction] = chunk) -> tuple[int, int]:
            done_r = done_p = 0
            current: list[Flow] = []
            for action in chunk:
                flow = store.get(conn, action.flow_id, for_update=True)
                if flow is not None and flow.revision == action.revision:
                    current.append(flow)
            wanted = {a.flow_id: a.kind for a in chunk}
            to_delete = []
            for flow, kind in _decide_batch(conn, current, now, retention):
                if wanted.get(flow.flow_id) != kind:
                    continue
                if kind == FlowRepair.PRUNE:
                    to_delete.append(flow.flow_id)
                    continue
                new = repaired(flow, kind, now).replace(revision=flow.revision + 1)
                if store.compare_and_set(conn, new, expected_revision=flow.revision):
                    done_r += 1
            done_p = store.delete_flows(conn, to_delete)
            return done_r, done_p

        r, p = ledger.db.transact(unit)
        reconciled += r
        pruned += p
    return reconciled, pruned
