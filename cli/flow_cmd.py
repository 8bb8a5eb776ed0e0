"""`flowledger tasks flow list|show|cancel|validate|run`: parse, call one service method, render.

Texts follow REFERENCE §10.7; JSON follows CONTRACT §3 (Flow keys plus `tasks` and `task_summary`) and §7
(`steps`). `flow run` drives the flow in this process, each step on its own runtime (cli, subagent, acp), with live
progress on stderr; `--detach` records it with the submitter's directory and allow-listed environment
(flows/context.py) for a gateway. `flow logs|wait|retry` live in cli/flow_ops.py.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from flowledger.cli import flow_ops
from flowledger.cli.context import app_context
from flowledger.cli.options import (
    JsonFlag,
    LimitOpt,
    OffsetOpt,
    OwnerOpt,
    SinceOpt,
    inherited,
    parse_since,
    wants_json,
)
from flowledger.cli.render import cut, emit_json, err, out, safe, when
from flowledger.cli.tables import Col, age, duration, render, short_ids
from flowledger.flows.documents import flow_document, flow_list_document
from flowledger.flows.models import ABSENT, Flow, FlowStatus
from flowledger.tasks.core.errors import EXIT_NOT_FOUND_OR_REFUSED, FlowNotFound, OperationRefused
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import ACTIVE, FAILURES, NotifyPolicy, Runtime

if TYPE_CHECKING:  # the file format and the service (SQLAlchemy) load in the commands that use them
    from flowledger.flows.controller import StepEvent
    from flowledger.flows.definitions import FlowDefinition
    from flowledger.flows.ledger import Ledger
    from flowledger.flows.listing import FlowPage

FlowStatusOpt = StrEnum("FlowStatusOpt", {s.value: s.value for s in FlowStatus})  # type: ignore[misc]

Lookup = Annotated[str, typer.Argument(metavar="FLOW", help="Flow id (or a unique prefix of ≥ 6 characters), or an "
                                                            "owner key (its newest live flow).", show_default=False)]
FlowFile = Annotated[Path, typer.Argument(metavar="FILE", help="A flow file (TOML).", dir_okay=False,
                                          show_default=False)]
DEFAULT_LIST_LIMIT = 100


def register(app: typer.Typer, tasks_app: typer.Typer) -> None:
    _ = app
    flow_app = typer.Typer(help="Inspect, cancel and run flows (Task Flow).", no_args_is_help=True)
    tasks_app.add_typer(flow_app, name="flow")
    flow_ops.register(flow_app)

    @flow_app.command("list")
    def list_cmd(ctx: typer.Context,
                 status: Annotated[FlowStatusOpt | None, typer.Option("--status", help="Only this status.")] = None,
                 json_out: JsonFlag = False, owner: OwnerOpt = None, since: SinceOpt = None,
                 limit: LimitOpt = None, offset: OffsetOpt = None) -> None:
        """Flows, newest first, with their linked tasks.

        Example: flowledger tasks flow list --status running --since 1d
        """
        list_flows(ctx, status, json_out, owner, since, limit, offset)

    @flow_app.command("show")
    def show_cmd(ctx: typer.Context, lookup: Lookup, json_out: JsonFlag = False) -> None:
        """One flow: status, goal, step, timing and its linked tasks.

        Example: flowledger tasks flow show 01a23b43-5c --json
        """
        ledger = app_context(ctx).ledger(read_only=True)
        flow = ledger.flows.require(lookup)
        tasks = ledger.flows.linked_tasks(flow.flow_id)
        if wants_json(ctx, json_out):
            emit_json(flow_document(flow, tasks))
            return
        for line in show_lines(flow, tasks):
            out(line)

    @flow_app.command("cancel")
    def cancel_cmd(ctx: typer.Context, lookup: Lookup) -> None:
        """Request cancellation (sticky) and cancel every active child task.

        Example: flowledger tasks flow cancel 01a23b43-5c
        """
        result = app_context(ctx).ledger().flows.cancel(lookup)
        if not result.found:
            raise FlowNotFound(lookup)
        if not result.cancelled or result.flow is None:
            err(result.reason or f"Could not cancel flow: {lookup}")
            raise typer.Exit(EXIT_NOT_FOUND_OR_REFUSED)
        flow = result.flow
        out(f"Cancelled {flow.flow_id} ({flow.sync_mode.value}) with status {flow.status.value}.")

    @flow_app.command("validate")
    def validate_cmd(path: FlowFile) -> None:
        """Check a flow file: syntax, keys, runtimes, unknown or duplicate steps, cycles.

        Example: flowledger tasks flow validate examples/nightly-release.toml
        """
        from flowledger.flows.definitions import load_flow_file

        definition = load_flow_file(path)
        count = len(definition.steps)
        out(f"Flow file OK: {safe(definition.goal)} ({count} step{'' if count == 1 else 's'}).")

    @flow_app.command("run")
    def run_cmd(ctx: typer.Context, path: FlowFile,
                detach: Annotated[bool, typer.Option("--detach", help="Queue it for the gateway and return.")] = False,
                notify: Annotated[NotifyOpt | None, typer.Option("--notify", help="Overrides [flow] notify.")] = None,
                channel: Annotated[str | None, typer.Option("--channel", help="Notices go to this channel "
                                                                              "(with --to).")] = None,
                to: Annotated[str | None, typer.Option("--to", help="The target on --channel.")] = None,
                json_out: JsonFlag = False) -> None:
        """Define a graph flow from a file and run it to the end (or hand it to the gateway with --detach).

        Example: flowledger tasks flow run examples/nightly-release.toml
        """
        from flowledger.flows.definitions import load_flow_file

        definition = load_flow_file(path)
        origin = origin_option(channel, to)
        ledger = app_context(ctx).ledger()
        from flowledger.flows.controller import define_flow

        policy = notify.value if notify else None
        if detach:
            import os

            from flowledger.flows.context import capture

            try:
                here = os.getcwd()
            except OSError:
                raise OperationRefused("Cannot hand the flow over: the current directory no longer exists.") from None
            context = capture(here, os.environ, definition.pass_env)
            flow = define_flow(ledger, definition, context, notify=policy, origin=origin)
            if json_out:
                emit_json(flow_document(flow, []))
            else:
                out(f"Queued flow {flow.flow_id} ({len(definition.steps)} steps); a running gateway will run it.")
                err(f"Follow it with: flowledger tasks flow show {flow.flow_id}")
            return
        flow = drive_here(ledger, live=not json_out, definition=definition, notify=policy, origin=origin)
        tasks = ledger.flows.linked_tasks(flow.flow_id)
        if json_out:
            emit_json(flow_document(flow, tasks))
        else:
            for line in run_summary(flow, tasks):
                out(line)
        if flow.status != FlowStatus.SUCCEEDED:
            raise typer.Exit(EXIT_NOT_FOUND_OR_REFUSED)


NotifyOpt = StrEnum("NotifyOpt", {p.value: p.value for p in NotifyPolicy})  # type: ignore[misc]


def origin_option(channel: str | None, to: str | None) -> dict[str, str] | None:
    """`--channel C --to T` as a requester origin; one without the other is a usage error."""
    if channel is None and to is None:
        return None
    if not (channel or "").strip() or not (to or "").strip():
        from flowledger.tasks.core.errors import InvalidInput

        raise InvalidInput("--channel and --to go together: give both (e.g. --channel webhook --to ops).")
    assert channel is not None and to is not None
    return {"channel": channel.strip(), "to": to.strip()}


def stored_definition(flow: Flow) -> FlowDefinition:
    """The definition a graph flow stored in its state (read back as a gateway would)."""
    from flowledger.flows.definitions import flow_from_document
    from flowledger.flows.steps import graph_state

    state = graph_state(flow)
    if state is None:
        raise OperationRefused(f"Flow {flow.flow_id} is not a graph flow.")
    return flow_from_document(state["definition"], source=f"flow {flow.flow_id}")


def drive_here(ledger: Ledger, *, live: bool, flow: Flow | None = None, definition: FlowDefinition | None = None,
               notify: str | None = None, origin: dict[str, str] | None = None) -> Flow:
    """Drive a graph flow to its end in this process, each step on its runtime: a new one from `definition`
    (defined running, driven by this process), or a retried `flow` (queued)."""
    try:
        from flowledger.scheduler.runtimes.acp import AcpRuntime
        from flowledger.scheduler.runtimes.cli import CliRuntime
        from flowledger.scheduler.runtimes.subagent import SubagentRuntime
    except ImportError as exc:
        raise OperationRefused(f"Cannot run flows here: the runtimes are unavailable ({exc}). "
                               "Use --detach to hand the flow to a gateway.") from None
    from flowledger.flows.controller import GraphController, StepLauncher, define_flow

    # One lease (the cli runtime's) backs every step this process runs, whatever its runtime.
    cli = CliRuntime(ledger)
    agents: dict[Runtime, SubagentRuntime | AcpRuntime] = {
        Runtime.SUBAGENT: SubagentRuntime(ledger, gateway_id=cli.gateway_id),
        Runtime.ACP: AcpRuntime(ledger, gateway_id=cli.gateway_id)}
    launchers: dict[Runtime, StepLauncher] = {Runtime.CLI: cli, **agents}
    for runtime, adapter in agents.items():  # a cancel in this process reaches the live agent
        ledger.tasks.cancel_adapters[runtime] = adapter
    if flow is None:
        assert definition is not None
        # One write: the whole submission, or none of it.
        flow = define_flow(ledger, definition, driving=cli, notify=notify, origin=origin)
    else:  # a retried flow, queued: the controller claims it
        definition = stored_definition(flow)
    progress = _LiveProgress(definition, flow) if live else None
    try:
        controller = GraphController(ledger, flow, launchers, on_progress=progress.update if progress else None)
        try:
            return controller.run()
        except KeyboardInterrupt:
            err(f"Interrupted: cancelling flow {flow.flow_id}.")
            ledger.flows.cancel(flow.flow_id)
            raise
    finally:
        if progress is not None:
            progress.close()
        for agent in agents.values():
            agent.shutdown()
        cli.shutdown()


class _LiveProgress:
    """A rich progress bar for the flow (steps, not attempts; red when the flow did not succeed) and one stderr
    line per step start, retry and end."""

    def __init__(self, definition: FlowDefinition, flow: Flow) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True, highlight=False)
        self.bar_column = BarColumn()
        self.progress = Progress(TextColumn("{task.description}"), self.bar_column, MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=self.console, transient=False)
        self.bar = self.progress.add_task(self._escape(cut(definition.goal, 60)), total=len(definition.steps))
        self.progress.start()
        self.console.print(f"Flow {flow.flow_id}: {self._escape(safe(definition.goal))}", markup=False)

    @staticmethod
    def _escape(text: str) -> str:
        from rich.markup import escape

        return escape(text)

    def update(self, event: StepEvent) -> None:
        self.progress.update(self.bar, completed=event.done, total=event.total)
        step = safe(event.step_id or "")
        task = event.task.task_id if event.task else ""
        if event.kind == "step_started":
            self.console.print(f"▶ {step} started (task {task})", markup=False)
        elif event.kind == "step_retry":
            self.console.print(retry_line(event), markup=False)
        elif event.kind == "step_finished":
            mark = "✔" if event.status == "succeeded" else "✖"
            self.console.print(f"{mark} {step} {event.status}", markup=False)
        elif event.kind == "flow_finished" and event.flow.status != FlowStatus.SUCCEEDED:
            # The bar ends red at the steps that succeeded: a failed flow never looks complete and green.
            state = event.flow.state if isinstance(event.flow.state, dict) else {}
            steps = state.get("steps") or {}
            succeeded = sum(1 for entry in steps.values() if entry.get("status") == "succeeded")
            self.bar_column.complete_style = self.bar_column.finished_style = "red"
            self.progress.update(self.bar, completed=succeeded)
            self.progress.refresh()

    def close(self) -> None:
        self.progress.stop()


# --- rendering ------------------------------------------------------------------------------------------


def list_flows(ctx: typer.Context, status: FlowStatusOpt | None, json_out: bool, owner: str | None,
               since: str | None, limit: int | None, offset: int | None) -> None:
    from flowledger.flows.listing import Paging, flow_page
    from flowledger.tasks.core.states import parse_enum

    # `tasks --status S flow list`: the parent's status holds when it names a flow status (exit 2 otherwise).
    parent_status = inherited(ctx, "status", None)
    st = status.value if status else (parse_enum(FlowStatus, parent_status.value, "flow status").value
                                      if parent_status else None)
    limit = inherited(ctx, "limit", limit)
    paging = Paging.parse(DEFAULT_LIST_LIMIT if limit is None else limit, inherited(ctx, "offset", offset) or 0)
    after = parse_since(inherited(ctx, "since", since))  # usage errors before the ledger is opened
    ledger = app_context(ctx).ledger(read_only=True)
    page = flow_page(ledger, status=st, owner_key=inherited(ctx, "owner", owner),
                     since=after, paging=paging)
    if wants_json(ctx, json_out):
        emit_json(flow_list_document(page.flows, page.linked, status=st, total=page.total, filters=page.filters))
        return
    for line in list_head(page):
        out(line)
    if page.flows:
        render_flows(page.flows, page.linked, ledger.clock.now())
    from flowledger.cli.tasks_cmd import page_hint

    more = page_hint(len(page.flows), page.total, paging)
    if more:
        out(more)


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
    short = short_ids([f.flow_id for f in flows])
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
    steps = flow_ops.graph_show_lines(flow, tasks)
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


def retry_line(event: StepEvent) -> str:
    """`↻ unit-tests attempt 2/3 failed: exit 1 — <last stderr line>`."""
    step = safe(event.step_id or "")
    error = (event.task.error if event.task else None) or ""
    head, _, rest = error.partition(": ")
    head = head.replace("exit code ", "exit ", 1) if head.startswith("exit code ") else head
    lines = [line for line in rest.strip().splitlines() if line.strip()]
    detail = f"{head} — {lines[-1].strip()}" if lines else head
    text = f"↻ {step} attempt {event.attempt}/{event.max_attempts} {event.status}"
    return safe(f"{text}: {detail}" if detail else text)


def run_summary(flow: Flow, tasks: list[Task]) -> list[str]:
    from flowledger.flows.steps import step_views, why_not_succeeded

    views = step_views(flow, tasks) or []
    counts = {status: sum(v.status == status for v in views) for status in ("succeeded", "cancelled")}
    failed = sum(v.status in {s.value for s in FAILURES} for v in views)
    attempts = sum(v.attempts for v in views)
    lines = [f"Flow {flow.flow_id} {flow.status.value}: {safe(flow.goal)}",
             f"Steps: {counts['succeeded']} succeeded · {failed} failed · {counts['cancelled']} cancelled · "
             f"{len(views)} steps ({attempts} attempts)"]
    why = why_not_succeeded(flow, views)
    if why:
        lines.append(f"Reason: {safe(why)}")
    lines.append(f"Details: flowledger tasks flow show {flow.flow_id}")
    lines.append(f"Logs: flowledger tasks flow logs {flow.flow_id}")
    if flow.status in (FlowStatus.FAILED, FlowStatus.CANCELLED, FlowStatus.LOST):
        lines.append(f"Retry: flowledger tasks flow retry {flow.flow_id}")
    return lines
