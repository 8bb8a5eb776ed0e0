"""`flowledger tasks flow list|show|cancel|validate|run`: parse, call one service method, render.

Texts follow REFERENCE §10.7; JSON follows CONTRACT §3 (Flow keys plus `tasks` and `task_summary`) and §7
(`steps`). `flow run` drives the flow in this process, each step on its own runtime (cli, subagent, acp), with live
progress on stderr; `--detach` records it with the submitter's directory and allow-listed environment
(flows/context.py) for a gateway. `flow logs|wait|retry` live in cli/flow_ops.py.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from flowledger.cli import flow_ops
from flowledger.cli.context import app_context
from flowledger.cli.flow_drive import drive_here, origin_option, run_summary
from flowledger.cli.flow_views import print_flow, print_flow_page
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
from flowledger.cli.render import emit_json, err, out, safe
from flowledger.flows.documents import flow_document
from flowledger.flows.models import FlowStatus
from flowledger.tasks.core.errors import EXIT_NOT_FOUND_OR_REFUSED, FlowNotFoundError, OperationRefusedError
from flowledger.tasks.core.states import NotifyPolicy

if TYPE_CHECKING:  # the file format and the service (SQLAlchemy) load in the commands that use them
    pass

FlowStatusOpt = StrEnum("FlowStatusOpt", {s.value: s.value for s in FlowStatus})  # type: ignore[misc]

Lookup = Annotated[str, typer.Argument(metavar="FLOW", help="Flow id (or a unique prefix of ≥ 6 characters), or an "
                                                            "owner key (its newest live flow).", show_default=False)]
FlowFile = Annotated[Path, typer.Argument(metavar="FILE", help="A flow file (TOML).", dir_okay=False,
                                          show_default=False)]
DEFAULT_LIST_LIMIT = 100


def register(app: typer.Typer, tasks_app: typer.Typer) -> None:
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
        print_flow(flow, tasks, as_json=wants_json(ctx, json_out))

    @flow_app.command("cancel")
    def cancel_cmd(ctx: typer.Context, lookup: Lookup) -> None:
        """Request cancellation (sticky) and cancel every active child task.

        Example: flowledger tasks flow cancel 01a23b43-5c
        """
        result = app_context(ctx).ledger().flows.cancel(lookup)
        if not result.found:
            raise FlowNotFoundError(lookup)
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
                raise OperationRefusedError(
                    "Cannot hand the flow over: the current directory no longer exists.") from None
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
    print_flow_page(page, paging, ledger.clock.now(), status=st, as_json=wants_json(ctx, json_out))




