"""The lean path of the two writing commands operators run all day on a SQLite ledger: `tasks cancel <lookup>
[--reason R]` of a `cli` task and `run --detach [--label L] [--session K] [--timeout D] [--notify P] [--runtime cli]
[--json] -- COMMAND [ARG]...` (docs/performance.md, "Round two").

Profiled: the cancel itself is a few milliseconds; ~1.2 s of the full path is importing SQLAlchemy, sqlmodel and
the schema, the flow and delivery layers and typer. This path parses only those command lines, writes through
flows/lean_writes.py (plain sqlite3, the same record rules and row builders as the ORM service) and prints what
the full path prints (cli/tasks_cmd.py `cancel_cmd`, cli/gateway_cmd.py `run_cmd`), byte for byte.

Like cli/lean.py it answers only what it is sure of and otherwise returns None *before writing or printing
anything*, and the caller runs the full path: another option or a usage error, PostgreSQL, a missing ledger, a
config.toml in the state dir, another schema version, a lookup that finds nothing or several tasks, a task that is
not an active unlinked `cli` task, and any write the full path's hooks take part in (flows/lean_writes.py lists
them). A cancel of a task already ended is refused in the full path's words (one line, exit 1), nothing written.
Once something is committed, a failure is reported (one line, exit 1) and never handed to the full path, which
would run the command a second time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from flowledger.cli.lean import failed, global_options, ledger_file

if TYPE_CHECKING:
    from flowledger.tasks.core.draft_rules import TaskDraft

log = logging.getLogger(__name__)
T = TypeVar("T")

# `run`'s options this path takes, each with a value except the flags (cli/gateway_cmd.py `run_cmd`).
RUN_VALUE_OPTIONS = frozenset({"--label", "--session", "--timeout", "--notify", "--runtime"})
RUN_FLAGS = frozenset({"--detach", "--json"})


@dataclass(frozen=True, slots=True)
class Request:
    command: str  # "cancel" | "run"
    options: dict[str, str]
    args: list[str]  # the lookup of a cancel; the command of a run
    state_dir: str | None
    database_url: str | None


def _options(words: list[str], valued: frozenset[str],
             flags: frozenset[str]) -> tuple[dict[str, str], list[str]] | None:
    """Options (each at most once) and the other words, or None for anything unusual: the full path judges it."""
    given: dict[str, str] = {}
    rest: list[str] = []
    words = list(words)
    while words:
        word = words.pop(0)
        if not word.startswith("-"):
            rest.append(word)
            continue
        name, eq, value = word.partition("=")
        if name in flags and not eq and name not in given:
            given[name] = ""
        elif name in valued and name not in given:
            if not eq:
                if not words or words[0].startswith("-"):
                    return None
                value = words.pop(0)
            given[name] = value
        else:
            return None
    return given, rest


def parse(argv: list[str]) -> Request | None:
    """The request when `argv` is one of this path's command lines, else None."""
    split = global_options(argv)
    if split is None:
        return None
    given, rest = split
    state_dir, url = given.get("--state-dir"), given.get("--database-url")
    if rest[:2] == ["tasks", "cancel"]:
        parsed = _options(rest[2:], frozenset({"--reason"}), frozenset())
        if parsed is None or len(parsed[1]) != 1 or not parsed[1][0].strip():
            return None
        return Request("cancel", parsed[0], parsed[1], state_dir, url)
    if rest[:1] == ["run"] and "--" in rest:
        cut = rest.index("--")
        parsed = _options(rest[1:cut], RUN_VALUE_OPTIONS, RUN_FLAGS)
        command = rest[cut + 1:]
        if parsed is None or parsed[1] or "--detach" not in parsed[0] or not command:
            return None
        return Request("run", parsed[0], command, state_dir, url)
    return None


def run_lean_write(argv: list[str]) -> int | None:
    """Exit code when this path answered; None when the caller must run the full path (nothing written or
    printed)."""
    request = parse(argv)
    if request is None:
        return None
    committed: list[object] = []
    try:
        answer = _write(request, committed)
    except Exception as exc:
        if not committed:  # FallbackError, a refusal, anything: nothing written or printed yet
            log.debug("lean write path fell back", exc_info=True)
            return None
        return failed(exc)  # written: the full path must not run the command a second time
    if answer is None:
        return None
    try:
        return answer()
    except Exception as exc:  # as cli/main.py: one line, exit 1, never a traceback (a closed pipe, say)
        return failed(exc)


def _said(say: Callable[[T], None], what: T, code: int) -> int:
    say(what)
    return code


def _write(request: Request, committed: list[object]) -> Callable[[], int] | None:
    """Everything checked and written; what is left prints the answer and gives the exit code, or None to fall
    back. What it committed
    goes into `committed` at once: from then on a failure is reported, never handed to the full path."""
    from flowledger.cli.render import emit_json, err, out
    from flowledger.cli.run_result import exit_code_of
    from flowledger.flows.lean_writes import CancelRefusedError, LeanWriter
    from flowledger.scheduler.submission import any_gateway
    from flowledger.tasks.core import filemodes
    from flowledger.tasks.core.clock import SystemClock
    from flowledger.tasks.core.draft_rules import parse_draft
    from flowledger.tasks.core.errors import EXIT_NOT_FOUND_OR_REFUSED
    from flowledger.tasks.runs import wakeup

    prepared = _run_draft(request) if request.command == "run" else None  # usage errors before anything else
    where = ledger_file(request.state_dir, request.database_url)
    if where is None:
        return None
    state_dir, path, database = where
    # What Database.open does: the directories 0700 (the file exists, so it keeps its mode).
    filemodes.make_private_dir(state_dir, required=False)
    filemodes.make_private_dir(path.parent, required=True)
    with LeanWriter(path, SystemClock().now()) as writer:
        if prepared is None:
            try:
                task = writer.cancel(request.args[0], request.options.get("--reason"))
            except CancelRefusedError as refused:  # cli/tasks_cmd.py `cancel_cmd`: one line, exit 1
                filemodes.check_private(state_dir, path)
                reason = refused.reason
                return lambda: _said(err, reason, EXIT_NOT_FOUND_OR_REFUSED)
            committed.append(task)
            filemodes.check_private(state_dir, path)
            return lambda: _said(out, f"Cancelled {task.task_id} ({task.runtime.value}).", 0)
        fields, payload = prepared
        task = writer.submit(parse_draft(fields, writer.now), payload)
        committed.append(task)
        # Committed: as scheduler/queue.py `enqueue`, wake this host's gateways, then see whether one runs.
        wakeup.wake(wakeup.sqlite_identity(database))
        running = any_gateway(writer.fresh_gateway_ids())
    filemodes.check_private(state_dir, path)
    if "--json" in request.options:
        return lambda: _said(emit_json, {**task.to_json(), "exit_code": exit_code_of(task)}, 0)
    where_to = "handed to the gateway" if running else \
        "queued; no gateway is running (start one with `flowledger gateway`)"

    def say() -> int:  # cli/gateway_cmd.py `run_cmd`
        out(task.task_id)  # `id=$(flowledger run --detach -- …)`
        err(f"Task {task.task_id} {where_to}.")
        return 0

    return say


def _run_draft(request: Request) -> tuple[TaskDraft, dict[str, object]]:
    """cli/gateway_cmd.py `run_cmd`'s checks and scheduler/queue.py `enqueue`'s records for a `cli` command: the
    create fields and the payload row. Raises on anything the full path would refuse (it then words it)."""
    from flowledger.scheduler.submission import check_submission, cli_task_fields
    from flowledger.tasks.core.durations import parse_duration
    from flowledger.tasks.core.errors import InvalidInputError
    from flowledger.tasks.core.ids import new_id
    from flowledger.tasks.core.states import NotifyPolicy, parse_enum
    from flowledger.tasks.runs.payload_rows import payload_values

    options, argv = request.options, request.args
    if options.get("--runtime", "cli").strip() != "cli":
        raise InvalidInputError("not a cli run")
    label, session = options.get("--label"), options.get("--session")
    timeout = parse_duration(options["--timeout"], what="timeout") if "--timeout" in options else None
    notify = options.get("--notify")
    policy = parse_enum(NotifyPolicy, notify, "--notify").value if notify is not None else None
    if policy not in (None, NotifyPolicy.SILENT.value) and not session:
        raise InvalidInputError("--notify needs --session")
    if not argv[0].strip():
        raise InvalidInputError("Nothing to run")
    check_submission(argv, label=label, session_key=session, task_text=None, shell=False)
    task_id = new_id()
    fields = cli_task_fields(task_id, argv, label=label, session_key=session, shell=False, task_text=None,
                             notify_policy=policy, requester_origin=None)
    return fields, payload_values(task_id, argv, timeout=timeout)
