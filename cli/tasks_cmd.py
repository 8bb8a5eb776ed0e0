"""`flowledger tasks [list|show|cancel|notify|events]`: parse, call one service method, render."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from flowledger.cli.context import app_context
from flowledger.cli.options import (
    FlowOpt,
    JsonFlag,
    LimitOpt,
    OffsetOpt,
    OwnerOpt,
    SinceOpt,
    inherited,
    parse_since,
    wants_json,
)
from flowledger.cli.render import emit_json, err, out, safe, when
from flowledger.cli.task_views import print_task, print_task_page
from flowledger.tasks.core.errors import EXIT_NOT_FOUND_OR_REFUSED, TaskNotFoundError
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import NotifyPolicy, Runtime, TaskStatus

RuntimeOpt = StrEnum("RuntimeOpt", {r.value: r.value for r in Runtime})  # type: ignore[misc]
StatusOpt = StrEnum("StatusOpt", {s.value: s.value for s in TaskStatus})  # type: ignore[misc]
PolicyOpt = StrEnum("PolicyOpt", {p.value: p.value for p in NotifyPolicy})  # type: ignore[misc]

RuntimeFilter = Annotated[RuntimeOpt | None, typer.Option("--runtime", help="Only this runtime.")]
StatusFilter = Annotated[StatusOpt | None, typer.Option("--status", help="Only this status.")]
# A ledger can hold millions of records; listing all of them is a request, not a default.
DEFAULT_LIST_LIMIT = 100
Lookup = Annotated[str, typer.Argument(metavar="TASK", help="Task id (or a unique prefix of ≥ 6 characters), "
                                                            "run id or session key.", show_default=False)]


def build() -> typer.Typer:
    tasks_app = typer.Typer(help="Inspect and control background task records.", invoke_without_command=True,
                            no_args_is_help=False)

    @tasks_app.callback()
    def tasks_root(ctx: typer.Context, runtime: RuntimeFilter = None, status: StatusFilter = None,
                   json_out: JsonFlag = False, owner: OwnerOpt = None, since: SinceOpt = None,
                   flow: FlowOpt = None, limit: LimitOpt = None, offset: OffsetOpt = None) -> None:
        """List tasks when no sub-command is given (same as `tasks list`); --json, --runtime and --status given
        here hold for the sub-command.

        Example: flowledger tasks --runtime cron --json
        """
        if ctx.invoked_subcommand is None:
            list_tasks(ctx, runtime, status, json_out, owner, since, flow, limit, offset)

    @tasks_app.command("list")
    def list_cmd(ctx: typer.Context, runtime: RuntimeFilter = None, status: StatusFilter = None,
                 json_out: JsonFlag = False, owner: OwnerOpt = None, since: SinceOpt = None,
                 flow: FlowOpt = None, limit: LimitOpt = None, offset: OffsetOpt = None) -> None:
        """Tasks, newest first (the reconciled view).

        Example: flowledger tasks list --status failed --since 2h
        """
        list_tasks(ctx, runtime, status, json_out, owner, since, flow, limit, offset)

    @tasks_app.command("show")
    def show_cmd(ctx: typer.Context, lookup: Lookup, json_out: JsonFlag = False) -> None:
        """One task in full: timing, delivery state, error and terminal summary.

        Example: flowledger tasks show 01a23b43-5c
        """
        print_task(inspect_one(ctx, lookup), as_json=wants_json(ctx, json_out))

    @tasks_app.command("cancel")
    def cancel_cmd(ctx: typer.Context, lookup: Lookup,
                   reason: Annotated[str | None, typer.Option("--reason", help="Recorded as the error.")] = None
                   ) -> None:
        """Cancel a task: its runtime stops the work, or the registry records the cancellation.

        Example: flowledger tasks cancel 01a23b43-5c --reason "wrong branch"
        """
        result = app_context(ctx).ledger().tasks.cancel(lookup, reason)
        if not result.found:
            raise TaskNotFoundError(lookup)
        if not result.cancelled or result.task is None:
            err(result.reason or f"Could not cancel task: {lookup}")
            raise typer.Exit(EXIT_NOT_FOUND_OR_REFUSED)
        task = result.task
        out(f"Cancelled {task.task_id} ({task.runtime.value}).")

    @tasks_app.command("notify")
    def notify_cmd(ctx: typer.Context, lookup: Lookup,
                   policy: Annotated[PolicyOpt, typer.Argument(help="done_only | state_changes | silent")]) -> None:
        """Change who hears about a task, even while it runs.

        Example: flowledger tasks notify 01a23b43-5c silent
        """
        task = app_context(ctx).ledger().tasks.set_notify_policy(lookup, policy.value)
        out(f"Updated {task.task_id} notify policy to {task.notify_policy.value}.")

    @tasks_app.command("events")
    def events_cmd(ctx: typer.Context, lookup: Lookup, json_out: JsonFlag = False) -> None:
        """A task's append-only history: each status it entered and each progress report.

        Example: flowledger tasks events 01a23b43-5c --json
        """
        ledger = app_context(ctx).ledger(read_only=True)
        task = ledger.tasks.require(lookup)
        events = ledger.tasks.events(task.task_id)
        if wants_json(ctx, json_out):
            emit_json({"task_id": task.task_id, "events": [e.to_json() for e in events]})
            return
        for event in events:
            detail = f"  {safe(event.summary)}" if event.summary else ""
            out(f"{when(event.at)}  {event.kind:<10}{detail}".rstrip())

    return tasks_app


def inspect_one(ctx: typer.Context, lookup: str) -> Task:
    """The reconciled projection of one task (what maintenance would make of it), or TaskNotFoundError."""
    ledger = app_context(ctx).ledger(read_only=True)
    task = ledger.tasks.get(lookup)
    if task is None:
        raise TaskNotFoundError(lookup)
    from flowledger.flows import health

    return health.project_one(ledger, task)


def list_tasks(ctx: typer.Context, runtime: RuntimeOpt | None, status: StatusOpt | None, json_out: bool,
               owner: str | None, since: str | None, flow: str | None, limit: int | None,
               offset: int | None) -> None:
    from flowledger.flows.listing import Paging, task_page

    rt = inherited(ctx, "runtime", runtime)
    st = inherited(ctx, "status", status)
    limit = inherited(ctx, "limit", limit)
    paging = Paging.parse(DEFAULT_LIST_LIMIT if limit is None else limit, inherited(ctx, "offset", offset) or 0)
    after = parse_since(inherited(ctx, "since", since))  # usage errors before the ledger is opened
    ledger = app_context(ctx).ledger(read_only=True)
    page = task_page(ledger, runtime=rt.value if rt else None, status=st.value if st else None,
                     owner_key=inherited(ctx, "owner", owner),
                     since=after,
                     flow=inherited(ctx, "flow", flow), paging=paging)
    print_task_page(page, paging, ledger.clock.now(), as_json=wants_json(ctx, json_out))
