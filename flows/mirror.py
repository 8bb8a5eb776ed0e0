"""Flows follow their tasks: the TaskHooks the flow layer installs on every ledger (REFERENCE §9.2, §9.5).

Everything here runs inside the transaction that writes the task, so a flow can never disagree with a committed
task write: one-task mirrored flows are created with their task, mirrored flows re-derive their status from
every linked task, and a managed flow with a cancel request ends `cancelled` when its last active child ends.

The many-task rule (an extension of the reference's one-task mirror, see docs/flows.md), first match wins:
any child running → running; any child queued → queued; then, all children terminal: any failed or timed out
→ failed; any lost → lost; any cancelled → cancelled; any succeeded with a blocked outcome → blocked;
else succeeded. With one child it is exactly the reference's mapping.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from flowledger.flows import store
from flowledger.flows.flow_rows import load_json
from flowledger.flows.models import (
    LINK_TERMINAL,
    MAINTENANCE_TERMINAL,
    Flow,
    FlowStatus,
    SyncMode,
    parse_sync_mode,
)
from flowledger.tasks.core import store as task_store
from flowledger.tasks.core import task_rows, write_batch
from flowledger.tasks.core.errors import InvalidPersistedValueError
from flowledger.tasks.core.hooks import Change, TaskHooks
from flowledger.tasks.core.ids import new_id
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.prepared import Prepared
from flowledger.tasks.core.states import (
    DeliveryStatus,
    NotifyPolicy,
    Runtime,
    ScopeKind,
    TaskStatus,
    TerminalOutcome,
)
from flowledger.tasks.core.tables import UTCMillis, flow_runs

log = logging.getLogger(__name__)

ONE_TASK_RUNTIMES = frozenset({Runtime.ACP, Runtime.SUBAGENT})
DEFAULT_GOAL = "Background task"


def wants_one_task_flow(task: Task) -> bool:
    """REFERENCE §9.2: detached acp/subagent work owned by a session, with a deliverable completion."""
    return (task.parent_flow_id is None and task.scope_kind == ScopeKind.SESSION
            and task.delivery_status != DeliveryStatus.NOT_APPLICABLE and task.runtime in ONE_TASK_RUNTIMES)


def _blocked(task: Task) -> bool:
    return task.status == TaskStatus.SUCCEEDED and task.terminal_outcome == TerminalOutcome.BLOCKED


def mirrored_status(tasks: Sequence[Task]) -> FlowStatus | None:
    """The many-task rule of this module's docstring; None when the flow has no linked task."""
    if not tasks:
        return None
    statuses = {t.status for t in tasks}
    if TaskStatus.RUNNING in statuses:
        return FlowStatus.RUNNING
    if TaskStatus.QUEUED in statuses:
        return FlowStatus.QUEUED
    if statuses & {TaskStatus.FAILED, TaskStatus.TIMED_OUT}:
        return FlowStatus.FAILED
    if TaskStatus.LOST in statuses:
        return FlowStatus.LOST
    if TaskStatus.CANCELLED in statuses:
        return FlowStatus.CANCELLED
    if any(_blocked(t) for t in tasks):
        return FlowStatus.BLOCKED
    return FlowStatus.SUCCEEDED


def _goal(task: Task) -> str:
    return task.label or task.task or DEFAULT_GOAL


def derive_mirrored(flow: Flow, tasks: Sequence[Task], previous: Task | None = None) -> Flow:
    """The mirrored flow as its linked tasks say it is (revision untouched); `previous` is the written task as
    it was before the write. Pure."""
    status = mirrored_status(tasks)
    if status is None:
        return flow
    changes: dict[str, object] = {"status": status, "wait": None, "blocked_task_id": None, "blocked_summary": None}
    if len(tasks) == 1 and previous is not None and previous.task_id == tasks[0].task_id:
        # A one-task flow is its task (the reference's mirror): goal and policy follow the task while they still
        # match what the task said before this write. A flow given its own goal or policy keeps them.
        only = tasks[0]
        if flow.goal == _goal(previous):
            changes["goal"] = _goal(only)
        if flow.notify_policy == previous.notify_policy:
            changes["notify_policy"] = only.notify_policy
    if status == FlowStatus.BLOCKED:
        blocker = max((t for t in tasks if _blocked(t)), key=lambda t: t.terminal_at)
        changes["blocked_task_id"] = blocker.task_id
        changes["blocked_summary"] = blocker.terminal_summary or blocker.progress_summary
    if status in MAINTENANCE_TERMINAL:
        end = max([*(t.ended_at or t.last_event_at or flow.created_at for t in tasks), flow.created_at])
        changes["updated_at"] = end
        changes["ended_at"] = end
    else:
        heard = [t.last_event_at for t in tasks if t.last_event_at is not None]
        changes["updated_at"] = max([*heard, flow.created_at])
        changes["ended_at"] = None
    return flow.replace(**changes)


def one_task_flow(task: Task) -> Flow:
    """The mirrored flow created together with a new acp/subagent task."""
    base = Flow(flow_id=new_id(), sync_mode=SyncMode.MIRRORED, owner_key=task.owner_key,
                status=FlowStatus.QUEUED, notify_policy=task.notify_policy,
                goal=_goal(task),
                created_at=task.created_at, updated_at=task.created_at, requester_origin=task.requester_origin)
    return derive_mirrored(base, [task.replace(parent_flow_id=base.flow_id)])


class FlowHooks(TaskHooks):
    """Installed first on every ledger's TaskService (before delivery), see flows/extensions.py."""

    def __init__(self) -> None:
        # Flows created in prepare_insert, with the task they were derived from: when exactly that task is then
        # written, the flow already says what a sync would, so the sync is skipped. An entry whose transaction
        # failed before the write is never looked up again (flow ids are fresh uuids) and costs one small dict slot.
        self._derived_from: dict[str, Task] = {}

    def prepare_insert(self, conn: Connection, task: Task, now: datetime) -> Task:
        if not wants_one_task_flow(task):
            return task
        flow = one_task_flow(task)
        values = task_rows.driver_values(store.flow_values(flow))
        shape = tuple(values)
        prepared = _INSERT_FLOW.get(shape)
        if prepared is None:
            prepared = _INSERT_FLOW[shape] = Prepared(insert(flow_runs), list(shape))
        prepared.run(conn, values)
        log.info("flow %s created (mirrored) for task %s", flow.flow_id, task.task_id)
        linked = task.replace(parent_flow_id=flow.flow_id)
        self._derived_from[flow.flow_id] = linked
        return linked

    def on_written(self, conn: Connection, change: Change, now: datetime) -> None:
        task = change.task
        before = change.previous.parent_flow_id if change.previous is not None else None
        if change.previous is None and task.parent_flow_id:
            derived_from = self._derived_from.pop(task.parent_flow_id, None)
            if derived_from is not None and derived_from == task:
                return
        if task.parent_flow_id:
            sync_flow(conn, task.parent_flow_id, task, now, change.previous)
        if before and before != task.parent_flow_id:
            sync_flow(conn, before, None, now)  # the task moved away: its old flow re-derives without it


# Every task write syncs its flow, so the sync reads and writes through statements built once. The mirrored
# path reads only the columns `derive_mirrored` looks at (never the state JSON) and writes only the columns it
# changed, guarded on the revision it read under the row lock.
_SYNC_COLUMNS = (flow_runs.c.flow_id, flow_runs.c.sync_mode, flow_runs.c.owner_key, flow_runs.c.status,
                 flow_runs.c.revision, flow_runs.c.notify_policy, flow_runs.c.goal, flow_runs.c.blocked_task_id,
                 flow_runs.c.blocked_summary, flow_runs.c.wait_json, flow_runs.c.cancel_requested_at,
                 flow_runs.c.created_at, flow_runs.c.updated_at, flow_runs.c.ended_at)
_SYNC_KEYS = [c.name for c in _SYNC_COLUMNS]
_SYNC_TIMES = ("cancel_requested_at", "created_at", "updated_at", "ended_at")
_SYNC_HEAD = Prepared(select(*_SYNC_COLUMNS).where(flow_runs.c.flow_id == bindparam("b_flow_id")).with_for_update())
_INSERT_FLOW: dict[tuple[str, ...], Prepared] = {}
_FLOW_UPDATE: dict[tuple[str, ...], Prepared] = {}
_TIMESTAMP = UTCMillis()
# The fields derive_mirrored may change, with how each is stored.
_DERIVED: dict[str, tuple[str, Any]] = {
    "status": ("status", lambda v: v.value),
    "notify_policy": ("notify_policy", lambda v: v.value),
    "goal": ("goal", lambda v: v),
    "wait": ("wait_json", store.dump_json),
    "blocked_task_id": ("blocked_task_id", lambda v: v),
    "blocked_summary": ("blocked_summary", lambda v: v),
    "updated_at": ("updated_at", lambda v: v),
    "ended_at": ("ended_at", lambda v: v),
}


def sync_flow(conn: Connection, flow_id: str, task: Task | None, now: datetime,
              previous: Task | None = None) -> None:
    """Bring one flow in line with its tasks after `task` was written."""
    batch = write_batch.current(conn)
    if batch is not None and flow_id in batch.quiet_flows:
        return  # this batch read it under its row lock and found no task write can move it (core/write_batch.py)
    raw = _SYNC_HEAD.run(conn, {"b_flow_id": flow_id}).fetchone()
    if raw is None:
        return
    row = SimpleNamespace(**dict(zip(_SYNC_KEYS, raw, strict=True)))
    for key in _SYNC_TIMES:
        setattr(row, key, _TIMESTAMP.process_result_value(getattr(row, key), None))  # type: ignore[arg-type]
    mode = parse_sync_mode(row.sync_mode)
    status = _flow_status(row)
    if mode == SyncMode.MIRRORED:
        _sync_mirrored(conn, row, status, previous)
        return
    if row.cancel_requested_at is None or status in LINK_TERMINAL:
        # Task writes never move a managed flow, except to finish a cancel (checked cheaply first). The row is
        # locked by this transaction now, and a batch writes no flow row but through this function: for the
        # rest of an open batch, the answer stays the same.
        if batch is not None:
            batch.quiet_flows.add(flow_id)
        return
    flow = store.get(conn, flow_id)
    if flow is None:
        return
    new = _cancel_finalised(flow, store.active_linked_count(conn, flow_id), task, now)
    if new == flow:
        return
    new = new.replace(revision=flow.revision + 1)
    if store.compare_and_set(conn, new, expected_revision=flow.revision) and new.status != flow.status:
        log.info("flow %s %s -> %s", flow_id, flow.status, new.status)


def _flow_status(row: Any) -> FlowStatus:
    try:
        return FlowStatus(row.status)
    except ValueError:
        raise InvalidPersistedValueError("flow", row.flow_id, "status", row.status) from None


def _sync_mirrored(conn: Connection, row: Any, status: FlowStatus, previous: Task | None) -> None:
    try:
        policy = NotifyPolicy(row.notify_policy)
    except ValueError:
        raise InvalidPersistedValueError("flow", row.flow_id, "notify_policy", row.notify_policy) from None
    # Only the derived fields are real; the rest are never compared or written below.
    flow = Flow(flow_id=row.flow_id, sync_mode=SyncMode.MIRRORED, owner_key=row.owner_key, status=status,
                notify_policy=policy, goal=row.goal, created_at=row.created_at,
                updated_at=row.updated_at or row.created_at, revision=max(0, int(row.revision or 0)),
                blocked_task_id=row.blocked_task_id, blocked_summary=row.blocked_summary,
                wait=load_json(row.wait_json, row.flow_id, "wait_json"), ended_at=row.ended_at)
    linked = task_store.linked_to_flow(conn, row.flow_id)
    new = derive_mirrored(flow, linked, previous)
    values = {column: dump(getattr(new, name)) for name, (column, dump) in _DERIVED.items()
              if getattr(new, name) != getattr(flow, name)}
    if not values:
        return
    shape = tuple(values)
    prepared = _FLOW_UPDATE.get(shape)
    if prepared is None:
        stmt = update(flow_runs).where(flow_runs.c.flow_id == bindparam("b_flow_id"),
                                       flow_runs.c.revision == bindparam("b_revision"))
        prepared = _FLOW_UPDATE[shape] = Prepared(stmt, [*shape, "revision"])
    values = task_rows.driver_values(values)
    values.update(revision=flow.revision + 1, b_flow_id=flow.flow_id, b_revision=row.revision)
    if prepared.run(conn, values).rowcount and new.status != flow.status:
        log.info("flow %s %s -> %s", flow.flow_id, flow.status, new.status)


def _cancel_finalised(flow: Flow, active_children: int, task: Task | None, now: datetime) -> Flow:
    """REFERENCE §9.5 step 6: a managed flow ends cancelled when its last active child ends after a cancel."""
    if flow.cancel_requested_at is None or flow.is_link_terminal or active_children:
        return flow
    end = (task.ended_at or task.last_event_at) if task is not None else None
    end = max(end or now, flow.created_at)
    return flow.replace(status=FlowStatus.CANCELLED, blocked_task_id=None, blocked_summary=None, wait=None,
                        current_step=None, ended_at=end, updated_at=end)
