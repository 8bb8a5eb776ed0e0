"""CONTRACT §7 "Limits" on both engines (issue 12, items 1 and 14): ids are never paths, caller text has caps
checked before the database, program text is cut; and a stored id that breaks the rule (a row written by someone
else into a shared ledger) still cannot aim `tasks logs` or a runtime outside the logs directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import update

from flowledger import Ledger
from flowledger.cli.main import run
from flowledger.scheduler.logs import log_paths
from flowledger.tasks.core.errors import InvalidInput
from flowledger.tasks.core.limits import MAX_PROGRAM_TEXT_BYTES, TRUNCATED
from flowledger.tasks.core.tables import task_runs

BAD_IDS = ["../../x", "/etc/passwd", "a/b", "..", ".", "x" * 129, "a b", "tab\tid", "é"]
OWNER = "agent:main:main"
Invoke = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(database_url: str, state_dir: Path, capsys: pytest.CaptureFixture[str]) -> Invoke:
    def invoke(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = run(["--state-dir", str(state_dir), "--database-url", database_url, *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return invoke


@pytest.mark.parametrize("bad", BAD_IDS)
def test_a_task_id_that_is_not_an_id_is_refused(ledger: Ledger, bad: str) -> None:
    with pytest.raises(InvalidInput, match="Invalid task id"):
        ledger.tasks.create(runtime="cli", task="t", owner_key=OWNER, task_id=bad)
    with pytest.raises(InvalidInput, match="Record 0: Invalid task id"):
        ledger.tasks.create_many([{"runtime": "cli", "task": "t", "owner_key": OWNER, "task_id": bad}])
    with pytest.raises(InvalidInput, match="Invalid flow id"):
        ledger.flows.create_managed(OWNER, "ctl", "goal", flow_id=bad)
    assert ledger.tasks.list() == [] and ledger.flows.list() == []


def test_the_longest_ids_are_kept_on_every_engine(ledger: Ledger) -> None:
    task_id, flow_id = "t" * 128, "f:" + "x" * 126
    flow = ledger.flows.create_managed(OWNER, "ctl", "goal", flow_id=flow_id)
    created = ledger.tasks.create(runtime="cli", task="t", owner_key=OWNER, task_id=task_id,
                                  parent_flow_id=flow.flow_id)
    assert (created.task_id, created.parent_flow_id) == (task_id, flow_id)
    got = ledger.tasks.get(task_id)
    assert got is not None and got.parent_flow_id == flow_id


def test_a_stored_id_outside_the_rule_stays_inside_the_logs_directory(cli: Invoke, database_url: str,
                                                                       state_dir: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.out"
    secret.write_text("the other user's file\n")
    with Ledger.open(state_dir=state_dir, database_url=database_url) as ledger:
        ledger.tasks.create(runtime="cli", task="t", owner_key=OWNER, run_id="run-evil", task_id="plain-id")
        with ledger.db.write() as conn:  # as a hostile writer to a shared database would
            conn.execute(update(task_runs).where(task_runs.c.task_id == "plain-id")
                         .values(task_id="../../secret"))
    code, out, err = cli("tasks", "logs", "run-evil")
    assert "the other user's file" not in out + err
    assert code == 0 and "No captured output" in err
    for stored in ("../../secret", str(secret.with_suffix("")), "..", "a/../../b"):
        for path in log_paths(state_dir, stored):
            assert path.parent == state_dir / "logs", stored


def test_caller_text_over_its_cap_is_refused_the_same_on_every_engine(ledger: Ledger) -> None:
    base = {"runtime": "cli", "owner_key": OWNER}
    cases = [
        ({**base, "task": "x" * (64 * 1024 + 1)}, "Task text is too long"),
        ({**base, "task": "t", "label": "l" * 257}, "Label is too long"),
        ({**base, "task": "t", "owner_key": "agent:main:" + "k" * 502}, "Owner key is too long"),
        ({**base, "task": "t", "child_session_key": "agent:main:" + "c" * 502}, "Child session key is too long"),
    ]
    for fields, message in cases:
        with pytest.raises(InvalidInput, match=message):
            ledger.tasks.create(**fields)
    with pytest.raises(InvalidInput, match="Flow goal is too long"):
        ledger.flows.create_managed(OWNER, "ctl", "g" * (64 * 1024 + 1))
    long_key = "agent:main:" + "s" * 502
    with pytest.raises(InvalidInput, match="Session key is too long"):
        ledger.sessions.record_route(long_key, channel="webhook", to="x")
    # At the caps exactly, everything is kept.
    ok = ledger.tasks.create(runtime="cli", task="x" * (64 * 1024), owner_key="agent:main:" + "k" * 501,
                             label="l" * 256)
    assert len(ok.task) == 64 * 1024 and len(ok.owner_key) == 512
    ledger.sessions.record_route("agent:main:" + "s" * 501, channel="webhook", to="x")


def test_a_long_session_route_key_is_exit_2_not_a_storage_error(cli: Invoke) -> None:
    code, _out, err = cli("sessions", "route", "agent:main:" + "s" * 600)
    assert code == 2, err
    assert err.count("\n") == 1 and "too long" in err


def test_program_text_is_cut_and_nul_is_shown(ledger: Ledger) -> None:
    ledger.tasks.create(runtime="cli", task="t", owner_key=OWNER, run_id="r1", status="running")
    ledger.tasks.progress("r1", "p" * (MAX_PROGRAM_TEXT_BYTES + 10))
    ledger.tasks.complete("r1", summary="ok\x00nul " + "s" * MAX_PROGRAM_TEXT_BYTES)
    task = ledger.tasks.get("r1")
    assert task is not None and task.progress_summary is not None and task.terminal_summary is not None
    assert task.progress_summary.endswith(TRUNCATED)
    assert len(task.progress_summary.encode()) == MAX_PROGRAM_TEXT_BYTES
    assert task.terminal_summary.startswith("ok\\x00nul ") and task.terminal_summary.endswith(TRUNCATED)
    ledger.tasks.create(runtime="cli", task="t", owner_key=OWNER, run_id="r2", status="running")
    ledger.tasks.fail("r2", error="e" * MAX_PROGRAM_TEXT_BYTES + "tail")
    failed = ledger.tasks.get("r2")
    assert failed is not None and failed.error is not None and failed.error.endswith(TRUNCATED)


def test_run_over_a_limit_leaves_nothing_behind(cli: Invoke, database_url: str, state_dir: Path) -> None:
    """The queue's payload row is written before the task: a task refused for a limit must not leave it."""
    from sqlalchemy import func, select

    from flowledger.tasks.core.tables import task_payloads

    for args in (["--label", "l" * 300], ["--session", "agent:main:" + "s" * 600]):
        code, _out, err = cli("run", *args, "--", "true")
        assert code == 2 and "too long" in err and err.count("\n") == 1
    with Ledger.open(state_dir=state_dir, database_url=database_url) as ledger, ledger.db.read() as conn:
        assert ledger.tasks.list() == []
        assert conn.execute(select(func.count()).select_from(task_payloads)).scalar() == 0
