"""CLI start-up: what a command does not use, it does not import (docs/performance.md, "CLI start-up").

Timing is noisy on a shared machine; which modules a fresh interpreter has loaded is not. Each check runs in a
new interpreter, because this test process has long since imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import flowledger
from flowledger import Ledger

# Loaded only by the commands that use them: flow graphs, the gateway's scheduler, the acp runtime.
SCHEDULER_STACK = ("networkx", "apscheduler", "acp")
# Needed once a command opens the ledger, never to print help. (Not pydantic: typer itself coerces parameters
# with it.)
STORAGE_STACK = ("sqlalchemy", "sqlmodel", "psycopg")
# Webhook delivery and rich's help renderer.
OTHER_HEAVY = ("httpx", "rich")


def loaded_after(code: str) -> set[str]:
    """Top-level packages a fresh interpreter has imported after running `code` (which may print to stdout)."""
    probe = f"{code}\nimport json, sys\nsys.stderr.write(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stderr.splitlines()[-1]))


def cli_run(*args: str) -> str:
    return ("from flowledger.cli.main import run\n"
            f"code = run({list(args)!r})\n"
            "assert code == 0, code\n")


def test_importing_the_cli_loads_no_heavy_dependency() -> None:
    loaded = loaded_after("import flowledger.cli.main")
    assert loaded.isdisjoint(SCHEDULER_STACK + STORAGE_STACK + OTHER_HEAVY), \
        loaded & {*SCHEDULER_STACK, *STORAGE_STACK, *OTHER_HEAVY}


def test_help_renders_without_storage_or_rich() -> None:
    for args in (["--help"], ["tasks", "--help"], ["tasks", "flow", "run", "--help"], ["cron", "--help"]):
        loaded = loaded_after(cli_run(*args))
        heavy = loaded & {*SCHEDULER_STACK, *STORAGE_STACK, *OTHER_HEAVY}
        assert not heavy, (args, heavy)


def test_importing_the_package_is_cheap_and_the_facade_still_resolves() -> None:
    assert loaded_after("import flowledger").isdisjoint(STORAGE_STACK + SCHEDULER_STACK)
    loaded = loaded_after("from flowledger import TaskStatus, FrozenClock, InvalidInput")
    assert loaded.isdisjoint(STORAGE_STACK), loaded & set(STORAGE_STACK)


def test_every_facade_name_resolves_lazily_to_its_definition() -> None:
    # `from flowledger import *` goes through __all__, so a name missing from the lazy map would fail here.
    namespace: dict[str, object] = {}
    exec("from flowledger import *", namespace)
    assert set(flowledger.__all__) <= set(namespace)
    assert set(flowledger.__all__) <= set(dir(flowledger))
    assert flowledger.Ledger is Ledger
    for name in flowledger.__all__:
        assert getattr(flowledger, name).__name__ == name
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = flowledger.no_such_name  # type: ignore[attr-defined]


def test_reading_commands_load_no_scheduler_stack(ledger: Ledger, database_url: str, state_dir: Path) -> None:
    task = ledger.tasks.create(runtime="cli", task="nightly export", owner_key="agent:main:main")
    base = ["--state-dir", str(state_dir), "--database-url", database_url]
    for args in (["tasks", "show", task.task_id], ["status"], ["tasks", "list"]):
        loaded = loaded_after(cli_run(*base, *args) + "import sys\nassert 'sqlite3' in sys.modules\n")
        lean = database_url.startswith("sqlite")  # cli/lean.py answers these
        # The probe is real: these commands did open the ledger, through the ORM or the lean sqlite3 door.
        assert ("sqlalchemy" not in loaded) if lean else ("sqlalchemy" in loaded), args
        assert loaded.isdisjoint(SCHEDULER_STACK), (args, loaded & set(SCHEDULER_STACK))
        assert "httpx" not in loaded, args  # only a send (or a configured heartbeat webhook) needs it


@pytest.mark.parametrize("args", [["tasks", "list"], ["tasks", "show", "{task}", "--json"], ["tasks", "flow", "list"],
                                  ["tasks", "flow", "show", "{flow}", "--json"], ["status"], ["status", "--json"]])
def test_the_lean_read_commands_load_neither_storage_nor_typer(args: list[str], sqlite_url: str,
                                                                state_dir: Path) -> None:
    """docs/performance.md "Round two": on SQLite the console script answers these without SQLAlchemy,
    sqlmodel, pydantic or typer (cli/entry.py → cli/lean.py)."""
    with Ledger.open(state_dir=state_dir, database_url=sqlite_url) as ledger:
        flow = ledger.flows.create_managed("agent:main:main", "ctl", "nightly")
        task = ledger.tasks.create(runtime="cli", task="nightly export", owner_key="agent:main:main",
                                   parent_flow_id=flow.flow_id)
    argv = [a.format(task=task.task_id, flow=flow.flow_id) for a in args]
    heavy = heavy_after_console_script(state_dir, sqlite_url, argv)
    assert not heavy, (args, heavy)


@pytest.mark.parametrize("args", [["tasks", "cancel", "{task}"], ["tasks", "cancel", "{task}", "--reason", "wrong"],
                                  ["run", "--detach", "--", "true"],
                                  ["run", "--detach", "--label", "backup", "--timeout", "1h", "--json", "--", "tar",
                                   "czf", "out.tgz", "src"]])
def test_the_lean_write_commands_load_neither_storage_nor_typer(args: list[str], sqlite_url: str,
                                                                state_dir: Path) -> None:
    """docs/performance.md "Round two": on SQLite the console script cancels a `cli` task and queues a detached
    command without SQLAlchemy, sqlmodel, pydantic or typer (cli/entry.py → cli/lean_writes.py)."""
    with Ledger.open(state_dir=state_dir, database_url=sqlite_url) as ledger:
        task = ledger.tasks.create(runtime="cli", task="nightly export", status="running")
    argv = [a.format(task=task.task_id) for a in args]
    heavy = heavy_after_console_script(state_dir, sqlite_url, argv)
    assert not heavy, (args, heavy)
    with Ledger.open(state_dir=state_dir, database_url=sqlite_url) as ledger:  # and it did write
        if args[0] == "tasks":
            assert ledger.tasks.require(task.task_id).status.value == "cancelled"
        else:
            assert len(ledger.tasks.list()) == 2


def heavy_after_console_script(state_dir: Path, sqlite_url: str, argv: list[str]) -> set[str]:
    """The storage, typer and scheduler modules the console script loaded answering `argv` (exit 0 required)."""
    code = ("import sys\n"
            f"sys.argv = ['flowledger', '--state-dir', {str(state_dir)!r}, '--database-url', {sqlite_url!r}, "
            f"*{argv!r}]\n"
            "from flowledger.cli.entry import main\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
            "assert 'sqlite3' in sys.modules\n")
    return set(loaded_after(code) & {*STORAGE_STACK, "pydantic", "typer", "click", *SCHEDULER_STACK, "httpx"})
