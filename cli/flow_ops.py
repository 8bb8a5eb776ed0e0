"""Operating flows (CONTRACT §7): `tasks flow logs|wait|retry`, and the per-step lines `flow show` and `flow run`
print. Parse, call one service function, render.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer

from flowledger.cli.context import app_context
from flowledger.cli.render import cut, emit_json, err, out, safe
from flowledger.flows.documents import flow_document
from flowledger.flows.models import LINK_TERMINAL, Flow, FlowStatus
from flowledger.flows.steps import StepView, step_views, tasks_by_step, why_not_succeeded
from flowledger.tasks.core.errors import EXIT_NOT_FOUND_OR_REFUSED
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import is_terminal

if TYPE_CHECKING:
    from flowledger.flows.ledger import Ledger

EXIT_TIMEOUT = 124
POLL_S = 0.2
JsonFlag = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]
Lookup = Annotated[str, typer.Argument(help="Flow id, or an owner key (its newest live flow).")]


def register(flow_app: typer.Typer) -> None:
    flow_app.command("logs")(logs_cmd)
    flow_app.command("wait")(wait_cmd)
    flow_app.command("retry")(retry_cmd)


# --- the per-step lines -----------------------------------------------------------------------------------


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


# --- logs ---------------------------------------------------------------------------------------------------


def logs_cmd(ctx: typer.Context, lookup: Lookup,
             follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the flow ends.")]
             = False) -> None:
    """Every step's captured output, each line prefixed `[<step_id>] ` (stdout to stdout, stderr to stderr).

    Example: flowledger tasks flow logs nightly-release --follow
    """
    from flowledger.scheduler.logs import log_paths

    ledger = app_context(ctx).ledger()
    flow = ledger.flows.require(lookup)
    offsets: dict[str, int] = {}
    while True:
        tasks = ledger.flows.linked_tasks(flow.flow_id)
        attempts = tasks_by_step(flow.flow_id, tasks)
        ordered = sorted((task.created_at, step, task) for step, pairs in attempts.items() for _, task in pairs)
        ended = is_terminal_flow(ledger, flow.flow_id)
        for _, step, task in ordered:
            out_path, err_path = log_paths(ledger.state_dir, task.task_id)
            whole = not follow or ended or is_terminal(task.status)
            for path, stream in ((out_path, sys.stdout), (err_path, sys.stderr)):
                key = str(path)
                offsets[key] = _copy_prefixed(path, stream, f"[{safe(step)}] ", offsets.get(key, 0), whole=whole)
        if not follow or ended:
            return
        time.sleep(POLL_S)


def is_terminal_flow(ledger: Ledger, flow_id: str) -> bool:
    flow = ledger.flows.get_by_id(flow_id)
    return flow is None or flow.status in LINK_TERMINAL


def _copy_prefixed(path: Path, stream: TextIO, prefix: str, offset: int, *, whole: bool) -> int:
    """Write the complete lines `path` gained since `offset`, each prefixed (a partial last line waits unless
    `whole`); return the new offset."""
    from flowledger.scheduler.logs import read_since

    text, new_offset = read_since(path, offset, whole=whole)
    if text:
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        stream.write("".join(f"{prefix}{safe(line)}\n" for line in lines))
        stream.flush()
    return new_offset


# --- wait ---------------------------------------------------------------------------------------------------


def wait_cmd(ctx: typer.Context, lookup: Lookup,
             timeout: Annotated[str | None, typer.Option("--timeout", help="Give up after this long (e.g. 10m); "
                                                                            "exit 124.")] = None) -> None:
    """Block until the flow ends: exit 0 when it succeeded, 1 when it ended otherwise, 124 on timeout.

    Example: flowledger tasks flow wait 01a23b43-5c --timeout 10m
    """
    from flowledger.tasks.core.durations import parse_duration

    limit = parse_duration(timeout, what="timeout") if timeout is not None else None
    ledger = app_context(ctx).ledger()
    flow = ledger.flows.require(lookup)
    deadline = time.monotonic() + limit.total_seconds() if limit is not None else None
    while flow.status not in LINK_TERMINAL:
        if deadline is not None and time.monotonic() >= deadline:
            err(f"Timed out waiting for flow {flow.flow_id}: it is {flow.status.value}.")
            raise typer.Exit(EXIT_TIMEOUT)
        time.sleep(POLL_S)
        flow = ledger.flows.require(flow.flow_id)
    out(f"Flow {flow.flow_id} {flow.status.value}.")
    if flow.status != FlowStatus.SUCCEEDED:
        why = why_not_succeeded(flow, step_views(flow, ledger.flows.linked_tasks(flow.flow_id)))
        if why:
            err(f"Why: {safe(why)}")
        raise typer.Exit(EXIT_NOT_FOUND_OR_REFUSED)


# --- retry --------------------------------------------------------------------------------------------------


def retry_cmd(ctx: typer.Context, lookup: Lookup,
              detach: Annotated[bool, typer.Option("--detach", help="Queue it for the gateway and return.")] = False,
              json_out: JsonFlag = False) -> None:
    """Run an ended (failed, cancelled or lost) graph flow again: succeeded steps are kept, the rest run anew.

    Example: flowledger tasks flow retry 01a23b43-5c --detach
    """
    from flowledger.cli.flow_cmd import drive_here, run_summary
    from flowledger.flows.retry import retry_flow

    ledger = app_context(ctx).ledger()
    plan = retry_flow(ledger, lookup)
    flow = plan.flow
    message = f"Retrying {flow.flow_id}: {len(plan.to_run)} steps to run, {len(plan.kept)} kept."
    if json_out:
        err(message)
    else:
        out(message)
    if not detach:
        flow = drive_here(ledger, flow=flow, live=not json_out)
    tasks = ledger.flows.linked_tasks(flow.flow_id)
    if json_out:
        emit_json(flow_document(flow, tasks))
    elif detach:
        err(f"A running gateway will run it. Follow it with: flowledger tasks flow wait {flow.flow_id}")
    else:
        for line in run_summary(flow, tasks):
            out(line)
    if not detach and flow.status != FlowStatus.SUCCEEDED:
        raise typer.Exit(EXIT_NOT_FOUND_OR_REFUSED)
