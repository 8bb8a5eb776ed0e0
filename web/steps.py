"""A graph flow's steps for the board: its definition (from the flow's stored state) and the per-step view.

The per-step view is CONTRACT §7's `"steps"` list of `tasks flow show --json`. When the flow document already
carries it (built by flows/documents.py), the board shows exactly that; for a document without it, `derive_steps`
builds the same shape from the stored definition and the flow's linked tasks, so the board never shows a
different view of a step than the CLI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from flowledger.flows.definitions import FlowDefinition, flow_from_document
from flowledger.flows.models import Flow
from flowledger.tasks.clock import iso_z
from flowledger.tasks.errors import FlowledgerError
from flowledger.tasks.models import Task


def definition_of(flow: Flow) -> FlowDefinition | None:
    """The flow file a graph flow was made from, or None for flows that are not graph flows."""
    state = flow.state if isinstance(flow.state, dict) else None
    document = state.get("definition") if state else None
    if not isinstance(document, Mapping):
        return None
    try:
        return flow_from_document(document, source=f"flow {flow.flow_id}")
    except FlowledgerError:  # a definition this version cannot read: show the flow without its graph
        return None


def with_steps(document: dict[str, Any], flow: Flow, tasks: Sequence[Task]) -> dict[str, Any]:
    """The flow document with its `steps` (CONTRACT §7): kept when present, derived when missing."""
    if "steps" in document:
        return document
    definition = definition_of(flow)
    return {**document, "steps": derive_steps(flow, definition, tasks) if definition is not None else None}


def _attempt_of(flow_id: str, task: Task) -> tuple[str, int] | None:
    """(step id, attempt) from a step task's run id `flow:<flow id>:<step id>:<attempt>`."""
    prefix = f"flow:{flow_id}:"
    run_id = task.run_id or ""
    if not run_id.startswith(prefix):
        return None
    step_id, _, attempt = run_id[len(prefix):].rpartition(":")
    return (step_id, int(attempt)) if step_id and attempt.isdigit() else None


def derive_steps(flow: Flow, definition: FlowDefinition, tasks: Sequence[Task]) -> list[dict[str, Any]]:
    attempts: dict[str, list[tuple[int, Task]]] = {}
    for task in tasks:
        found = _attempt_of(flow.flow_id, task)
        if found is not None:
            attempts.setdefault(found[0], []).append((found[1], task))
    ended = flow.ended_at is not None
    rows = []
    for step in definition.steps:
        tried = sorted(attempts.get(step.id, []), key=lambda pair: pair[0])
        last = tried[-1][1] if tried else None
        # not started: pending while the flow may still start it, cancelled once it ended without it
        status = last.status.value if last is not None else ("cancelled" if ended else "pending")
        rows.append({
            "step_id": step.id, "label": step.display_label, "runtime": step.runtime.value, "status": status,
            "attempts": len(tried), "task_id": last.task_id if last else None,
            "started_at": iso_z(last.started_at) if last else None,
            "ended_at": iso_z(last.ended_at) if last else None,
            "duration_ms": _duration_ms(last.started_at, last.ended_at) if last else None,
            "error": last.error if last else None,
        })
    return rows


def _duration_ms(started: datetime | None, ended: datetime | None) -> int | None:
    if started is None or ended is None:
        return None
    return max(0, int((ended - started).total_seconds() * 1000))
