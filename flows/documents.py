"""The JSON documents of the CLI and the web board: one serialiser, two doors (CONTRACT §3, §7).

Every `--json` answer and every `/api/…` answer is built here, so the two doors can never drift apart. The
documents are plain dicts of JSON values (snake_case keys, ISO-8601 UTC times via the records' `to_json`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flowledger.flows.models import Flow
from flowledger.flows.steps import step_views
from flowledger.tasks.core.models import Task


def task_list_document(tasks: Sequence[Task], *, runtime: str | None, status: str | None, total: int | None = None,
                       filters: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`tasks list --json` and `GET /api/tasks`: `count` = items in `tasks`, `total` = every task matching the
    filters (CONTRACT §7), then the filters used (`owner`, `flow` as a flow id, `since`, `limit` 0 = all,
    `offset`)."""
    used = {**(filters or {}), "runtime": runtime, "status": status}
    return {"count": len(tasks), "total": len(tasks) if total is None else total, **_filters(used, TASK_FILTERS),
            "tasks": [t.to_json() for t in tasks]}


def flow_document(flow: Flow, tasks: Sequence[Task], *, with_steps: bool = True) -> dict[str, Any]:
    """`tasks flow show --json` and `GET /api/flows/<lookup>`: the flow, its linked tasks and their summary, and
    for a graph flow its `steps` in file order (flows/steps.py; null for any other flow). Listings leave the
    steps out (`with_steps=False`): CONTRACT §3 fixes their keys."""
    from flowledger.flows.service import task_summary

    document = {**flow.to_json(), "tasks": [t.to_json() for t in tasks], "task_summary": task_summary(list(tasks))}
    if with_steps:
        views = step_views(flow, tasks)
        document["steps"] = [v.to_json() for v in views] if views is not None else None
    return document


def flow_list_document(flows: Sequence[Flow], linked: Mapping[str, Sequence[Task]],
                       *, status: str | None, total: int | None = None,
                       filters: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`tasks flow list --json` and `GET /api/flows`: `count`, `total` and the filters as for tasks."""
    used = {**(filters or {}), "status": status}
    return {"count": len(flows), "total": len(flows) if total is None else total, **_filters(used, FLOW_FILTERS),
            "flows": [flow_document(f, linked.get(f.flow_id, []), with_steps=False) for f in flows]}


TASK_FILTERS = ("runtime", "status", "owner", "flow", "since", "limit", "offset")
FLOW_FILTERS = ("status", "owner", "since", "limit", "offset")


def _filters(used: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """Every filter key, always present (null when unused), in one order: a stable document."""
    return {key: used.get(key) for key in keys}
