"""End to end: flows handed to a real gateway with `tasks flow run --detach` (CONTRACT §7).

Every step runs on its own runtime (cli, subagent, acp), in the submitter's directory with the allow-listed
environment; a cancel reaches a running step of every runtime; a step that cannot start fails at once naming
the step; several flows run at the same time on one gateway, and two gateways on PostgreSQL share flows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway_support import ACP_AGENT, FAST_ENV, GatewayProc, cli, wait_for
from sqlalchemy import select

from flowledger import Ledger
from flowledger.flows.context import capture
from flowledger.flows.controller import define_flow
from flowledger.flows.definitions import load_flow_file
from flowledger.flows.documents import flow_document
from flowledger.flows.models import FlowStatus
from flowledger.tasks.core.tables import run_contexts

PY = sys.executable


def _sqlite(tmp_path: Path) -> tuple[Path, str]:
    state = tmp_path / "state"
    return state, f"sqlite:///{state / 'tasks' / 'runs.sqlite'}"


def _toml_list(argv: list[str]) -> str:
    return json.dumps(argv)


def _submit(state: Path, url: str, flow_file: Path, *, cwd: Path, env: dict[str, str] | None = None) -> str:
    """`tasks flow run --detach --json` from `cwd`; the flow id."""
    done = subprocess.run([PY, "-m", "flowledger.cli.main", "--state-dir", str(state), "--database-url", url,
                           "tasks", "flow", "run", str(flow_file), "--detach", "--json"],
                          check=False, cwd=cwd, capture_output=True, text=True, timeout=30,
                          env={**os.environ, **FAST_ENV, **(env or {})})
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["flow_id"])


def _show(state: Path, url: str, flow_id: str) -> dict[str, Any]:
    """What `tasks flow show --json` prints, read in this process (a CLI start-up per poll is slow)."""
    with Ledger.open(state_dir=state, database_url=url) as ledger:
        flow = ledger.flows.require(flow_id)
        return flow_document(flow, ledger.flows.linked_tasks(flow_id))


def _ended(state: Path, url: str, flow_id: str) -> Callable[[], dict[str, object] | None]:
    def check() -> dict[str, object] | None:
        flow = _show(state, url, flow_id)
        return flow if flow["status"] not in ("queued", "running", "waiting") else None
    return check


def _by_label(flow: dict[str, object]) -> dict[str, dict[str, object]]:
    tasks = flow["tasks"]
    assert isinstance(tasks, list)
    return {t["label"]: t for t in tasks}


def test_detached_flow_runs_cli_subagent_and_acp_steps_in_the_submitters_directory(
        tmp_path: Path, gateways: Callable[..., GatewayProc]) -> None:
    state, url = _sqlite(tmp_path)
    gateways(state, url)
    work = tmp_path / "work"
    work.mkdir()
    script = work / "script.sh"
    script.write_text("#!/bin/sh\npwd > where.txt\nenv > env.txt\necho scripted\n")
    script.chmod(0o755)
    flow_file = work / "mixed.toml"
    flow_file.write_text(textwrap.dedent(f"""\
        [flow]
        goal = "every runtime"
        pass_env = ["PASSED_ON"]
        [[step]]
        id = "script"
        run = ["./script.sh"]
        env = {{ STEP_VAR = "from-the-step" }}
        [[step]]
        id = "sub"
        runtime = "subagent"
        needs = ["script"]
        run = {_toml_list([PY, "-c", "import os; print('sub in', os.getcwd())"])}
        [[step]]
        id = "agent"
        runtime = "acp"
        needs = ["script"]
        prompt = "hello from a detached flow"
        run = {_toml_list(ACP_AGENT)}
        """))
    flow_id = _submit(state, url, flow_file, cwd=work,
                      env={"PASSED_ON": "yes", "NOT_PASSED": "secret", "LC_TIME": "C"})
    flow = wait_for(_ended(state, url, flow_id), 30, 0.2, "the mixed flow to end")
    tasks = _by_label(flow)
    assert flow["status"] == "succeeded", tasks
    assert {label: (t["runtime"], t["status"]) for label, t in tasks.items()} == {
        "script": ("cli", "succeeded"), "sub": ("subagent", "succeeded"), "agent": ("acp", "succeeded")}
    assert tasks["agent"]["terminal_summary"] == "echo: hello from a detached flow"
    assert tasks["sub"]["terminal_summary"] == f"sub in {work}"
    assert (work / "where.txt").read_text().strip() == str(work)
    env = dict(line.split("=", 1) for line in (work / "env.txt").read_text().splitlines() if "=" in line)
    assert env["PASSED_ON"] == "yes" and env["STEP_VAR"] == "from-the-step" and env["LC_TIME"] == "C"
    assert "NOT_PASSED" not in env
    # Only the runtime's own markers: none of the submitter's or the gateway's FLOWLEDGER_* settings.
    assert {k for k in env if k.startswith("FLOWLEDGER_")} == {"FLOWLEDGER_TASK_ID", "FLOWLEDGER_RUN_ID"}


def test_cancelling_a_detached_flow_stops_a_running_step_of_every_runtime(
        tmp_path: Path, gateways: Callable[..., GatewayProc]) -> None:
    state, url = _sqlite(tmp_path)
    gateways(state, url)
    flow_file = tmp_path / "slow.toml"
    flow_file.write_text(textwrap.dedent(f"""\
        [flow]
        goal = "slow everywhere"
        [[step]]
        id = "cli"
        run = ["sleep", "60"]
        [[step]]
        id = "sub"
        runtime = "subagent"
        run = {_toml_list([PY, "-c", "import time; time.sleep(60)"])}
        [[step]]
        id = "agent"
        runtime = "acp"
        prompt = "sleep 60"
        run = {_toml_list(ACP_AGENT)}
        [[step]]
        id = "after"
        needs = ["cli"]
        run = ["true"]
        """))
    flow_id = _submit(state, url, flow_file, cwd=tmp_path)

    def all_running() -> bool:
        tasks = _by_label(_show(state, url, flow_id))
        return all(tasks.get(s, {}).get("status") == "running" for s in ("cli", "sub", "agent"))

    wait_for(all_running, 20, 0.1, "a running step of every runtime")
    cancelled = cli(state, url, "tasks", "flow", "cancel", flow_id)
    assert cancelled.returncode == 0, cancelled.stderr
    began = time.monotonic()  # the cancel is recorded; from here every step must stop within 5 s
    flow = wait_for(_ended(state, url, flow_id), 5, 0.05, "the flow to end after its cancel")
    assert flow["status"] == "cancelled"
    tasks = _by_label(flow)
    assert {label: t["status"] for label, t in tasks.items()} == {
        "cli": "cancelled", "sub": "cancelled", "agent": "cancelled"}

    def processes_gone() -> bool:  # the gateway stopped every step's process, not only the records
        with Ledger.open(state_dir=state, database_url=url) as ledger:
            rows = ledger.db.transact(lambda conn: conn.execute(select(run_contexts)).all())
            print(rows)
            return not rows

    wait_for(processes_gone, 5 - (time.monotonic() - began), 0.05, "every step's run to end")


def test_a_step_that_cannot_start_fails_at_once_naming_the_step(
        tmp_path: Path, gateways: Callable[..., GatewayProc]) -> None:
    state, url = _sqlite(tmp_path)
    gateways(state, url)
    flow_file = tmp_path / "broken.toml"
    flow_file.write_text(textwrap.dedent("""\
        [flow]
        goal = "cannot start"
        [[step]]
        id = "missing"
        run = ["definitely-not-a-program-xyz"]
        [[step]]
        id = "never"
        needs = ["missing"]
        run = ["true"]
        [[step]]
        id = "nowhere"
        runtime = "subagent"
        cwd = "vanished"
        run = ["true"]
        """))
    flow_id = _submit(state, url, flow_file, cwd=tmp_path)
    flow = wait_for(_ended(state, url, flow_id), 15, 0.1, "the broken flow to end")
    assert flow["status"] == "failed"
    tasks = _by_label(flow)
    assert tasks["missing"]["status"] == "failed"
    assert tasks["missing"]["error"] == ("Step 'missing' could not start: program 'definitely-not-a-program-xyz' "
                                         "not found on PATH")
    assert tasks["nowhere"]["status"] == "failed"
    assert tasks["nowhere"]["error"] == (f"Step 'nowhere' could not start: working directory "
                                         f"'{tmp_path / 'vanished'}' does not exist")
    assert "never" not in tasks  # never started: the flow failed first
    assert not [t for t in tasks.values() if t["status"] in ("queued", "running")]


def _window(task: dict[str, object]) -> tuple[datetime, datetime]:
    def parse(value: object) -> datetime:
        assert isinstance(value, str)
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parse(task["started_at"]), parse(task["ended_at"])


def _chain_flow(path: Path, goal: str, steps: int, seconds: float, *, gate: Path | None = None) -> Path:
    """A chain of `steps` sleeps; with a `gate`, the first step waits until that file exists."""
    lines = ["[flow]", f'goal = "{goal}"']
    for n in range(steps):
        lines += ["[[step]]", f'id = "s{n}"', f'run = ["sleep", "{seconds}"]']
        if n:
            lines.append(f'needs = ["s{n - 1}"]')
        elif gate is not None:
            lines[-1] = f'run = ["sh", "-c", "while [ ! -e {gate} ]; do sleep 0.02; done"]'
    path.write_text("\n".join(lines) + "\n")
    return path


def test_three_ten_step_flows_run_at_the_same_time_on_one_gateway(
        tmp_path: Path, gateways: Callable[..., GatewayProc]) -> None:
    state, url = _sqlite(tmp_path)
    gateways(state, url)
    gate = tmp_path / "go"
    ids = [_submit(state, url, _chain_flow(tmp_path / f"f{n}.toml", f"chain {n}", 10, 0.1, gate=gate),
                   cwd=tmp_path) for n in range(3)]
    # Submitting takes a CLI start-up each; the gate lets all three begin together once all are handed over.
    wait_for(lambda: all(_show(state, url, fid)["status"] == "running" for fid in ids), 20, 0.05, "3 flows running")
    gate.touch()
    flows = [wait_for(_ended(state, url, fid), 30, 0.2, f"flow {fid}") for fid in ids]
    assert [f["status"] for f in flows] == ["succeeded"] * 3
    spans = []
    for flow in flows:
        windows = [_window(t) for t in flow["tasks"]]  # type: ignore[union-attr]
        assert len(windows) == 10
        spans.append((min(w[0] for w in windows), max(w[1] for w in windows)))
    # Each flow's steps ran while the other flows' steps ran: the flows' spans overlap pairwise.
    for a in range(3):
        for b in range(a + 1, 3):
            assert spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1], spans


def test_a_flow_beyond_the_cap_waits_queued(tmp_path: Path, gateways: Callable[..., GatewayProc]) -> None:
    state, url = _sqlite(tmp_path)
    gateways(state, url, env={"FLOWLEDGER_MAX_FLOWS": "1"})
    gate = tmp_path / "go"
    first = _submit(state, url, _chain_flow(tmp_path / "a.toml", "first", 1, 0, gate=gate), cwd=tmp_path)
    wait_for(lambda: _show(state, url, first)["status"] == "running", 10, 0.05, "the first flow to run")
    second = _submit(state, url, _chain_flow(tmp_path / "b.toml", "second", 1, 0), cwd=tmp_path)
    # The one slot is taken until the gate opens: over a second of the gateway's pick-up passes (every 0.25 s)
    # the second flow stays queued.
    until = time.monotonic() + 1.0
    while time.monotonic() < until:
        assert _show(state, url, second)["status"] == "queued"
    assert _show(state, url, first)["status"] == "running"
    gate.touch()
    assert wait_for(_ended(state, url, first), 15, 0.05, "the first flow")["status"] == "succeeded"
    done = wait_for(_ended(state, url, second), 15, 0.05, "the second flow to run once a slot freed")
    assert done["status"] == "succeeded"


def test_two_gateways_on_postgres_drive_twenty_flows_each_by_exactly_one(
        tmp_path: Path, clean_pg: str, gateways: Callable[..., GatewayProc]) -> None:
    gw_a = gateways(tmp_path / "a" / "state", clean_pg)
    gw_b = gateways(tmp_path / "b" / "state", clean_pg)
    state = tmp_path / "c" / "state"
    definition = load_flow_file(_chain_flow(tmp_path / "two.toml", "shared", 2, 0.05))
    context = capture(str(tmp_path), os.environ)
    with Ledger.open(state_dir=state, database_url=clean_pg) as ledger:
        # What `--detach` records (the CLI path is covered above); 20 CLI start-ups would dominate the test.
        ids = [define_flow(ledger, definition, context).flow_id for _ in range(20)]
        def all_ended() -> bool:
            return all(ledger.flows.require(fid).status not in (FlowStatus.QUEUED, FlowStatus.RUNNING)
                       for fid in ids)

        wait_for(all_ended, 60, 0.2, "20 flows to end")
        drivers = {}
        for fid in ids:
            flow = ledger.flows.require(fid)
            assert flow.status == FlowStatus.SUCCEEDED
            assert isinstance(flow.state, dict)
            drivers[fid] = flow.state["driver"]
    assert set(drivers.values()) <= {gw_a.gateway_id(), gw_b.gateway_id()}
    logs = {gw_a.gateway_id(): gw_a.log(), gw_b.gateway_id(): gw_b.log()}
    for fid, driver in drivers.items():
        # Driven by exactly one gateway: only its driver's log says it drove the flow.
        drove = [gid for gid, text in logs.items() if f"flow {fid}: driving" in text]
        assert drove == [driver], (fid, drove, driver)
    assert len(set(drivers.values())) == 2  # both gateways took a share
