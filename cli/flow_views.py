"""What `tasks flow list` and `tasks flow show` print for people (CONTRACT §7), apart from the command parsing:
the full path (cli/flow_cmd.py, cli/flow_ops.py) and the lean read path (cli/lean.py) print through these."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from flowledger.cli.render import cut, emit_json, out, safe, when
from flowledger.cli.tables import Col, age, duration, render
from flowledger.cli.tables import short_ids as table_ids
from flowledger.cli.task_views import page_hint
from flowledger.flows.documents import flow_document, flow_list_document
from flowledger.flows.models import ABSENT, Flow, FlowStatus
from flowledger.flows.pages import FlowPage, Paging
from flowledger.flows.steps import StepView, step_views, why_not_succeeded
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import ACTIVE, FAILURES


def print_flow_page(page: FlowPage, paging: Paging, now: datetime, *, status: str | None, as_json: bool) -> None:
    """`tasks flow list`: the JSON document, or the head lines, the table and the paging hint."""
    if as_json:
        emit_json(flow_list_document(page.flows, page.linked, status=status, total=page.total,
                                     filters=page.filters))
        return
    for line in list_head(page):
        out(line)
    if page.flows:
        render_flows(page.flows, page.linked, now)
    more = page_hint(len(page.flows), page.total, paging)
    if more:
        out(more)


def print_flow(flow: Flow, tasks: list[Task], *, as_json: bool) -> None:
    """`tasks flow show`: the flow's document, or its lines."""
    if as_json:
        emit_json(flow_document(flow, tasks))
        return
    for line in show_lines(flow, tasks):
        out(line)


def list_head(page: FlowPage) -> list[str]:
    active, blocked, cancelling = page.pressure
    lines = [f"TaskFlows: {page.total}",
             f"TaskFlow pressure: {active} active · {blocked} blocked · {cancelling} cancel-requested · "
             f"{page.total} total"]
    for key, name in (("status", "Status"), ("owner", "Owner"), ("since", "Since")):
        if page.filters.get(key):
            lines.append(f"{name} filter: {safe(page.filters[key])}")
    if not page.flows:
        lines.append("No TaskFlows found. Run flowledger tasks list to inspect standalone background tasks.")
    return lines


def render_flows(flows: list[Flow], linked: dict[str, list[Task]], now: datetime) -> None:
    short = table_ids([f.flow_id for f in flows])
    columns = [Col("TaskFlow"), Col("Mode"), Col("Status"), Col("Age"), Col("Duration"), Col("Active/Tasks"),
               Col("Goal", fixed=False)]
    rows = []
    for flow in flows:
        tasks = linked.get(flow.flow_id, [])
        counts = f"{sum(t.status in ACTIVE for t in tasks)}/{len(tasks)}"
        rows.append([short[flow.flow_id], flow.sync_mode.value, flow.status.value, age(flow.created_at, now),
                     duration(flow.created_at, flow.ended_at, now), counts, flow.goal])
    render(columns, rows, status_column=2)


def state_line(flow: Flow) -> str | None:
    if flow.status == FlowStatus.BLOCKED:
        if flow.blocked_summary:
            return safe(flow.blocked_summary)
        return f"blocked by {safe(flow.blocked_task_id)}" if flow.blocked_task_id else "blocked"
    if flow.status == FlowStatus.WAITING and flow.wait is not ABSENT and flow.wait is not None:
        wait = flow.wait
        if isinstance(wait, list):
            return f"array({len(wait)})"
        if isinstance(wait, dict):
            return safe(", ".join(sorted(str(k) for k in wait)))
        return safe(wait)
    return None


def show_lines(flow: Flow, tasks: list[Task]) -> list[str]:
    lines = [
        "TaskFlow:",
        f"flowId: {flow.flow_id}",
        f"status: {flow.status.value}",
        f"goal: {safe(flow.goal)}",
        f"currentStep: {safe(flow.current_step or 'n/a')}",
        f"owner: {safe(flow.owner_key)}",
        f"notify: {flow.notify_policy.value}",
    ]
    state = state_line(flow)
    if state is not None:
        lines.append(f"state: {state}")
    if flow.cancel_requested_at is not None:
        lines.append(f"cancelRequestedAt: {when(flow.cancel_requested_at)}")
    active = sum(t.status in ACTIVE for t in tasks)
    issues = sum(t.status in FAILURES for t in tasks)
    lines += [
        f"createdAt: {when(flow.created_at)}",
        f"updatedAt: {when(flow.updated_at)}",
        f"endedAt: {when(flow.ended_at)}",
        f"tasks: {len(tasks)} total · {active} active · {issues} issues",
    ]
    steps = graph_show_lines(flow, tasks)
    if steps is not None:
        return lines + steps
    if not tasks:
        lines.append("Linked tasks: none")
        return lines
    lines.append("Linked tasks:")
    for task in tasks:
        lines.append(f"- {task.task_id} {task.status.value} {safe(task.run_id or 'n/a')} "
                     f"{safe(task.label or task.task)}")
    return lines


def short_ids(ids: Sequence[str], minimum: int = 8) -> dict[str, str]:
    """Each id by its shortest prefix (at least `minimum`) that no other id shown shares."""
    unique = sorted(set(ids))
    shown: dict[str, str] = {}
    for index, ident in enumerate(unique):
        length = minimum
        for other in (unique[index - 1] if index else "", unique[index + 1] if index + 1 < len(unique) else ""):
            common = 0
            while common < min(len(ident), len(other)) and ident[common] == other[common]:
                common += 1
            length = max(length, common + 1)
        shown[ident] = ident[:length]
    return shown


def duration_text(ms: int | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def step_lines(views: Sequence[StepView]) -> list[str]:
    """One compact line per step: id (label), status, attempts, duration, task, first line of the error."""
    shown = short_ids([v.task_id for v in views if v.task_id])
    width = min(24, max(len("step"), *(len(safe(v.step_id)) for v in views)))
    lines = [f"Steps ({len(views)}):"]
    for view in views:
        label = f" ({cut(view.label, 30)})" if view.label != view.step_id else ""
        tries = f"×{view.attempts}" if view.attempts != 1 else "  "
        task = shown.get(view.task_id or "", "-")
        error = f"  {cut(first(view.error), 80)}" if view.error and view.status != "succeeded" else ""
        lines.append(f"  {cut(view.step_id, width).ljust(width)}  {view.status.ljust(9)} {tries.ljust(4)} "
                     f"{duration_text(view.duration_ms).rjust(7)}  {task}{label}{error}".rstrip())
    return lines


def first(text: str | None) -> str:
    stripped = (text or "").strip()
    return stripped.splitlines()[0] if stripped else ""


def graph_show_lines(flow: Flow, tasks: list[Task]) -> list[str] | None:
    """The steps section and the why-line of `flow show` for a graph flow; None for any other flow."""
    views = step_views(flow, tasks)
    if views is None:
        return None
    lines = step_lines(views)
    why = why_not_succeeded(flow, views)
    if why is not None:
        lines.append(f"Why: {safe(why)}")
    return lines
