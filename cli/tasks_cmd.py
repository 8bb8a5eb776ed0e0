"""`flowledger tasks [list|show|cancel|notify|events]`: parse, call one service method, render."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from flowledger.cli.context import app_context
from flowledger.cli.render import cut, emit_json, err, out, safe, table, when
from flowledger.flows.documents import task_list_document
from flowledger.tasks.errors import EXIT_NOT_FOUND_OR_REFUSED, TaskNotFound
from flowledger.tasks.limits import MAX_COUNT
from flowledger.tasks.models import Task
from flowledger.tasks.states import FAILURES, NotifyPolicy, Runtime, TaskStatus

RuntimeOpt = StrEnum("RuntimeOpt", {r.value: r.value for r in Runtime})  # type: ignore[misc]
StatusOpt = StrEnum("StatusOpt", {s.value: s.value for s in TaskStatus})  # type: ignore[misc]
PolicyOpt = StrEnum("PolicyOpt", {p.value: p.value for p in NotifyPolicy})  # type: ignore[misc]

JsonFlag = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]
RuntimeFilter = Annotated[RuntimeOpt | None, typer.Option("--runtime", help="Only this runtime.")]
StatusFilter = Annotated[StatusOpt | None, typer.Option("--status", help="Only this status.")]
# A ledger can hold millions of records; listing all of them is a request, not a default.
DEFAULT_LIST_LIMIT = 100
LimitOpt = Annotated[int, typer.Option("--limit", min=0, max=MAX_COUNT,
                                       help="Show at most N tasks, newest first (0 = all).")]
Lookup = Annotated[str, typer.Argument(help="Task id, run id or session key.")]


def build() -> typer.Typer:
    tasks_app = typer.Typer(help="Inspect and control background task records.", invoke_without_command=True,
                            no_args_is_help=False)

    @tasks_app.callback()
    def tasks_root(ctx: typer.Context, runtime: RuntimeFilter = None, status: StatusFilter = None,
                   json_out: JsonFlag = False, limit: LimitOpt = DEFAULT_LIST_LIMIT) -> None:
        """List tasks when no sub-command is given (same as `tasks list`)."""
        if ctx.invoked_subcommand is None:
            list_tasks(ctx, runtime, status, json_out, limit)

    @tasks_app.command("list")
    def list_cmd(ctx: typer.Context, runtime: RuntimeFilter = None, status: StatusFilter = None,
                 json_out: JsonFlag = False, limit: LimitOpt = DEFAULT_LIST_LIMIT) -> None:
        """Tasks, newest first."""
        list_tasks(ctx, runtime, status, json_out, limit)

    @tasks_app.command("show")
    def show_cmd(ctx: typer.Context, lookup: Lookup, json_out: JsonFlag = False) -> None:
        """One task in full: timing, delivery state, error and terminal summary."""
        ledger = app_context(ctx).ledger()
        task = inspect_one(ctx, lookup)
        if json_out:
            emit_json(task.to_json())
            return
        _ = ledger
        for line in show_lines(task):
            out(line)

    @tasks_app.command("cancel")
    def cancel_cmd(ctx: typer.Context, lookup: Lookup,
                   reason: Annotated[str | None, typer.Option("--reason", help="Recorded as the error.")] = None
                   ) -> None:
        """Cancel a task: its runtime stops the work, or the registry records the cancellation."""
        result = app_context(ctx).ledger().tasks.cancel(lookup, reason)
        if not result.found:
            raise TaskNotFound(lookup)
        if not result.cancelled or result.task is None:
            err(result.reason or f"Could not cancel task: {lookup}")
            raise typer.Exit(EXIT_NOT_FOUND_OR_REFUSED)
        task = result.task
        out(f"Cancelled {task.task_id} ({task.runtime.value}).")

    @tasks_app.command("notify")
    def notify_cmd(ctx: typer.Context, lookup: Lookup,
                   policy: Annotated[PolicyOpt, typer.Argument(help="done_only | state_changes | silent")]) -> None:
        """Change who hears about a task, even while it runs."""
        task = app_context(ctx).ledger().tasks.set_notify_policy(lookup, policy.value)
        out(f"Updated {task.task_id} notify policy to {task.notify_policy.value}.")

    @tasks_app.command("events")
    def events_cmd(ctx: typer.Context, lookup: Lookup, json_out: JsonFlag = False) -> None:
        """A task's append-only history: each status it entered and each progress report."""
        ledger = app_context(ctx).ledger()
        task = ledger.tasks.require(lookup)
        events = ledger.tasks.events(task.task_id)
        if json_out:
            emit_json({"task_id": task.task_id, "events": [e.to_json() for e in events]})
            return
        for event in events:
            detail = f"  {safe(event.summary)}" if event.summary else ""
            out(f"{when(event.at)}  {event.kind:<10}{detail}".rstrip())

    return tasks_app


def inspect_one(ctx: typer.Context, lookup: str) -> Task:
    """The reconciled projection of one task (what maintenance would make of it), or TaskNotFound."""
    ledger = app_context(ctx).ledger()
    task = ledger.tasks.get(lookup)
    if task is None:
        raise TaskNotFound(lookup)
    from flowledger.flows import health

    return health.project_one(ledger, task)


def list_tasks(ctx: typer.Context, runtime: RuntimeOpt | None, status: StatusOpt | None, json_out: bool,
               limit: int = DEFAULT_LIST_LIMIT) -> None:
    ledger = app_context(ctx).ledger()
    from flowledger.flows import health

    rt = runtime.value if runtime else None
    st = status.value if status else None
    # One row past the limit tells us whether the listing was cut, without counting every record.
    tasks = health.project_list(ledger, runtime=rt, status=st, limit=limit + 1 if limit else None)
    truncated = bool(limit) and len(tasks) > limit
    tasks = tasks[:limit] if limit else tasks
    if json_out:
        emit_json(task_list_document(tasks, runtime=rt, status=st))
        if truncated:  # the document keeps the contract's keys; the hint goes to stderr
            err(f"Showing the newest {limit}; use --limit N (0 = all) to see more.")
        return
    for line in list_lines(tasks, rt, st):
        out(line)
    if truncated:
        out(f"Showing the newest {limit}; use --limit N (0 = all) to see more.")


def list_lines(tasks: list[Task], runtime: str | None, status: str | None) -> list[str]:
    queued = sum(t.status == TaskStatus.QUEUED for t in tasks)
    running = sum(t.status == TaskStatus.RUNNING for t in tasks)
    failures = sum(t.status in FAILURES for t in tasks)
    lines = [f"Background tasks: {len(tasks)}",
             f"Task pressure: {queued} queued · {running} running · {failures} issues"]
    if runtime:
        lines.append(f"Runtime filter: {runtime}")
    if status:
        lines.append(f"Status filter: {status}")
    if not tasks:
        lines.append("No background tasks found. Run flowledger tasks audit to check for stale task state.")
        return lines
    headers = [("Task", 10), ("Kind", 8), ("Status", 10), ("Delivery", 14), ("Run", 10), ("Child Session", 36),
               ("Summary", 80)]
    rows = [
        [t.task_id, t.runtime.value, t.status.value, t.delivery_status.value, t.run_id or "n/a",
         t.child_session_key or "n/a",
         cut(t.terminal_summary or t.progress_summary or t.label or t.task, 80)]
        for t in tasks
    ]
    return lines + table(headers, rows)


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
