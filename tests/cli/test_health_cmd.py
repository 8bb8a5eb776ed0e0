"""`flowledger tasks audit|maintenance|board` and `flowledger status` end to end through the CLI entry point
(REFERENCE §10.5, §10.6, §8; scenarios 46, 47). The CLI reads the wall clock, so records are written by a
ledger whose frozen clock sits at a fixed offset before it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from flowledger import FrozenClock, Ledger
from flowledger.cli.main import run
from flowledger.tasks.core.clock import SystemClock


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def seeded(state: Path) -> Iterator[Ledger]:
    clock = FrozenClock(SystemClock().now())
    with Ledger.open(state_dir=state, clock=clock) as ledger:
        yield ledger


def cli(capsys: pytest.CaptureFixture[str], state: Path, *argv: str) -> tuple[int, str, str]:
    code = run(["--state-dir", str(state), *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli_json(capsys: pytest.CaptureFixture[str], state: Path, *argv: str) -> Any:
    code, out, err = cli(capsys, state, *argv)
    assert code == 0, err
    return json.loads(out)


def back(ledger: Ledger, delta: timedelta) -> None:
    assert isinstance(ledger.clock, FrozenClock)
    ledger.clock.set(SystemClock().now() - delta)


def test_status_text_and_json(seeded: Ledger, state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    back(seeded, timedelta(minutes=12))
    seeded.tasks.create(runtime="cli", task="waiting", owner_key="agent:main:main")
    back(seeded, timedelta(hours=1))
    seeded.tasks.create(runtime="cli", task="gone", owner_key="agent:main:main", run_id="run-gone",
                        status="running", started_at=seeded.clock.now())
    code, out, _ = cli(capsys, state, "status")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "Tasks: 1 queued · 0 running · 0 issues"
    assert lines[1] == "By runtime: subagent 0 · acp 0 · cli 2 · cron 0"
    assert lines[2] == "Audit: 0 errors · 1 warnings"
    assert lines[3].startswith("Retained lost tasks: 1 retained until ")
    document = cli_json(capsys, state, "status", "--json")
    assert set(document) == {"line", "tasks", "audit", "retained_lost", "flows"}
    assert document["tasks"]["by_status"]["lost"] == 1 and document["tasks"]["failures"] == 0
    assert document["audit"] == {"total": 1, "warnings": 1, "errors": 0}
    assert document["retained_lost"]["count"] == 1
    assert document["retained_lost"]["next_cleanup_after"].endswith("Z")


def test_status_on_an_empty_ledger(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = cli_json(capsys, state, "status", "--json")
    assert document["line"] == "Tasks: 0 queued · 0 running · 0 issues"
    assert document["retained_lost"] is None
    code, out, _ = cli(capsys, state, "status")
    assert code == 0 and "Audit: clean" in out


def test_list_json_shows_the_reconciled_view(seeded: Ledger, state: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    back(seeded, timedelta(minutes=6))
    seeded.tasks.create(runtime="cli", task="gone", owner_key="agent:main:main", run_id="r",
                        status="running", started_at=seeded.clock.now())
    document = cli_json(capsys, state, "tasks", "list", "--json")
    assert [t["status"] for t in document["tasks"]] == ["lost"]
    assert document["tasks"][0]["error"] == "backing session missing"


def test_audit_usage_errors(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("0", "-1", "abc", "2.5"):
        code, out, err = cli(capsys, state, "tasks", "audit", "--limit", bad)
        assert (code, out) == (2, "")
        assert err.strip() == "--limit must be a positive integer, for example --limit 25."
    code, _, err = cli(capsys, state, "tasks", "audit", "--severity", "bogus")
    assert code == 2 and "Traceback" not in err


def test_scenario_46_audit_json_with_flows(seeded: Ledger, state: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    back(seeded, timedelta(minutes=40))
    seeded.tasks.create(runtime="cli", task="stale", owner_key="agent:main:main")
    seeded.flows.create_managed("agent:main:main", "tests/ctl", "wait for review", status="waiting")
    back(seeded, timedelta(minutes=45))
    seeded.flows.create_managed("agent:main:main", "tests/ctl", "hung", status="running")
    document = cli_json(capsys, state, "tasks", "audit", "--json")
    flows = document["summary"]["task_flows"]["by_code"]
    assert flows["stale_waiting"] == 1 and flows["stale_running"] == 1
    assert flows["missing_linked_tasks"] == 2
    assert len(flows) == 8
    combined = document["summary"]["combined"]
    assert combined["total"] == document["summary"]["total"] + document["summary"]["task_flows"]["total"]
    assert document["summary"]["by_code"]["stale_queued"] == 1
    limited = cli_json(capsys, state, "tasks", "audit", "--json", "--limit", "1")
    assert limited["displayed"] == 1 and limited["filters"] == {"severity": None, "code": None, "limit": 1}
    [first] = limited["findings"]
    assert (first["kind"], first["code"]) == ("task_flow", "stale_running")
    code, out, _ = cli(capsys, state, "tasks", "audit", "--code", "stale_queued")
    lines = out.splitlines()
    assert code == 0
    assert lines[1] == "Showing 1 matching findings."
    assert lines[2] == "Code filter: stale_queued"
    header = next(line for line in lines if line.startswith("Scope"))
    assert header.split() == ["Scope", "Severity", "Code", "Item", "Status", "Age", "Detail"]
    assert lines[-1].split()[:3] == ["Task", "warn", "stale_queued"] and " 40m " in lines[-1]


def test_scenario_47_maintenance_json_and_text(seeded: Ledger, state: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    back(seeded, timedelta(days=8))
    seeded.flows.create_managed("agent:main:main", "tests/ctl", "old", status="succeeded",
                                ended_at=seeded.clock.now())
    preview = cli_json(capsys, state, "tasks", "maintenance", "--json")
    assert preview["mode"] == "preview"
    assert preview["maintenance"]["task_flows"]["pruned"] == 1
    assert set(preview["maintenance"]) == {"tasks", "task_flows", "sessions"}
    assert set(preview["maintenance"]["tasks"]) == {"reconciled", "recovered", "cleanup_stamped", "pruned"}
    assert preview["maintenance"]["sessions"]["retention_ms"] == 604_800_000
    assert len(preview["audit_before"]["task_flows"]["by_code"]) == 8
    assert len(preview["audit_after"]["task_flows"]["by_code"]) == 8
    assert set(preview["tasks"]) == {"total", "active", "terminal", "failures", "by_status", "by_runtime"}
    code, out, _ = cli(capsys, state, "tasks", "maintenance")
    assert code == 0
    assert out.splitlines() == [
        "Tasks maintenance (preview): tasks 0 reconcile · 0 recovered · 0 cleanup stamp · 0 prune; "
        "task-flows 0 reconcile · 1 prune",
        "Session registry: 0 prune · 0 running cron jobs",
        "Tasks health: 0 queued · 0 running · 0 audit errors · 0 audit warnings",
        "Dry run only. Re-run with `flowledger tasks maintenance --apply` to write changes.",
    ]
    code, out, _ = cli(capsys, state, "tasks", "maintenance", "--apply")
    assert code == 0
    assert out.splitlines()[0].startswith("Tasks maintenance (applied): ")
    assert out.splitlines()[-1].startswith("Tasks health before apply: ")
    assert cli_json(capsys, state, "tasks", "maintenance", "--json")["maintenance"]["task_flows"]["pruned"] == 0


def test_board(seeded: Ledger, state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    back(seeded, timedelta(minutes=10))
    seeded.tasks.create(runtime="cli", task="build \x1b[31mred\x1b[0m", owner_key="agent:main:main",
                        status="running", started_at=seeded.clock.now(), run_id="r-b")
    seeded.tasks.create(runtime="cli", task="other session", owner_key="agent:main:other", status="running",
                        started_at=seeded.clock.now(), run_id="r-o")
    code, out, _ = cli(capsys, state, "tasks", "board", "--session", "agent:main:main")
    assert code == 0
    lines = out.splitlines()
    assert lines[:3] == ["📋 Tasks", "Current session: 1 active · 1 total", "1. 🟢 build red"]
    assert lines[3] in ("   CLI · running · elapsed 10m", "   CLI · running · elapsed 11m")
    code, out, _ = cli(capsys, state, "tasks", "board", "--session", "agent:main:nobody")
    assert out.splitlines() == ["📋 Tasks", "All clear - nothing linked to this session right now.",
                                "Agent-local: 2 active · 2 total"]
    code, _, err = cli(capsys, state, "tasks", "board")
    assert code == 2 and "Traceback" not in err
