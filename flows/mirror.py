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
import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection

from flowledger.flows import store
from flowledger.flows.models import MAINTENANCE_TERMINAL, Flow, FlowStatus, SyncMode
from flowledger.tasks.models import Task
from flowledger.tasks.service import Change, TaskHooks
from flowledger.tasks.states import (
    DeliveryStatus,
    Runtime,
    ScopeKind,
    TaskStatus,
    TerminalOutcome,
)

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
    base = Flow(flow_id=str(uuid.uuid4()), sync_mode=SyncMode.MIRRORED, owner_key=task.owner_key,
                status=FlowStatus.QUEUED, notify_policy=task.notify_policy,
                goal=_goal(task),
                created_at=task.created_at, updated_at=task.created_at, requester_origin=task.requester_origin)
    return derive_mirrored(base, [task.replace(parent_flow_id=base.flow_id)])


class FlowHooks(TaskHooks):
    """Installed first on every ledger's TaskService (before delivery), see flows/extensions.py."""

    def prepare_insert(self, conn: Connection, task: Task, now: datetime) -> Task:
        if not wants_one_task_flow(task):
            return task
        flow = one_task_flow(task)
        store.insert_flow(conn, flow)
        log.info("flow %s created (mirrored) for task %s", flow.flow_id, task.task_id)
        return task.replace(parent_flow_id=flow.flow_id)

    def on_written(self, conn: Connection, change: Change, now: datetime) -> None:
        task = change.task
        before = change.previous.parent_flow_id if change.previous is not None else None
        if task.parent_flow_id:
            sync_flow(conn, task.parent_flow_id, task, now, change.previous)
        if before and before != task.parent_flow_id:
            sync_flow(conn, before, None, now)  # the task moved away: its old flow re-derives without it


def sync_flow(conn: Connection, flow_id: str, task: Task | None, now: datetime,
              previous: Task | None = None) -> Flow | None:
    """Bring one flow in line with its tasks after `task` was written; returns the flow if it was read."""
    head = store.head(conn, flow_id, for_update=True)
    if head is None:
        return None
    if head.sync_mode == SyncMode.MANAGED and (head.cancel_requested_at is None or head.is_link_terminal):
        return None  # task writes never move a managed flow, except to finish a cancel (checked cheaply first)
    flow = store.get(conn, flow_id)
    if flow is None:
        return None
    if flow.sync_mode == SyncMode.MIRRORED:
        new = derive_mirrored(flow, store.linked_tasks(conn, flow_id), previous)
    else:
        new = _cancel_finalised(flow, store.active_linked_count(conn, flow_id), task, now)
    if new == flow:
        return flow
    new = new.replace(revision=flow.revision + 1)
    if not store.compare_and_set(conn, new, expected_revision=flow.revision):
        return store.get(conn, flow_id)
    if new.status != flow.status:
        log.info("flow %s %s -> %s", flow_id, flow.status, new.status)
    return new


def _cancel_finalised(flow: Flow, active_children: int, task: Task | None, now: datetime) -> Flow:
    """REFERENCE §9.5 step 6: a managed flow ends cancelled when its last active child ends after a cancel."""
    if flow.cancel_requested_at is None or flow.is_link_terminal or active_children:
        return flow
    end = (task.ended_at or task.last_event_at) if task is not None else None
    end = max(end or now, flow.created_at)
    return flow.replace(status=FlowStatus.CANCELLED, blocked_task_id=None, blocked_summary=None, wait=None,
                        current_step=None, ended_at=end, updated_at=end)
