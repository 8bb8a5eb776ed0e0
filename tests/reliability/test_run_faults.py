"""Work reported one way and done another (issue 12 items 4–6 and 15), on both engines: a flow submission that
commits whole or not at all, a command printing NUL, output that cannot be written, a missing working directory."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from flowledger import Ledger
from flowledger.cli.main import run
from flowledger.scheduler import queue
from flowledger.scheduler.gateway import Gateway
from flowledger.scheduler.runtimes.cli import CliRuntime
from flowledger.scheduler.runtimes.launch import LaunchFailed
from flowledger.tasks.core.states import TaskStatus

Invoke = Callable[..., tuple[int, str, str]]
FLOW = """
[flow]
goal = "two steps"
[[step]]
id = "a"
run = ["true"]
[[step]]
id = "b"
needs = ["a"]
run = ["true"]
"""


@pytest.fixture
def cli(database_url: str, state_dir: Path, capsys: pytest.CaptureFixture[str]) -> Invoke:
    def invoke(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = run(["--state-dir", str(state_dir), "--database-url", database_url, *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return invoke


def _refuse_claiming_queued_flows(ledger: Ledger) -> None:
    """A real database that takes the flow's first write and refuses the next, as a disk that fills up between
    the two would: the queued → running claim of a flow."""
    with ledger.db.write() as conn:
        if ledger.db.is_postgres:
            conn.execute(text(
                "CREATE OR REPLACE FUNCTION refuse_claim() RETURNS trigger AS $$ BEGIN "
                "RAISE EXCEPTION 'could not extend file: No space left on device'; END $$ LANGUAGE plpgsql"))
            conn.execute(text("CREATE TRIGGER refuse_claim BEFORE UPDATE ON flow_runs FOR EACH ROW "
                              "WHEN (OLD.status = 'queued') EXECUTE FUNCTION refuse_claim()"))
        else:
            conn.execute(text("CREATE TRIGGER refuse_claim BEFORE UPDATE ON flow_runs WHEN OLD.status = 'queued' "
                              "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"))


def test_a_foreground_flow_submission_is_one_write(cli: Invoke, database_url: str, state_dir: Path,
                                                   tmp_path: Path) -> None:
    """Item 4: a flow written queued, then claimed in a second write, was left queued when that write failed —
    and a gateway later ran the flow its user had been told did not run."""
    flow_file = tmp_path / "ok.toml"
    flow_file.write_text(FLOW)
    with Ledger.open(state_dir=state_dir, database_url=database_url) as ledger:
        _refuse_claiming_queued_flows(ledger)
        try:
            code, out, err = cli("tasks", "flow", "run", "--json", str(flow_file))
            flows = ledger.flows.list()
        finally:  # the PostgreSQL database is shared by the whole run: leave no trigger behind
            with ledger.db.write() as conn:
                conn.execute(text("DROP TRIGGER IF EXISTS refuse_claim" + (" ON flow_runs" if ledger.db.is_postgres
                                                                            else "")))
    assert not [f for f in flows if f.status.value == "queued"], "a queued flow was left for a gateway"
    assert code == 0, err
    assert json.loads(out)["status"] == "succeeded" and len(flows) == 1


def test_nul_in_the_last_line_of_output_does_not_fail_the_task(cli: Invoke) -> None:
    """Item 5."""
    code, out, err = cli("run", "--json", "--", "printf", "ok\\n\\000nul\\n")
    task = json.loads(out)
    assert code == 0, err
    assert task["status"] == "succeeded" and task["error"] is None
    assert task["terminal_summary"] == "\\x00nul"
    assert "Traceback" not in err


def test_a_flow_step_printing_nul_succeeds(cli: Invoke, tmp_path: Path) -> None:
    flow_file = tmp_path / "nul.toml"
    flow_file.write_text('[flow]\ngoal = "nul"\n[[step]]\nid = "a"\nrun = ["printf", "x\\\\000y\\\\n"]\n')
    code, out, err = cli("tasks", "flow", "run", "--json", str(flow_file))
    assert code == 0, err
    assert json.loads(out)["status"] == "succeeded"


def test_unwritable_logs_fail_the_task_at_once_with_exit_3(cli: Invoke, database_url: str,
                                                            state_dir: Path) -> None:
    """Item 6: `<state>/logs` cannot hold files (here: it is a file; a read-only or full disk does the same)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "logs").write_text("not a directory")
    code, out, err = cli("run", "--", "echo", "hi")
    assert code == 3 and out == ""
    assert err.startswith("Storage unavailable: task ") and err.count("\n") == 1, err
    with Ledger.open(state_dir=state_dir, database_url=database_url) as ledger:
        [task] = ledger.tasks.list()
    assert task.status == TaskStatus.FAILED and task.error is not None and "cannot write its output" in task.error


def test_a_missing_working_directory_is_named(database_url: str, state_dir: Path, tmp_path: Path) -> None:
    """Item 15: the runtime refuses before recording anything (LaunchFailed, scheduler/runtimes/launch.py);
    whoever asked records it, naming the directory, never as a missing program."""
    missing = str(tmp_path / "gone")
    with Ledger.open(state_dir=state_dir, database_url=database_url) as ledger:
        task = queue.enqueue(ledger, ["true"], cwd=missing)
        runtime = CliRuntime(ledger)
        try:
            with pytest.raises(LaunchFailed) as refused:
                runtime.start(task, ["true"], cwd=missing)
        finally:
            runtime.shutdown()
        assert refused.value.message == f"working directory {missing!r} does not exist"
        assert ledger.tasks.require(task.task_id).status == TaskStatus.QUEUED
        gateway = Gateway(ledger, gateway_id="gw-test")
        [(claimed, payload)] = queue.claim(ledger, gateway.gateway_id, 1, task_id=task.task_id)
        gateway._launch(claimed, payload)  # what the gateway's queue loop does with a claimed task
        ended = ledger.tasks.require(task.task_id)
    assert ended.status == TaskStatus.FAILED
    assert ended.error == f"working directory {missing!r} does not exist"


def test_unwritable_logs_fail_a_subagent_task_at_once(database_url: str, state_dir: Path) -> None:
    """Item 6's class: every runtime opens its logs before the task is marked running."""
    from flowledger.scheduler.runtimes.subagent import SubagentRuntime
    from flowledger.tasks.core.errors import StorageUnavailable

    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "logs").write_text("not a directory")
    with Ledger.open(state_dir=state_dir, database_url=database_url) as ledger:
        runtime = SubagentRuntime(ledger)
        try:
            with pytest.raises(StorageUnavailable, match="cannot write its output"):
                runtime.spawn(task="t", target=["true"], requester_session_key="agent:main:main")
        finally:
            runtime.shutdown()
        [task] = ledger.tasks.list()
    assert task.status == TaskStatus.FAILED
