"""The owner-bound view of Task Flow (REFERENCE §9.3): what a session's runtime may see and do with flows."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from flowledger.flows.documents import task_summary
from flowledger.flows.models import (
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
from flowledger.tasks.core.db import Database
from flowledger.tasks.core.errors import InvalidInputError
from flowledger.tasks.core.models import trimmed
from flowledger.tasks.core.sessionkeys import parse_agent_id
from flowledger.tasks.core.states import Runtime
from flowledger.tasks.runs import liveness


class FlowOperations(Protocol):
    """What the view uses of `FlowService` (flows/service.py), which has it all. A protocol rather than an import:
    the service hands out views (`FlowService.bind`), so it imports this module, not the other way round.
    `*args: Any, **kw: Any` stands for the service's own keywords, which the view passes through unchanged."""

    @property
    def db(self) -> Database: ...
    def get(self, lookup: str) -> Flow | None: ...
    def get_by_id(self, flow_id: str) -> Flow | None: ...
    def list(self, status: FlowStatus | str | None = None, *, owner_key: str | None = None,
             controller_id: str | None = None) -> FlowList: ...
    def linked_tasks(self, flow_id: str) -> TaskList: ...
    def create_managed(self, owner_key: str, controller_id: str | None, goal: str, *args: Any,
                       **fields: Any) -> Flow: ...
    def set_waiting(self, flow_id: str, expected_revision: int, *args: Any, **kw: Any) -> FlowUpdate: ...
    def resume(self, flow_id: str, expected_revision: int, *args: Any, **kw: Any) -> FlowUpdate: ...
    def finish(self, flow_id: str, expected_revision: int, *args: Any, **kw: Any) -> FlowUpdate: ...
    def fail(self, flow_id: str, expected_revision: int, *args: Any, **kw: Any) -> FlowUpdate: ...
    def request_cancel(self, flow_id: str, expected_revision: int, *args: Any, **kw: Any) -> FlowUpdate: ...
    def update(self, flow_id: str, expected_revision: int, patch: Mapping[str, Any]) -> FlowUpdate: ...
    def cancel(self, lookup: str, reason: str | None = None) -> FlowCancelResult: ...
    def run_task(self, flow_id: str, *, runtime: Runtime | str, task: str, **fields: Any) -> RunTaskResult: ...


class OwnerFlows:
    """`FlowService` seen by one owner (REFERENCE §9.3 bound runtime): a flow of another owner is `not_found`,
    and controller operations on a mirrored flow are refused with `not_managed`."""

    def __init__(self, service: FlowOperations, owner_key: str) -> None:
        owner = trimmed(owner_key)
        if owner is None:
            raise InvalidInputError("Flow ownerKey is required.")
        self.service = service
        self.owner_key = owner

    def _own(self, flow_id: str) -> Flow | None:
        flow = self.service.get_by_id(flow_id)
        return flow if flow is not None and flow.owner_key == self.owner_key else None

    def create_managed(self, controller_id: str, goal: str, **fields: Any) -> Flow:
        return self.service.create_managed(self.owner_key, controller_id, goal, **fields)

    def get(self, flow_id: str) -> Flow | None:
        return self._own(flow_id)

    def list(self, status: FlowStatus | str | None = None) -> FlowList:
        return self.service.list(status, owner_key=self.owner_key)

    def resolve(self, token: str) -> Flow | None:
        """A flow id this owner holds, or the owner's own key (its newest live flow, else newest)."""
        token = (token or "").strip()
        if token == self.owner_key:
            return self.service.get(token)
        return self._own(token)

    def _controlled(self, flow_id: str, op: Callable[[], FlowUpdate]) -> FlowUpdate:
        flow = self._own(flow_id)
        if flow is None:
            return FlowUpdate(applied=False, reason=UpdateReason.NOT_FOUND)
        if flow.sync_mode != SyncMode.MANAGED:
            return FlowUpdate(applied=False, reason=UpdateReason.NOT_MANAGED, current=flow)
        return op()

    def set_waiting(self, flow_id: str, expected_revision: int, **kw: Any) -> FlowUpdate:
        return self._controlled(flow_id, lambda: self.service.set_waiting(flow_id, expected_revision, **kw))

    def resume(self, flow_id: str, expected_revision: int, **kw: Any) -> FlowUpdate:
        return self._controlled(flow_id, lambda: self.service.resume(flow_id, expected_revision, **kw))

    def finish(self, flow_id: str, expected_revision: int, **kw: Any) -> FlowUpdate:
        return self._controlled(flow_id, lambda: self.service.finish(flow_id, expected_revision, **kw))

    def fail(self, flow_id: str, expected_revision: int, **kw: Any) -> FlowUpdate:
        return self._controlled(flow_id, lambda: self.service.fail(flow_id, expected_revision, **kw))

    def request_cancel(self, flow_id: str, expected_revision: int, **kw: Any) -> FlowUpdate:
        return self._controlled(flow_id, lambda: self.service.request_cancel(flow_id, expected_revision, **kw))

    def update(self, flow_id: str, expected_revision: int, patch: Mapping[str, Any]) -> FlowUpdate:
        return self._controlled(flow_id, lambda: self.service.update(flow_id, expected_revision, patch))

    def cancel(self, token: str, reason: str | None = None) -> FlowCancelResult:
        flow = self.resolve(token)
        if flow is None:
            return FlowCancelResult(found=False, cancelled=False, reason="Flow not found.")
        return self.service.cancel(flow.flow_id, reason)

    def run_task(self, flow_id: str, *, runtime: Runtime | str, task: str, **fields: Any) -> RunTaskResult:
        if self._own(flow_id) is None:
            return RunTaskResult(found=False, created=False, reason="Flow not found.")
        refusal = self._foreign_session(fields)
        if refusal is not None:
            return RunTaskResult(found=True, created=False, reason=refusal)
        return self.service.run_task(flow_id, runtime=runtime, task=task, **fields)

    def _foreign_session(self, fields: Mapping[str, Any]) -> str | None:
        """Why `fields` would put work in a session this owner may not use, else None.

        A bound view acts for its owner only: its tasks may run in sessions of the owner's own agent
        (`agent:<owner's agent id>:…`) or in sessions the owner spawned. Anything else would let one owner's task
        answer to another's session key: `tasks show <their key>` would resolve to it, their board would list it.
        """
        own_agent = parse_agent_id(self.owner_key)
        for name in ("child_session_key", "requester_session_key"):
            key = trimmed(fields.get(name))
            if key is not None and not self._may_use(key, own_agent):
                return f"Session {key} does not belong to {self.owner_key}."
        for name in ("agent_id", "requester_agent_id"):
            agent = trimmed(fields.get(name))
            if agent is not None and agent.lower() != own_agent:
                return f"Agent {agent} is not the agent of {self.owner_key}."
        return None

    def _may_use(self, session_key: str, own_agent: str | None) -> bool:
        if session_key.lower() == self.owner_key.lower():
            return True
        if own_agent is not None and parse_agent_id(session_key) == own_agent:
            return True
        with self.service.db.read() as conn:
            session = liveness.get_session(conn, session_key)
        return session is not None and self.owner_key in {session.spawned_by, session.parent_session_key}

    def task_summary(self, flow_id: str) -> dict[str, Any] | None:
        if self._own(flow_id) is None:
            return None
        return task_summary(self.service.linked_tasks(flow_id))
