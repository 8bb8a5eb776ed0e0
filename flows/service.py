"""FlowService: the only door to flow records (REFERENCE §9.3, §9.5).

Every controller-facing operation is revision-checked: the caller names the revision it read, the write is a
compare-and-set on it, and the result says `applied` or why not (`not_found`, `revision_conflict` with the
current flow, `persist_failed`). Mirrored flows are never written from here: they follow their tasks
(flows/mirror.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from flowledger.flows import store
from flowledger.flows.documents import task_summary
from flowledger.flows.models import (
    ABSENT,
    LINK_TERMINAL,
    Flow,
    FlowCancelResult,
    FlowList,
    FlowStatus,
    FlowUpdate,
    RunTaskResult,
    SyncMode,
    TaskList,
    UpdateReason,
)
from flowledger.flows.notices import FlowNotices
from flowledger.flows.owner_view import OwnerFlows
from flowledger.flows.patches import (
    CONTROLLER_REQUIRED,
    KEEP,
    apply_patch,
    given,
    run_refusal,
    settle_timestamps,
    when,
)
from flowledger.tasks.core import limits, prefixes
from flowledger.tasks.core import store as task_store
from flowledger.tasks.core.clock import Clock
from flowledger.tasks.core.db import Database
from flowledger.tasks.core.errors import (
    FlowNotFoundError,
    InvalidInputError,
    ParentFlowLinkError,
    StorageUnavailableError,
    TaskNotFoundError,
)
from flowledger.tasks.core.hooks import Changes
from flowledger.tasks.core.ids import new_id
from flowledger.tasks.core.models import DeliveryOrigin, Task, trimmed
from flowledger.tasks.core.service import TaskService
from flowledger.tasks.core.states import ACTIVE, NotifyPolicy, Runtime, parse_enum
from flowledger.tasks.core.tables import flow_runs

log = logging.getLogger(__name__)

# Moved, still importable from here: `task_summary` to flows/documents.py (the flow document is its first user);
# KEEP, CONTROLLER_REQUIRED, apply_patch, settle_timestamps and run_refusal to flows/patches.py (pure rules).
__all__ = ["CANCEL_ATTEMPTS", "CONTROLLER_REQUIRED", "KEEP", "FlowList", "FlowService", "TaskList", "apply_patch",
           "run_refusal", "settle_timestamps", "task_summary"]

# A cancel that loses a revision race re-reads and asks again this many times before it refuses.
CANCEL_ATTEMPTS = 5
_LINK_REASONS = {
    "cancel_requested": "Flow cancellation has already been requested.",
    "parent_flow_not_found": "Flow not found.",
}


class FlowService:
    """Flow records over `db`; child tasks through `tasks`; `clock` stamps every write. The Ledger wires it."""

    def __init__(self, db: Database, clock: Clock, tasks: TaskService) -> None:
        self.db = db
        self.clock = clock
        self.tasks = tasks

    # --- reads --------------------------------------------------------------------------------------

    @staticmethod
    def resolve(conn: Connection, lookup: str) -> Flow | None:
        """Flow id, else the owner's newest live flow, else its newest flow (reference-bugs 119129), else a unique
        flow id prefix (CONTRACT §7; AmbiguousLookupError when several ids start so)."""
        token = (lookup or "").strip()
        if not token:
            return None
        found = store.get(conn, token)
        if found is not None:
            return found
        owned = store.list_flows(conn, owner_key=token)
        live = [f for f in owned if f.status not in LINK_TERMINAL]
        pool = live or owned
        if pool:
            return pool[0]
        flow_id = prefixes.unique_id(conn, flow_runs.c.flow_id, token, "flows")
        return store.get(conn, flow_id) if flow_id is not None else None

    def get(self, lookup: str) -> Flow | None:
        with self.db.read() as conn:
            return self.resolve(conn, lookup)

    def get_by_id(self, flow_id: str) -> Flow | None:
        with self.db.read() as conn:
            return store.get(conn, flow_id)

    def require(self, lookup: str) -> Flow:
        flow = self.get(lookup)
        if flow is None:
            raise FlowNotFoundError(lookup)
        return flow

    def list(self, status: FlowStatus | str | None = None, *, owner_key: str | None = None,
             controller_id: str | None = None) -> FlowList:
        st = parse_enum(FlowStatus, status, "flow status") if status is not None else None
        with self.db.read() as conn:
            return store.list_flows(conn, status=st, owner_key=owner_key, controller_id=controller_id)

    def linked_tasks(self, flow_id: str) -> TaskList:
        with self.db.read() as conn:
            return store.linked_tasks(conn, flow_id)

    def linked_for(self, flow_ids: Sequence[str]) -> dict[str, TaskList]:
        with self.db.read() as conn:
            return store.linked_for(conn, flow_ids)

    # --- create -------------------------------------------------------------------------------------

    def create_managed(self, owner_key: str, controller_id: str | None, goal: str, *,
                       status: FlowStatus | str | None = None, notify_policy: NotifyPolicy | str | None = None,
                       current_step: str | None = None, state: Any = ABSENT, wait: Any = ABSENT,
                       cancel_requested_at: Any = None, created_at: Any = None, updated_at: Any = None,
                       ended_at: Any = None, requester_origin: Mapping[str, Any] | DeliveryOrigin | None = None,
                       revision: int = 0, flow_id: str | None = None) -> Flow:
        """A new managed flow at revision 0 (or `revision`); its controller alone drives its status."""
        if not trimmed(controller_id):
            raise InvalidInputError(CONTROLLER_REQUIRED)
        return self._create(SyncMode.MANAGED, owner_key, goal, controller_id=trimmed(controller_id),
                            status=status, notify_policy=notify_policy, current_step=current_step, state=state,
                            wait=wait, cancel_requested_at=cancel_requested_at, created_at=created_at,
                            updated_at=updated_at, ended_at=ended_at, requester_origin=requester_origin,
                            revision=revision, flow_id=flow_id)

    def create_mirrored(self, owner_key: str, goal: str, *, notify_policy: NotifyPolicy | str | None = None,
                        requester_origin: Mapping[str, Any] | DeliveryOrigin | None = None,
                        flow_id: str | None = None) -> Flow:
        """An empty mirrored flow; tasks created elsewhere link to it and its status follows them all."""
        return self._create(SyncMode.MIRRORED, owner_key, goal, notify_policy=notify_policy,
                            requester_origin=requester_origin, flow_id=flow_id)

    def _create(self, mode: SyncMode, owner_key: str, goal: str, **fields: Any) -> Flow:
        owner = trimmed(owner_key)
        if owner is None:
            raise InvalidInputError("Flow ownerKey is required.")
        text = trimmed(goal)
        if text is None:
            raise InvalidInputError("Flow goal is required.")
        limits.check_text(text, "Flow goal")
        limits.check_session_key(owner, "Owner key")
        chosen_id = limits.check_id(trimmed(fields.get("flow_id")), "flow id")
        now = self.clock.now()
        created = when(fields.get("created_at"), "created_at") or now
        st = fields.get("status")
        policy = fields.get("notify_policy")
        revision = int(fields.get("revision") or 0)
        flow = Flow(
            flow_id=chosen_id or new_id(),
            sync_mode=mode,
            owner_key=owner,
            controller_id=fields.get("controller_id"),
            revision=max(0, revision),
            status=parse_enum(FlowStatus, st, "flow status") if st else FlowStatus.QUEUED,
            notify_policy=parse_enum(NotifyPolicy, policy, "notify policy") if policy else NotifyPolicy.DONE_ONLY,
            goal=text,
            current_step=trimmed(fields.get("current_step")),
            state=fields.get("state", ABSENT),
            wait=fields.get("wait", ABSENT),
            cancel_requested_at=when(fields.get("cancel_requested_at"), "cancel_requested_at"),
            created_at=created,
            updated_at=when(fields.get("updated_at"), "updated_at") or created,
            ended_at=when(fields.get("ended_at"), "ended_at"),
            requester_origin=DeliveryOrigin.from_mapping(fields.get("requester_origin")),
        )

        def unit(conn: Connection) -> None:
            store.insert_flow(conn, flow)

        self.db.transact(unit)
        log.info("flow %s created (%s, %s)", flow.flow_id, flow.sync_mode, flow.status)
        return flow

    # --- revision-checked operations ----------------------------------------------------------------

    def _update(self, flow_id: str, expected_revision: int, build: Callable[[Flow, datetime], Flow]) -> FlowUpdate:
        def unit(conn: Connection) -> FlowUpdate:
            now = self.clock.now()
            current = store.get(conn, flow_id, for_update=True)
            if current is None:
                return FlowUpdate(applied=False, reason=UpdateReason.NOT_FOUND)
            if current.revision != expected_revision:
                return FlowUpdate(applied=False, reason=UpdateReason.REVISION_CONFLICT, current=current)
            new = settle_timestamps(current, build(current, now)).replace(revision=current.revision + 1)
            if not store.compare_and_set(conn, new, expected_revision=expected_revision):
                return FlowUpdate(applied=False, reason=UpdateReason.REVISION_CONFLICT,
                                  current=store.get(conn, flow_id))
            return FlowUpdate(applied=True, flow=new)

        try:
            result = self.db.transact(unit)
        except StorageUnavailableError:
            # Reported like the reference's persist_failed when the flow can still be read; else it propagates.
            current = self.get_by_id(flow_id)
            log.warning("flow %s update failed to persist", flow_id)
            return FlowUpdate(applied=False, reason=UpdateReason.PERSIST_FAILED, current=current)
        if result.applied and result.flow is not None:
            log.info("flow %s revision %d status %s", flow_id, result.flow.revision, result.flow.status)
        return result

    def update(self, flow_id: str, expected_revision: int, patch: Mapping[str, Any]) -> FlowUpdate:
        """The generic patch (REFERENCE §9.3); a managed flow's controller can never be cleared."""
        if "controller_id" in patch and patch["controller_id"] is None:
            current = self.get_by_id(flow_id)
            if current is not None and current.sync_mode == SyncMode.MANAGED:
                raise InvalidInputError(CONTROLLER_REQUIRED)
        return self._update(flow_id, expected_revision, lambda f, now: apply_patch(f, patch, now))

    def set_waiting(self, flow_id: str, expected_revision: int, *, current_step: Any = KEEP, state: Any = KEEP,
                    wait: Any = KEEP, blocked_task_id: str | None = None, blocked_summary: str | None = None,
                    updated_at: Any = None) -> FlowUpdate:
        """`blocked` when a blocking task or summary is given, else `waiting`; ended_at is cleared."""
        blocked = bool(trimmed(blocked_task_id) or trimmed(blocked_summary))
        patch = given(current_step=current_step, state=state, wait=wait)
        patch.update(status=FlowStatus.BLOCKED if blocked else FlowStatus.WAITING, blocked_task_id=blocked_task_id,
                     blocked_summary=blocked_summary, ended_at=None, updated_at=updated_at)
        return self._update(flow_id, expected_revision, lambda f, now: apply_patch(f, patch, now))

    def resume(self, flow_id: str, expected_revision: int, *, status: FlowStatus | str = FlowStatus.QUEUED,
               current_step: Any = KEEP, state: Any = KEEP, updated_at: Any = None) -> FlowUpdate:
        target = parse_enum(FlowStatus, status, "flow status")
        if target not in (FlowStatus.QUEUED, FlowStatus.RUNNING):
            raise InvalidInputError(f"A resumed flow is queued or running, not {target.value}.")
        patch = given(current_step=current_step, state=state)
        patch.update(status=target, wait=None, blocked_task_id=None, blocked_summary=None, ended_at=None,
                     updated_at=updated_at)
        return self._update(flow_id, expected_revision, lambda f, now: apply_patch(f, patch, now))

    def finish(self, flow_id: str, expected_revision: int, *, state: Any = KEEP, current_step: Any = KEEP,
               ended_at: Any = None, updated_at: Any = None) -> FlowUpdate:
        def build(flow: Flow, now: datetime) -> Flow:
            end = when(ended_at, "ended_at") or when(updated_at, "updated_at") or now
            patch = given(state=state, current_step=current_step)
            patch.update(status=FlowStatus.SUCCEEDED, ended_at=end, wait=None, blocked_task_id=None,
                         blocked_summary=None, updated_at=updated_at)
            return apply_patch(flow, patch, now)

        return self._update(flow_id, expected_revision, build)

    def fail(self, flow_id: str, expected_revision: int, *, state: Any = KEEP, current_step: Any = KEEP,
             blocked_task_id: Any = KEEP, blocked_summary: Any = KEEP, ended_at: Any = None,
             updated_at: Any = None) -> FlowUpdate:
        def build(flow: Flow, now: datetime) -> Flow:
            end = when(ended_at, "ended_at") or when(updated_at, "updated_at") or now
            patch = given(state=state, current_step=current_step, blocked_task_id=blocked_task_id,
                           blocked_summary=blocked_summary)
            patch.update(status=FlowStatus.FAILED, ended_at=end, wait=None, updated_at=updated_at)
            return apply_patch(flow, patch, now)

        return self._update(flow_id, expected_revision, build)

    def request_cancel(self, flow_id: str, expected_revision: int, *, cancel_requested_at: Any = None,
                       updated_at: Any = None) -> FlowUpdate:
        """The sticky cancel intent; the status is left as it is."""
        def build(flow: Flow, now: datetime) -> Flow:
            at = when(cancel_requested_at, "cancel_requested_at") or when(updated_at, "updated_at") or now
            return apply_patch(flow, {"cancel_requested_at": at, "updated_at": updated_at}, now)

        return self._update(flow_id, expected_revision, build)

    def delete(self, flow_id: str) -> bool:
        """Removes the flow only; linked tasks keep their dangling parent_flow_id (REFERENCE §9.3)."""
        return bool(self.db.transact(lambda conn: store.delete_flows(conn, [flow_id])))

    def link_task(self, flow_id: str, task_lookup: str) -> Task:
        """Link an existing task to a flow, with the same checks as creating it linked."""
        def unit(conn: Connection, now: datetime) -> Changes:
            tasks = self.tasks
            found = tasks.resolve(conn, task_lookup)
            if found is None:
                raise TaskNotFoundError(task_lookup)
            current = task_store.get(conn, found.task_id, for_update=True) or found
            if current.parent_flow_id == flow_id:
                return []
            tasks.hooks.validate_parent_flow(conn, flow_id=flow_id, owner_key=current.owner_key,
                                             scope_kind=current.scope_kind)
            change = tasks.apply(conn, current, current.replace(parent_flow_id=flow_id), expected={current.status},
                                 now=now)
            return [change] if change else []

        changes = self.tasks.run_unit(unit)
        return changes[0].task if changes else self.tasks.require(task_lookup)

    # --- child tasks and cancel (REFERENCE §9.2, §9.5) ------------------------------------------------

    def run_task(self, flow_id: str, *, runtime: Runtime | str, task: str, refresh: bool = True,
                 **fields: Any) -> RunTaskResult:
        """Create a child task of a managed flow; it inherits the owner, origin and session scope.

        `refresh=False` leaves `flow` out of a successful result (a controller starting many steps skips the read).
        """
        with self.db.read() as conn:
            head = store.head(conn, flow_id)
            origin_json = store.origin_of(conn, flow_id) if head is not None else None
        if head is None:
            return RunTaskResult(found=False, created=False, reason="Flow not found.")
        refusal = run_refusal(head)
        if refusal is not None:
            return RunTaskResult(found=True, created=False, reason=refusal, flow=self.get_by_id(flow_id))
        for name in ("owner_key", "scope_kind", "parent_flow_id"):
            fields.pop(name, None)
        origin = fields.pop("requester_origin", None) or origin_json
        try:
            created = self.tasks.create(runtime=runtime, task=task, owner_key=head.owner_key,
                                               scope_kind="session", parent_flow_id=flow_id,
                                               requester_origin=origin, **fields)
        except ParentFlowLinkError as exc:
            latest = self.get_by_id(flow_id)
            reason = _LINK_REASONS.get(exc.code) or (run_refusal(latest) if latest else None) or exc.message
            return RunTaskResult(found=latest is not None, created=False, reason=reason, flow=latest)
        except StorageUnavailableError:
            return RunTaskResult(found=True, created=False, reason="Task persistence failed.")
        return RunTaskResult(found=True, created=True, task=created,
                             flow=self.get_by_id(flow_id) if refresh else None)

    def cancel(self, lookup: str, reason: str | None = None) -> FlowCancelResult:
        """Sticky intent, then cancel every active child; the flow ends cancelled once none is active."""
        flow = self.get(lookup)
        if flow is None:
            return FlowCancelResult(found=False, cancelled=False, reason="Flow not found.")
        if flow.cancel_requested_at is None and not flow.is_link_terminal:
            intent = self._record_cancel_intent(flow)
            if isinstance(intent, FlowCancelResult):
                return intent
            flow = intent
        if flow.is_link_terminal:
            return FlowCancelResult(found=True, cancelled=False, reason=f"Flow is already {flow.status.value}.",
                                    flow=flow)
        for child in self.linked_tasks(flow.flow_id):
            if child.status in ACTIVE:
                result = self.tasks.cancel(child.task_id, reason)
                if not result.cancelled:
                    log.info("flow %s: child task %s not cancelled: %s", flow.flow_id, child.task_id, result.reason)
        ended = self._finalise_cancel(flow.flow_id)
        if ended.cancelled and ended.flow is not None:
            FlowNotices(self).graph_flow_ended(ended.flow)  # this service has the db, clock and tasks they use
        return ended

    def _record_cancel_intent(self, flow: Flow) -> Flow | FlowCancelResult:
        """Set the sticky cancel intent (revision-checked). A driver saving its step between our read and our
        write is no reason to refuse an operator: the newer record is taken and the request made again, up to
        CANCEL_ATTEMPTS times (the reference refuses at once, REFERENCE §9.5)."""
        for _ in range(CANCEL_ATTEMPTS):
            requested = self.request_cancel(flow.flow_id, flow.revision)
            if requested.applied and requested.flow is not None:
                return requested.flow
            current = requested.current
            if requested.reason != UpdateReason.REVISION_CONFLICT or current is None:
                break
            if current.cancel_requested_at is not None or current.is_link_terminal:
                return current
            flow = current
        text = {UpdateReason.REVISION_CONFLICT: "Flow changed while cancellation was in progress.",
                UpdateReason.PERSIST_FAILED: "Flow persistence failed."}.get(
                    requested.reason or UpdateReason.NOT_FOUND, "Flow not found.")
        return FlowCancelResult(found=requested.reason != UpdateReason.NOT_FOUND, cancelled=False, reason=text,
                                flow=requested.current or flow)

    def _finalise_cancel(self, flow_id: str) -> FlowCancelResult:
        def unit(conn: Connection) -> FlowCancelResult:
            now = self.clock.now()
            flow = store.get(conn, flow_id, for_update=True)
            if flow is None:
                return FlowCancelResult(found=False, cancelled=False, reason="Flow not found.")
            children = store.linked_tasks(conn, flow_id)
            if any(t.status in ACTIVE for t in children):
                return FlowCancelResult(found=True, cancelled=False,
                                        reason="One or more child tasks are still active.", flow=flow,
                                        tasks=children)
            if flow.is_link_terminal:  # a child's last update may already have finalised it
                done = flow.status == FlowStatus.CANCELLED
                return FlowCancelResult(found=True, cancelled=done, flow=flow, tasks=children,
                                        reason=None if done else f"Flow is already {flow.status.value}.")
            new = flow.replace(status=FlowStatus.CANCELLED, blocked_task_id=None, blocked_summary=None, wait=None,
                               current_step=None, ended_at=now, updated_at=now, revision=flow.revision + 1)
            store.compare_and_set(conn, new, expected_revision=flow.revision)
            log.info("flow %s cancelled", flow_id)
            return FlowCancelResult(found=True, cancelled=True, flow=new, tasks=children)

        return self.db.transact(unit)

    def bind(self, owner_key: str) -> OwnerFlows:
        """An owner-scoped view: other owners' flows look like they do not exist."""
        return OwnerFlows(self, owner_key)
