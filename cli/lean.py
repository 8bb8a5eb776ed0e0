"""The lean path of the read commands operators run all day: `tasks [list]`, `tasks show <lookup>`,
`tasks flow list`, `tasks flow show <lookup>` and `status`, each with or without `--json`, on a SQLite ledger.

Profiled (docs/performance.md, "Round two"): on an empty ledger ~70 % of such a command was importing
SQLAlchemy, sqlmodel/pydantic and building the schema classes, then typer's parameter machinery; the query
itself is milliseconds. This path parses only those exact command lines, reads through tasks/health/sqlite_reads.py
(plain sqlite3, no schema work) and prints through the same view functions and JSON serialisers as the full
path (cli/task_views.py, cli/flow_views.py, flows/documents.py), so the output is byte for byte the same.

It answers only what it is sure of and otherwise returns None *before printing anything*, and the caller runs
the full path: any other option or command, PostgreSQL, a missing ledger (`No ledger at … yet.`), another
schema version, a config.toml in the state dir (its warnings are the full path's to give), a lookup that finds
nothing or several records, any error.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from flowledger.tasks.core.errors import EXIT_NOT_FOUND_OR_REFUSED

if TYPE_CHECKING:
    from flowledger.tasks.health.sqlite_reads import LeanReader

log = logging.getLogger(__name__)

COMMANDS = {("tasks",): "tasks list", ("tasks", "list"): "tasks list", ("tasks", "show"): "tasks show",
            ("tasks", "flow", "list"): "flow list", ("tasks", "flow", "show"): "flow show", ("status",): "status"}
TAKES_LOOKUP = frozenset({"tasks show", "flow show"})
GLOBAL_OPTIONS = ("--state-dir", "--database-url")
# tasks/core/config.py CONFIG_FILE (a test keeps them equal): importing that module builds every channel's config
# class, a sixth of this path, only to learn a file name.
CONFIG_FILE = "config.toml"


@dataclass(frozen=True, slots=True)
class Request:
    command: str
    lookup: str | None
    as_json: bool
    state_dir: str | None
    database_url: str | None


def global_options(argv: list[str]) -> tuple[dict[str, str], list[str]] | None:
    """The leading `--state-dir` / `--database-url` (each at most once, `--name value` or `--name=value`) and the
    words after them; None for a command line the lean paths leave to typer."""
    given: dict[str, str] = {}
    rest = list(argv)
    while rest and rest[0].startswith("--") and rest[0].split("=", 1)[0] in GLOBAL_OPTIONS:
        name, eq, value = rest.pop(0).partition("=")
        if not eq:
            if not rest:
                return None
            value = rest.pop(0)
        if name in given:
            return None
        given[name] = value
    return given, rest


def parse(argv: list[str]) -> Request | None:
    """The request when `argv` is exactly one of the lean command lines, else None."""
    split = global_options(argv)
    if split is None:
        return None
    given, rest = split
    for size in (3, 2, 1):  # the command words first, exactly; `--json` only after them (`tasks flow --json
        command = COMMANDS.get(tuple(rest[:size])) if len(rest) >= size else None  # list` is a usage error)
        if command is None:
            continue
        tail = rest[size:]
        args = [a for a in tail if a != "--json"]
        if len(tail) - len(args) > 1:
            return None
        as_json = len(args) != len(tail)
        if command in TAKES_LOOKUP:
            if len(args) != 1 or args[0].startswith("-") or not args[0].strip():
                return None
            return Request(command, args[0], as_json, given.get("--state-dir"), given.get("--database-url"))
        if args:
            return None
        return Request(command, None, as_json, given.get("--state-dir"), given.get("--database-url"))
    return None


def sqlite_file(url: str) -> Path | None:
    """The file of a plain `sqlite:///<path>` URL; None for anything the full path must judge."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return None
    database = url[len(prefix):]
    if not database or any(ch in database for ch in "?#%") or database.startswith("file:") \
            or database == ":memory:" or any(len(p.encode("utf-8", "surrogateescape")) > 255
                                             for p in Path(database).parts):
        return None
    try:
        return Path(database).expanduser().resolve()
    except (OSError, ValueError, RuntimeError):
        return None


def run_lean(argv: list[str]) -> int | None:
    """Exit code when the lean path answered; None when the caller must run the full path (nothing printed)."""
    request = parse(argv)
    if request is None:
        return None
    try:
        answer = _read(request)
    except Exception:  # FallbackError, a stored value we cannot read, anything: nothing printed yet, so the full
        log.debug("lean read path fell back", exc_info=True)  # path answers, or names the error its own way
        return None
    if answer is None:
        return None
    try:
        answer()
    except Exception as exc:  # as cli/main.py: one line, exit 1, never a traceback (a closed pipe, say)
        return failed(exc)
    return 0


def failed(exc: Exception) -> int:
    """An error after the lean path took the command: one line, exit 1 (as cli/main.py), never a traceback."""
    from flowledger.cli.render import err, internal_error

    log.debug("unexpected error", exc_info=True)
    err(internal_error(exc))
    return EXIT_NOT_FOUND_OR_REFUSED


def ledger_file(state_dir_option: str | None, url_option: str | None) -> tuple[Path, Path, str] | None:
    """(state dir, SQLite file, the URL's database part) when a lean path may open the ledger: an existing SQLite
    file and no config.toml (its warnings are the full path's to give); else None."""
    from flowledger.tasks.core.dburl import resolve_database_url, resolve_state_dir

    state_dir = resolve_state_dir(state_dir_option)
    url = resolve_database_url(url_option, state_dir)
    path = sqlite_file(url)
    if path is None or not path.is_file() or os.path.lexists(state_dir / CONFIG_FILE):
        return None
    return state_dir, path, url[len("sqlite:///"):]


def _read(request: Request) -> Callable[[], None] | None:
    """Everything read and checked; what is left prints the answer."""
    from flowledger.tasks.core import filemodes
    from flowledger.tasks.core.clock import SystemClock
    from flowledger.tasks.health.sqlite_reads import LeanReader

    where = ledger_file(request.state_dir, request.database_url)
    if where is None:
        return None
    state_dir, path, _database = where
    # What Database.open does for the read commands: the directories 0700 (never the file: it exists).
    filemodes.make_private_dir(state_dir, required=False)
    filemodes.make_private_dir(path.parent, required=True)
    now = SystemClock().now()
    as_json = request.as_json
    with LeanReader(path, now) as reader:
        answer = _answer(reader, request, now, as_json)
    filemodes.check_private(state_dir, path)  # the same warnings the full path gives once the ledger is open
    return answer


def _answer(reader: LeanReader, request: Request, now: datetime, as_json: bool) -> Callable[[], None]:
    # Imported once the command line is one of ours: a command this path does not answer pays nothing for it,
    # and `status` nothing for the task and flow views (their tables, documents and step views).
    from flowledger.flows import lean_reads

    if request.command == "status":  # flows/health.py `status`, assembled by the same flows/status_report.py
        from flowledger.cli.status_views import print_status

        report = lean_reads.status(reader)
        return lambda: print_status(report, as_json=as_json)
    from flowledger.cli.flow_views import print_flow, print_flow_page
    from flowledger.cli.task_views import print_task, print_task_list_json, print_task_page
    from flowledger.flows.pages import DEFAULT_LIMIT, FlowPage, Paging, TaskPage

    paging = Paging(limit=DEFAULT_LIMIT, offset=0)
    if request.command == "tasks list":
        filters = {"runtime": None, "status": None, "owner": None, "flow": None, "since": None,
                   "limit": DEFAULT_LIMIT, "offset": 0}
        if as_json:  # the document holds the page and the total; projecting moves a task from one status to
            # another, never in or out of an unfiltered listing, so the total is the stored count: no other row
            # is projected (on an unswept ledger those were every stale active row, 100,000 at a million)
            tasks, total = reader.newest_tasks(limit=DEFAULT_LIMIT), reader.stored_total()
            return lambda: print_task_list_json(tasks, total, filters)
        counts = reader.count_by_status()
        page = TaskPage(reader.newest_tasks(limit=DEFAULT_LIMIT), sum(counts.values()), counts, filters)
        return lambda: print_task_page(page, paging, now, as_json=as_json)
    if request.command == "tasks show":
        task = reader.project([reader.resolve_task(request.lookup or "")])[0]
        return lambda: print_task(task, as_json=as_json)
    if request.command == "flow list":
        flows = lean_reads.newest_flows(reader, limit=DEFAULT_LIMIT)
        flow_counts = lean_reads.flow_counts(reader)
        flow_page = FlowPage(flows, reader.linked_for([f.flow_id for f in flows]),
                             sum(n for n, _ in flow_counts.values()), flow_counts,
                             {"status": None, "owner": None, "since": None, "limit": DEFAULT_LIMIT, "offset": 0})
        return lambda: print_flow_page(flow_page, paging, now, status=None, as_json=as_json)
    flow = lean_reads.resolve_flow(reader, request.lookup or "")
    linked = reader.linked_for([flow.flow_id])[flow.flow_id]
    return lambda: print_flow(flow, linked, as_json=as_json)
