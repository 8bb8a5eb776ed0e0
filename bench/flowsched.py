"""Flow scheduling overhead on a random DAG of no-op steps: the pure Readiness tracker, then the whole
graph controller with an instant launcher (each step still a real task: create, start, complete)."""

from __future__ import annotations

import random
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from flowledger import Ledger
from flowledger.flows.definitions import FlowDefinition, flow_from_document
from flowledger.flows.graph import Readiness, StepStatus
from flowledger.tasks.core.models import Task

MAX_PARALLEL = 16


def random_dag(steps: int, seed: int = 7, max_needs: int = 3) -> dict[str, Any]:
    """A flow document: step i needs up to `max_needs` steps among the 50 before it (a wide, deep DAG)."""
    rng = random.Random(seed)
    out = []
    for i in range(steps):
        window = range(max(0, i - 50), i)
        needs = sorted({f"s{j}" for j in rng.sample(window, min(len(window), rng.randint(0, max_needs)))})
        out.append({"id": f"s{i}", "run": ["true"], "needs": needs})
    return {"flow": {"goal": f"bench dag of {steps}", "max_parallel": MAX_PARALLEL}, "step": out}


def readiness_overhead(steps: int) -> dict[str, float]:
    """Seconds to parse + validate the document, and to drive every step through Readiness."""
    document = random_dag(steps)
    start = time.perf_counter()
    definition = flow_from_document(document)
    parsed = time.perf_counter()
    tracker = Readiness(definition)
    running: list[str] = []
    while not tracker.is_done():
        for step_id in tracker.next_to_start():
            tracker.mark_started(step_id)
            running.append(step_id)
        # Finish the oldest running step, as a launcher reporting back one at a time would.
        tracker.mark_finished(running.pop(0), StepStatus.SUCCEEDED)
    done = time.perf_counter()
    assert tracker.outcome() == StepStatus.SUCCEEDED
    return {"parse_s": parsed - start, "drive_s": done - parsed, "total_s": done - start}


class InstantLauncher:
    """Runs nothing: reports the step's task running and succeeded at once, through the ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def start(self, task: Task, argv: list[str], *, shell: bool, timeout: timedelta | None, cwd: str | None,
              env: dict[str, str] | None) -> None:
        assert task.run_id is not None
        self.ledger.tasks.start(task.run_id)
        self.ledger.tasks.complete(task.run_id, summary="ok")


def controller_overhead(steps: int, url: str, state_dir: Path) -> float:
    """Seconds for `run_flow` to drive the whole DAG to `succeeded`."""
    from flowledger.flows.controller import run_flow

    definition: FlowDefinition = flow_from_document(random_dag(steps))
    with Ledger.open(state_dir=state_dir, database_url=url) as ledger:
        start = time.perf_counter()
        flow = run_flow(ledger, definition, InstantLauncher(ledger), poll_interval=0.0)
        elapsed = time.perf_counter() - start
    assert flow.status.value == "succeeded", flow.status
    return elapsed
