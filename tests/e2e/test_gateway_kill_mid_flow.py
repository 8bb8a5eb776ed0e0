"""End to end: SIGKILL the real gateway that drives a graph flow while one of its steps is mid-flight.

The flow is a diamond of real `cli` steps (a → b, c → d). Every step appends a `start` line and, when its work
is done, a `done` line to a side-effect file; step b's first attempt blocks until it is killed. After the driver
dies, another gateway adopts the flow once the driver's lease expires (docs/flows.md, "If the driver dies"): it
folds in c (ended while nobody watched), stops b's orphaned process, records b's task failed with
`lost: its flow driver stopped`, retries b (retries = 1) and finishes the flow. The side-effect file shows every
step's work done exactly once, and b's retry never ran alongside its orphaned first attempt.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gateway_support import GatewayProc, cli, wait_for
from orphan_probe import alive
from sqlalchemy import select

from flowledger import Ledger, TaskStatus
from flowledger.flows.models import Flow, FlowStatus
from flowledger.tasks.core.tables import gateway_leases

STEPS = ("a", "b", "c", "d")
LOST_ERROR = "lost: its flow driver stopped"
DEADLINE_S = 30.0
PROBE = Path(__file__).resolve().parent / "orphan_probe.py"
# The gateway's own orphan reaper runs at start and on the sweep's cadence; with the production cadence it
# cannot get there first, so these gateways show what the adopting controller does by itself.
PRODUCTION_SWEEP = {"FLOWLEDGER_SWEEP_FIRST_MS": "60000", "FLOWLEDGER_SWEEP_INTERVAL_MS": "60000"}


@pytest.fixture(params=["sqlite", "postgres"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One database for every gateway of the test: a SQLite file, or the run's (emptied) PostgreSQL database."""
    if request.param == "sqlite":
        path = tmp_path / "db" / "runs.sqlite"
        path.parent.mkdir(mode=0o700, parents=True)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("clean_pg")
    return url


def _flow_file(tmp_path: Path, effects: Path) -> Path:
    def step(step_id: str, needs: list[str], work: str = "", retries: int = 0) -> str:
        command = (f'echo "start {step_id} $FLOWLEDGER_RUN_ID $$" >> {effects}; {work}'
                   f'echo "done {step_id} $FLOWLEDGER_RUN_ID" >> {effects}')
        return (f'[[step]]\nid = "{step_id}"\nneeds = {json.dumps(needs)}\nshell = true\nretries = {retries}\n'
                f"run = {json.dumps(command)}\n")

    # Attempt 1 of b outlives any test deadline: it ends only when someone stops it. Its retry first records
    # whether attempt 1 is still running.
    probe = f"{shlex.quote(sys.executable)} {shlex.quote(str(PROBE))} {effects} b"
    slow_first = f'case "$FLOWLEDGER_RUN_ID" in *:1) sleep 600;; *) {probe};; esac; '
    text = "\n".join(['[flow]\ngoal = "diamond across a gateway death"\nmax_parallel = 4\n',
                      step("a", []), step("b", ["a"], slow_first, retries=1), step("c", ["a"]),
                      step("d", ["b", "c"])])
    path = tmp_path / "diamond.toml"
    path.write_text(text)
    return path


def _effects(effects: Path) -> list[list[str]]:
    return [line.split() for line in effects.read_text().splitlines()] if effects.exists() else []


@contextlib.contextmanager
def _no_leftover_steps(effects: Path) -> Iterator[None]:
    """Whatever the outcome, no step process started by this test outlives it."""
    try:
        yield
    finally:
        for line in _effects(effects):
            if line[0] == "start" and alive(int(line[3]), line[2]):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(int(line[3]), signal.SIGKILL)


def _submit(state: Path, url: str, flow_file: Path) -> str:
    queued = cli(state, url, "tasks", "flow", "run", str(flow_file), "--detach", "--json")
    assert queued.returncode == 0, queued.stderr
    flow_id: str = json.loads(queued.stdout)["flow_id"]
    return flow_id


def _gateway_id(ledger: Ledger, gw: GatewayProc) -> str:
    with ledger.db.read() as conn:
        rows = conn.execute(select(gateway_leases.c.gateway_id).where(gateway_leases.c.pid == gw.proc.pid)).all()
    ids = [r[0] for r in rows if r[0].startswith("gw-")]
    assert len(ids) == 1, ids
    return ids[0]


def _flow(ledger: Ledger, flow_id: str) -> Flow:
    flow = ledger.flows.get_by_id(flow_id)
    assert flow is not None
    return flow


def _mid_flight(ledger: Ledger, flow_id: str, effects: Path) -> Callable[[], Any]:
    """b's first attempt is running (its process has started) and c has ended and been recorded."""

    def check() -> Any:
        lines = _effects(effects)
        b_started = [x for x in lines if x[:2] == ["start", "b"]]
        c_done = ledger.tasks.get(f"flow:{flow_id}:c:1")
        if b_started and c_done is not None and c_done.status == TaskStatus.SUCCEEDED:
            return b_started[0]
        return None

    return check


def _terminal_flow(ledger: Ledger, flow_id: str) -> Callable[[], Flow | None]:
    def check() -> Flow | None:
        flow = _flow(ledger, flow_id)
        return flow if flow.status not in (FlowStatus.QUEUED, FlowStatus.RUNNING) else None

    return check


def _assert_recovered(ledger: Ledger, flow: Flow, effects: Path, orphan: list[str], adopter: str) -> None:
    """The flow succeeded under `adopter`; b was lost then retried; every step's work happened exactly once."""
    flow_id = flow.flow_id
    assert flow.status == FlowStatus.SUCCEEDED, (flow.blocked_summary, flow.state)
    assert flow.state["driver"] == adopter
    steps = flow.state["steps"]
    assert {s: (v["status"], v["attempts"]) for s, v in steps.items()} == {
        "a": ("succeeded", 1), "b": ("succeeded", 2), "c": ("succeeded", 1), "d": ("succeeded", 1)}

    tasks = {t.run_id: t for t in ledger.flows.linked_tasks(flow_id)}
    expected = [f"flow:{flow_id}:{s}:1" for s in STEPS] + [f"flow:{flow_id}:b:2"]
    assert sorted(tasks) == sorted(expected)
    lost = tasks[f"flow:{flow_id}:b:1"]
    assert lost.status == TaskStatus.FAILED and lost.error == LOST_ERROR
    assert all(t.status == TaskStatus.SUCCEEDED for r, t in tasks.items() if r != lost.run_id)
    assert steps["b"]["task_id"] == tasks[f"flow:{flow_id}:b:2"].task_id

    # The orphaned attempt was stopped before its retry started, so its work can never land alongside or after
    # the retry's.
    lines = _effects(effects)
    assert [x for x in lines if x[0] == "overlap"] == []
    wait_for(lambda: not alive(int(orphan[3]), orphan[2]), 10, what="the orphaned attempt of b to be stopped")
    done = sorted((x[1], x[2]) for x in lines if x[0] == "done")
    assert done == sorted((s, f"flow:{flow_id}:{s}:{2 if s == 'b' else 1}") for s in STEPS)
    started = sorted((x[1], x[2]) for x in lines if x[0] == "start")
    assert started == sorted([*((s, f"flow:{flow_id}:{s}:1") for s in STEPS), ("b", f"flow:{flow_id}:b:2")])


def test_gateway_killed_mid_flow_then_a_new_gateway_adopts_and_finishes_it(
        tmp_path: Path, shared_url: str, gateways: Callable[..., GatewayProc]) -> None:
    effects = tmp_path / "effects.log"
    flow_file = _flow_file(tmp_path, effects)
    client = tmp_path / "client" / "state"
    with _no_leftover_steps(effects), Ledger.open(state_dir=client, database_url=shared_url) as ledger:
        first = gateways(tmp_path / "gw1" / "state", shared_url)
        first_id = _gateway_id(ledger, first)
        flow_id = _submit(client, shared_url, flow_file)
        orphan = wait_for(_mid_flight(ledger, flow_id, effects), DEADLINE_S, what="b running, c recorded")
        assert _flow(ledger, flow_id).state["driver"] == first_id
        first.kill()

        second = gateways(tmp_path / "gw2" / "state", shared_url)
        second_id = _gateway_id(ledger, second)
        flow = wait_for(_terminal_flow(ledger, flow_id), DEADLINE_S, 0.1, "the adopted flow to end")
        _assert_recovered(ledger, flow, effects, orphan, second_id)
        assert f"adopted from driver {first_id} by {second_id}" in second.log()
        assert second.stop() == 0


def test_driver_killed_with_two_gateways_alive_exactly_one_survivor_adopts(
        tmp_path: Path, shared_url: str, gateways: Callable[..., GatewayProc]) -> None:
    effects = tmp_path / "effects.log"
    flow_file = _flow_file(tmp_path, effects)
    client = tmp_path / "client" / "state"
    with _no_leftover_steps(effects), Ledger.open(state_dir=client, database_url=shared_url) as ledger:
        procs = [gateways(tmp_path / f"gw{i}" / "state", shared_url, env=PRODUCTION_SWEEP) for i in range(3)]
        ids = {_gateway_id(ledger, gw): gw for gw in procs}
        flow_id = _submit(client, shared_url, flow_file)
        orphan = wait_for(_mid_flight(ledger, flow_id, effects), DEADLINE_S, what="b running, c recorded")
        driver_id = _flow(ledger, flow_id).state["driver"]
        ids.pop(driver_id).kill()

        flow = wait_for(_terminal_flow(ledger, flow_id), DEADLINE_S, 0.1, "the adopted flow to end")
        adopter = flow.state["driver"]
        assert adopter in ids
        _assert_recovered(ledger, flow, effects, orphan, adopter)
        adoptions = {gw_id: gw.log().count("adopted from driver") for gw_id, gw in ids.items()}
        assert adoptions == {gw_id: int(gw_id == adopter) for gw_id in ids}
        assert all(gw.stop() == 0 for gw in ids.values())
