"""What `tasks list` and `tasks show` print for people (CONTRACT §7), apart from the command parsing: the full
path (cli/tasks_cmd.py) and the lean read path (cli/lean.py) print through these same functions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flowledger.cli.render import emit_json, out, safe, when
from flowledger.cli.tables import Col, age, duration, render, short_ids
from flowledger.flows.documents import task_list_document
from flowledger.flows.pages import Paging, TaskPage
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import FAILURES


def print_task_page(page: TaskPage, paging: Paging, now: datetime, *, as_json: bool) -> None:
    """`tasks list`: the JSON document, or the head lines, the table and the paging hint."""
    if as_json:
        print_task_list_json(page.tasks, page.total, page.filters)
        return
    for line in list_head(page):
        out(line)
    if page.tasks:
        render_tasks(page.tasks, now)
    more = page_hint(len(page.tasks), page.total, paging)
    if more:
        out(more)


def print_task_list_json(tasks: list[Task], total: int, filters: dict[str, Any]) -> None:
    """`tasks list --json`: the page and the total (the document holds no per-status counts)."""
    emit_json(task_list_document(tasks, runtime=filters["runtime"], status=filters["status"], total=total,
                                 filters=filters))


def print_task(task: Task, *, as_json: bool) -> None:
    """`tasks show`: the task's JSON object, or its lines."""
    if as_json:
        emit_json(task.to_json())
        return
    for line in show_lines(task):
        out(line)


def list_head(page: TaskPage) -> list[str]:
    queued, running, issues = page.pressure
    filters = page.filters
    lines = [f"Background tasks: {page.total}", f"Task pressure: {queued} queued · {running} running · {issues} issues"]
    for key, name in (("runtime", "Runtime"), ("status", "Status"), ("owner", "Owner"), ("flow", "Flow"),
                      ("since", "Since")):
        if filters.get(key):
            lines.append(f"{name} filter: {safe(filters[key])}")
    if not page.tasks:
        lines.append("No background tasks found. Run flowledger tasks audit to check for stale task state.")
    return lines


def page_hint(shown: int, total: int, paging: Paging) -> str | None:
    """`Showing 101–200 of 1000; --limit N (0 = all) and --offset N page through them.` when cut."""
    if shown >= total or (shown == 0 and paging.offset == 0):
        return None
    first = paging.offset + 1 if shown else paging.offset
    return (f"Showing {first}–{paging.offset + shown} of {total}; "
            "--limit N (0 = all) and --offset N page through them.")


def render_tasks(tasks: list[Task], now: datetime) -> None:
    short = short_ids([t.task_id for t in tasks])
    columns = [Col("Task"), Col("Kind"), Col("Status"), Col("Age"), Col("Duration"), Col("Summary", fixed=False)]
    rows = [[short[t.task_id], t.runtime.value, t.status.value, age(t.created_at, now),
             duration(t.started_at, t.ended_at, now), summary_of(t)] for t in tasks]
    render(columns, rows, status_column=2)


def summary_of(task: Task) -> str:
    """The error of a task that failed; else its latest summary, label or text."""
    if task.status in FAILURES and task.error:
        return task.error
    return task.terminal_summary or task.progress_summary or task.label or task.task


def show_lines(task: Task) -> list[str]:
    lines = [
        "Background task:",
        f"taskId: {task.task_id}",
        f"kind: {task.runtime.value}",
        f"sourceId: {safe(task.source_id or 'n/a')}",
        f"status: {task.status.value}",
        f"result: {task.terminal_outcome.value if task.terminal_outcome else 'n/a'}",
        f"delivery: {task.delivery_status.value}",
        f"notify: {task.notify_policy.value}",
        f"ownerKey: {safe(task.owner_key or 'n/a')}",
        f"childSessionKey: {safe(task.child_session_key or 'n/a')}",
        f"parentTaskId: {safe(task.parent_task_id or 'n/a')}",
        f"parentFlowId: {safe(task.parent_flow_id or 'n/a')}",
        f"agentId: {safe(task.agent_id or 'n/a')}",
        f"runId: {safe(task.run_id or 'n/a')}",
        f"label: {safe(task.label or 'n/a')}",
        f"task: {safe(task.task)}",
        f"createdAt: {when(task.created_at)}",
        f"startedAt: {when(task.started_at)}",
        f"endedAt: {when(task.ended_at)}",
        f"lastEventAt: {when(task.last_event_at)}",
        f"cleanupAfter: {when(task.cleanup_after)}",
    ]
    if task.error:
        lines.append(f"error: {safe(task.error)}")
    if task.progress_summary:
        lines.append(f"progressSummary: {safe(task.progress_summary)}")
    if task.terminal_summary:
        lines.append(f"terminalSummary: {safe(task.terminal_summary)}")
    return lines
