"""`tasks flow retry` (CONTRACT §7): the same graph flow runs again, keeping its succeeded steps.

Only an ended graph flow whose status is `failed`, `cancelled` or `lost` may be retried, and only once every
attempt it started has ended (a `lost` flow's steps may still run somewhere: they must be stopped first). The
retry is one revision-checked write that makes the flow `queued` again:
- the cancel intent, the end time and the blocked fields are cleared (retrying is an operator's explicit act);
- succeeded steps keep their status and tasks; every other step is `pending` with a fresh `retries` budget,
  while its run ids keep counting (`base`), so every attempt of every run stays a task of its own;
- the run number goes up (notices are once per run) and the retry is appended to the state's `history`;
- the driver is dropped: whoever runs the flow next (this process, or a gateway for a detached retry) claims it.
The stored definition (with each step's cwd and env) and any submission context in the state are kept as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flowledger.flows.ledger import Ledger
from flowledger.flows.models import Flow, FlowStatus, SyncMode
from flowledger.flows.steps import graph_state, tasks_by_step
from flowledger.tasks.core.clock import iso_z
from flowledger.tasks.core.errors import OperationRefusedError
from flowledger.tasks.core.states import ACTIVE, TaskStatus

RETRYABLE: frozenset[FlowStatus] = frozenset({FlowStatus.FAILED, FlowStatus.CANCELLED, FlowStatus.LOST})
SUCCEEDED = TaskStatus.SUCCEEDED.value


@dataclass(frozen=True, slots=True)
class RetryPlan:
    flow: Flow  # the flow as the retry left it: queued, revision bumped
    to_run: tuple[str, ...]
    kept: tuple[str, ...]


def retry_refusal(flow: Flow, active_task_ids: list[str]) -> str | None:
    """Why this flow cannot be retried, or None."""
    if flow.sync_mode == SyncMode.MIRRORED:
        return f"Flow {flow.flow_id} is mirrored: it follows its tasks and cannot be retried."
    if graph_state(flow) is None:
        return f"Flow {flow.flow_id} is not a graph flow (made from a flow file); only graph flows can be retried."
    if flow.status not in RETRYABLE:
        return (f"Flow {flow.flow_id} is {flow.status.value}; only a failed, cancelled or lost flow can be "
                "retried.")
    if active_task_ids:
        return (f"Flow {flow.flow_id} still has an active step task ({active_task_ids[0]}); retry once every "
                "attempt has ended (stop it with `flowledger tasks cancel`).")
    return None


def plan_state(flow: Flow, step_attempts: Mapping[str, int], now_iso: str | None) -> tuple[dict[str, Any],
                                                                                          list[str], list[str]]:
    """The retried flow's state (pure): succeeded steps kept, the others pending with their attempts as base."""
    state = graph_state(flow)
    assert state is not None
    old_steps: Mapping[str, Any] = state["steps"]
    steps: dict[str, Any] = {}
    to_run: list[str] = []
    kept: list[str] = []
    for doc in state["definition"]["step"]:
        step_id = doc["id"]
        entry = dict(old_steps.get(step_id) or {})
        base = max(step_attempts.get(step_id, 0), int(entry.get("base") or 0) + int(entry.get("attempts") or 0))
        if entry.get("status") == SUCCEEDED:
            kept.append(step_id)
            steps[step_id] = entry
            continue
        to_run.append(step_id)
        fresh: dict[str, Any] = {"status": "pending", "attempts": 0}
        if base:
            fresh["base"] = base
        steps[step_id] = fresh
    previous = state.get("run")
    run = previous if isinstance(previous, int) and previous > 0 else 1
    history = list(state.get("history") or [])
    history.append({"run": run + 1, "retried_at": now_iso, "previous_status": flow.status.value,
                    "to_run": to_run, "kept": kept})
    new_state = {k: v for k, v in state.items() if k != "driver"}
    new_state.update(steps=steps, run=run + 1, history=history)
    return new_state, to_run, kept


def retry_flow(ledger: Ledger, lookup: str) -> RetryPlan:
    """Make an ended graph flow queued again (one revision-checked write); raise OperationRefusedError with the
    reason otherwise, FlowNotFoundError for an unknown lookup."""
    flow = ledger.flows.require(lookup)
    tasks = ledger.flows.linked_tasks(flow.flow_id)
    refusal = retry_refusal(flow, [t.task_id for t in tasks if t.status in ACTIVE])
    if refusal is not None:
        raise OperationRefusedError(refusal)
    attempts = {step: max(n for n, _ in pairs) for step, pairs in tasks_by_step(flow.flow_id, tasks).items()}
    state, to_run, kept = plan_state(flow, attempts, iso_z(ledger.clock.now()))
    patch = {"status": FlowStatus.QUEUED.value, "state": state, "cancel_requested_at": None, "ended_at": None,
             "blocked_task_id": None, "blocked_summary": None, "current_step": None, "wait": None}
    result = ledger.flows.update(flow.flow_id, flow.revision, patch)
    if not result.applied or result.flow is None:
        raise OperationRefusedError(f"Flow {flow.flow_id} changed while retrying it ({result.reason}); try again.")
    return RetryPlan(result.flow, tuple(to_run), tuple(kept))
