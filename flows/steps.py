"""The per-step view of a graph flow (CONTRACT §7 "Graph flows, step by step"): pure, from the flow's stored
state and its linked tasks.

Each step attempt is one task whose run id is `flow:<flow_id>:<step_id>:<attempt>` (attempts count over every
run of the flow, so a retried flow never reuses a run id); that run id, not the label, ties a task to its step.
A step's `attempts` is how many such tasks exist; `task_id`, times and `error` describe the newest attempt, and
`status` is that attempt's task status, except:
- `pending` for a step the flow has not started (again) while the flow is active, a `retry_delay` wait included;
- `cancelled` with `attempts = 0` for a step that the flow ended without ever starting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flowledger.flows.models import LINK_TERMINAL, Flow, FlowStatus
from flowledger.tasks.core.clock import iso_z
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import FAILURES, TaskStatus

RUN_ID_PREFIX = "flow:"
PENDING = "pending"
CANCELLED = TaskStatus.CANCELLED.value


def step_run_id(flow_id: str, step_id: str, attempt: int) -> str:
    return f"{RUN_ID_PREFIX}{flow_id}:{step_id}:{attempt}"


def parse_step_run_id(flow_id: str, run_id: str | None) -> tuple[str, int] | None:
    """(step id, attempt) of a step task's run id, or None for any other run id."""
    prefix = f"{RUN_ID_PREFIX}{flow_id}:"
    if not run_id or not run_id.startswith(prefix):
        return None
    step_id, _, number = run_id[len(prefix):].rpartition(":")
    if not step_id or not number.isdigit():
        return None
    return step_id, int(number)


@dataclass(frozen=True, slots=True)
class StepView:
    step_id: str
    label: str
    runtime: str
    status: str
    attempts: int
    task_id: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: str | None = None

    @property
    def duration_ms(self) -> int | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return max(0, int((self.ended_at - self.started_at).total_seconds() * 1000))

    def to_json(self) -> dict[str, Any]:
        return {"step_id": self.step_id, "label": self.label, "runtime": self.runtime, "status": self.status,
                "attempts": self.attempts, "task_id": self.task_id, "started_at": iso_z(self.started_at),
                "ended_at": iso_z(self.ended_at), "duration_ms": self.duration_ms, "error": self.error}


def graph_state(flow: Flow) -> Mapping[str, Any] | None:
    """The controller's state document of a graph flow, or None for any other flow."""
    state = flow.state
    if not isinstance(state, Mapping) or "definition" not in state or not isinstance(state.get("steps"), Mapping):
        return None
    definition = state["definition"]
    if not isinstance(definition, Mapping) or not isinstance(definition.get("step"), list):
        return None
    return state


def tasks_by_step(flow_id: str, tasks: Sequence[Task]) -> dict[str, list[tuple[int, Task]]]:
    """Each step's attempts (attempt number, task), oldest first."""
    out: dict[str, list[tuple[int, Task]]] = {}
    for task in tasks:
        parsed = parse_step_run_id(flow_id, task.run_id)
        if parsed is not None:
            out.setdefault(parsed[0], []).append((parsed[1], task))
    for attempts in out.values():
        attempts.sort(key=lambda pair: pair[0])
    return out


def step_views(flow: Flow, tasks: Sequence[Task]) -> list[StepView] | None:
    """Every step in file order, or None when the flow is not a graph flow. Cost: O(steps + tasks)."""
    state = graph_state(flow)
    if state is None:
        return None
    entries: Mapping[str, Any] = state["steps"]
    attempts_of = tasks_by_step(flow.flow_id, tasks)
    active = flow.status not in LINK_TERMINAL
    views: list[StepView] = []
    for doc in state["definition"]["step"]:
        if not isinstance(doc, Mapping) or not isinstance(doc.get("id"), str):
            continue
        step_id: str = doc["id"]
        label = str(doc.get("label") or step_id)
        runtime = str(doc.get("runtime") or "cli")
        entry = entries.get(step_id)
        tracked = str(entry.get("status")) if isinstance(entry, Mapping) else PENDING
        attempts = attempts_of.get(step_id, [])
        if not attempts:
            status = PENDING if active else CANCELLED
            views.append(StepView(step_id, label, runtime, status, 0))
            continue
        last = attempts[-1][1]
        # Between attempts (a retry_delay wait, or a retried flow not yet at this step) the step is pending.
        status = PENDING if active and tracked == PENDING else last.status.value
        views.append(StepView(step_id, label, runtime, status, len(attempts), last.task_id, last.started_at,
                              last.ended_at, last.error))
    return views


def why_not_succeeded(flow: Flow, views: Sequence[StepView] | None) -> str | None:
    """One line for a flow that ended without succeeding: the first failed step and its error, else who
    cancelled. None for a flow that is active or succeeded."""
    if flow.status not in LINK_TERMINAL or flow.status == FlowStatus.SUCCEEDED:
        return None
    failures = {s.value for s in FAILURES}
    for view in views or ():
        if view.status in failures:
            error = f": {first_line(view.error)}" if view.error else ""
            tries = f" after {view.attempts} attempts" if view.attempts > 1 else ""
            return f"Step {view.step_id} {view.status.replace('_', ' ')}{tries}{error}"
    if flow.status == FlowStatus.CANCELLED or flow.cancel_requested_at is not None:
        who = "an operator (tasks flow cancel)" if flow.cancel_requested_at is not None else "its controller"
        return f"Cancelled by {who}."
    if flow.blocked_summary:
        return first_line(flow.blocked_summary)
    return f"Flow ended {flow.status.value}."


def first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""
