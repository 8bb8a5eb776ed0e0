"""`flowledger gateway`, `flowledger run` and `flowledger tasks logs`; cron commands live in cron_cmd."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, TextIO

import typer

from flowledger.cli import cron_cmd
from flowledger.cli.context import app_context
from flowledger.cli.logformat import LOG_FORMATS, formatter
from flowledger.cli.render import emit_json, err, out, safe
from flowledger.cli.run_result import exit_code_of
from flowledger.tasks.core.clock import iso_z
from flowledger.tasks.core.durations import parse_duration
from flowledger.tasks.core.errors import InvalidInputError, TaskNotFoundError
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import NotifyPolicy, Runtime, TaskStatus, is_terminal, parse_enum

if TYPE_CHECKING:
    from flowledger.flows.ledger import Ledger

LOG_LEVELS = ("debug", "info", "warning", "error")


def register(app: typer.Typer, tasks_app: typer.Typer) -> None:
    app.command("gateway")(gateway_cmd)
    app.command("run", context_settings={"allow_interspersed_args": False})(run_cmd)
    tasks_app.command("logs")(logs_cmd)
    cron_cmd.register(app, tasks_app)


def gateway_cmd(
    ctx: typer.Context,
    log_level: Annotated[str, typer.Option("--log-level", metavar="LEVEL",
                                           help="debug | info | warning | error")] = "info",
    log_format: Annotated[str, typer.Option("--log-format", metavar="FORMAT",
                                            help="text | json (one object a line, for log shippers)")] = "text",
    max_flows: Annotated[int | None, typer.Option(
        "--max-flows", metavar="N", help="Detached flows driven at once (default 8, or FLOWLEDGER_MAX_FLOWS).")] = None,
) -> None:
    """Run the gateway in the foreground: sweep, cron jobs, runtimes. Stops cleanly on SIGTERM/SIGINT. Log
    times are UTC (ISO-8601, `Z`).

    Example: flowledger gateway --log-level debug --log-format json
    """
    level = log_level.strip().lower()
    if level not in LOG_LEVELS:
        raise InvalidInputError(f"Invalid --log-level {log_level!r}: expected one of {' | '.join(LOG_LEVELS)}.")
    if max_flows is not None and not 1 <= max_flows <= 10_000:
        raise InvalidInputError(f"Invalid --max-flows {max_flows}: expected a number from 1 to 10000.")
    kind = log_format.strip().lower()
    if kind not in LOG_FORMATS:
        raise InvalidInputError(f"Invalid --log-format {log_format!r}: expected one of {' | '.join(LOG_FORMATS)}.")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(kind))
    logging.basicConfig(level=getattr(logging, level.upper()), force=True, handlers=[handler])
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, getattr(logging, level.upper())))
    from flowledger.flows.ledger import Ledger
    from flowledger.scheduler.gateway import Gateway
    from flowledger.scheduler.lease import new_gateway_id

    config = app_context(ctx)
    gateway_id = new_gateway_id("gw")
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ledger = Ledger.open(state_dir=config.state_dir, database_url=config.database_url, authoritative=True,
                         gateway_id=gateway_id)
    gateway = Gateway(ledger, gateway_id=gateway_id, max_flows=max_flows)
    try:
        gateway.start()
        err("gateway ready")
        while not stop.wait(0.5):
            pass
    finally:
        gateway.stop()
        ledger.close()  # TRUNCATE checkpoint


def run_cmd(
    ctx: typer.Context,
    argv: Annotated[list[str] | None, typer.Argument(metavar="-- COMMAND [ARG]...", help="The command, after `--`.",
                                                     show_default=False)] = None,
    label: Annotated[str | None, typer.Option("--label", metavar="TEXT", help="A short name for the task.")] = None,
    session: Annotated[str | None, typer.Option("--session", metavar="KEY",
                                                help="Owner session key (else system scope).")] = None,
    timeout: Annotated[str | None, typer.Option("--timeout", metavar="DURATION",
                                                help="e.g. 30s, 5m; the task ends timed_out.")] = None,
    detach: Annotated[bool, typer.Option("--detach", help="Hand it over and return at once.")] = False,
    notify: Annotated[str | None, typer.Option("--notify", help="done_only | state_changes | silent (default "
                                                                "silent); needs --session.")] = None,
    channel: Annotated[str | None, typer.Option("--channel", help="Where its notices go (with --to).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="The target on --channel.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the Task as JSON.")] = False,
    runtime: Annotated[str, typer.Option("--runtime", help="cli (run the command) | subagent | acp (the command "
                                         "is the agent, asked --prompt).")] = "cli",
    prompt: Annotated[str | None, typer.Option("--prompt", help="What an agent run asks the agent.")] = None,
    mode: Annotated[str | None, typer.Option("--mode", help="acp: oneshot (default) | persistent.")] = None,
) -> None:
    """Run a command as a task (an agent with --runtime acp|subagent): handed to a running gateway, else run in
    this process. Exits with the command's own code (124 timed out, 130 cancelled, 1 a failed agent run);
    --detach prints the task id on stdout.

    Example: flowledger run --label backup --timeout 1h -- ./backup.sh
    """
    from flowledger.cli.flow_drive import origin_option
    from flowledger.scheduler.logs import log_paths
    from flowledger.scheduler.runner import agent_prompt, run_command

    rt = _run_runtime(runtime)
    agent_prompt(rt, prompt, label, mode)  # usage errors before anything is recorded
    limit = parse_duration(timeout, what="timeout") if timeout is not None else None
    policy = parse_enum(NotifyPolicy, notify, "--notify").value if notify is not None else None
    origin = origin_option(channel, to)
    if (policy not in (None, NotifyPolicy.SILENT.value) or origin is not None) and not session:
        raise InvalidInputError("--notify and --channel/--to need --session: notices go to a session's owner.")
    ledger = app_context(ctx).ledger()
    try:
        outcome = run_command(ledger, argv or [], label=label, session_key=session, timeout=limit, detach=detach,
                              runtime=rt, prompt=prompt, mode=mode, notify_policy=policy,
                              requester_origin=origin)
    except KeyboardInterrupt:
        err("Interrupted: the task was cancelled.")
        raise typer.Exit(130) from None
    task = outcome.task
    code = exit_code_of(task)
    if json_out:
        emit_json({**task.to_json(), "exit_code": code})
    elif detach:
        where = "handed to the gateway" if outcome.handled_by == "gateway" else \
            "queued; no gateway is running (start one with `flowledger gateway`)"
        out(task.task_id)  # `id=$(flowledger run --detach -- …)`
        err(f"Task {task.task_id} {where}.")
    else:
        out_path, err_path = log_paths(ledger.state_dir, task.task_id)
        _copy(out_path, sys.stdout)
        _copy(err_path, sys.stderr)
        if rt == Runtime.ACP and _ends_mid_line(out_path):  # the reply is streamed text, not lines
            sys.stdout.write("\n")
        if task.status != TaskStatus.SUCCEEDED:
            err(f"Task {task.task_id} {task.status.value}: {safe(task.error or '')}".rstrip(": "))
    if not detach and code:
        raise typer.Exit(code)


def _run_runtime(value: str) -> Runtime:
    choices = (Runtime.CLI, Runtime.SUBAGENT, Runtime.ACP)
    for runtime in choices:
        if value.strip() == runtime.value:
            return runtime
    raise InvalidInputError(f"Invalid --runtime {value!r}: expected one of {'|'.join(r.value for r in choices)}.")


def _ends_mid_line(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            if fh.tell() == 0:
                return False
            fh.seek(-1, 2)
            return fh.read(1) != b"\n"
    except OSError:
        return False


def logs_cmd(
    ctx: typer.Context,
    lookup: Annotated[str, typer.Argument(metavar="TASK", help="Task id (or a unique prefix), run id or session key.",
                                          show_default=False)],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the task ends.")] = False,
    tail_lines: Annotated[int | None, typer.Option("--tail", metavar="N", min=0,
                                                   help="Start with the last N lines of each stream.")] = None,
    timestamps: Annotated[bool, typer.Option("--timestamps", "-t",
                                             help="Prefix each line with the UTC time flowledger read it.")] = False,
) -> None:
    """The captured stdout (to stdout) and stderr (to stderr) of a task's run, then its status on stderr.

    Example: flowledger tasks logs 01a23b43-5c --follow --tail 20
    """
    from flowledger.scheduler.logs import log_paths

    ledger = app_context(ctx).ledger(read_only=True)
    task = ledger.tasks.get(lookup)
    if task is None:
        raise TaskNotFoundError(lookup)
    out_path, err_path = log_paths(ledger.state_dir, task.task_id)
    if not follow and not out_path.exists() and not err_path.exists():
        err(f"No captured output for task {task.task_id}.")
        err(status_line(task))
        return
    stamp = _stamper(ledger) if timestamps else None
    offsets = [_tail_offset(out_path, tail_lines), _tail_offset(err_path, tail_lines)]
    waiting_said = False
    while True:
        offsets[0] = _copy(out_path, sys.stdout, offsets[0], whole=not follow, stamp=stamp)
        offsets[1] = _copy(err_path, sys.stderr, offsets[1], whole=not follow, stamp=stamp)
        current = ledger.tasks.get(task.task_id) or task
        if not follow or is_terminal(current.status):
            if follow:
                offsets[0] = _copy(out_path, sys.stdout, offsets[0], stamp=stamp)
                offsets[1] = _copy(err_path, sys.stderr, offsets[1], stamp=stamp)
            err(status_line(current))
            return
        if current.status == TaskStatus.QUEUED and not waiting_said:
            err(f"Task {current.task_id} is queued; waiting for it to start (is a gateway running?)…")
            waiting_said = True
        time.sleep(0.2)


def status_line(task: Task) -> str:
    """`Task <id> succeeded (exit 0).` — the last line `tasks logs` prints, on stderr."""
    code = exit_code_of(task)
    tail_text = f" (exit {code})" if code is not None else ""
    error = f": {safe(task.error)}" if task.error and task.status != TaskStatus.SUCCEEDED else ""
    return f"Task {task.task_id} {task.status.value}{tail_text}{error}"[:500]


def _stamper(ledger: Ledger) -> Callable[[], str]:
    def stamp() -> str:
        return iso_z(ledger.clock.now()) or ""

    return stamp


def _tail_offset(path: Path, lines: int | None) -> int:
    """The byte offset where the last `lines` lines of `path` begin (0 = from the start)."""
    if lines is None:
        return 0
    try:
        data = path.read_bytes()
    except OSError:
        return 0
    if lines == 0:
        return len(data)
    end = len(data) - 1 if data.endswith(b"\n") else len(data)
    start = end
    for _ in range(lines):
        start = data.rfind(b"\n", 0, start)
        if start < 0:
            return 0
    return start + 1


def _copy(path: Path, stream: TextIO, offset: int = 0, *, whole: bool = True,
          stamp: Callable[[], str] | None = None) -> int:
    """Write what `path` gained since `offset`, terminal-safe line by line; return the new offset.
    Unless `whole`, a trailing partial line waits for the next call."""
    from flowledger.scheduler.logs import read_since

    text, new_offset = read_since(path, offset, whole=whole)
    if text:
        lines = text.split("\n")
        if stamp is not None:
            now = stamp()
            lines = [f"{now} {line}" if line else line for line in lines]
        stream.write("\n".join(safe(line) for line in lines))
        stream.flush()
    return new_offset
