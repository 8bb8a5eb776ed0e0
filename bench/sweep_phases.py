"""The 1 M sweep phase by phase (issue 18, goal 4): wall and CPU of each phase, and how much of it the pacer paused.

    python bench/sweep_phases.py TEMPLATE.db [--writer] [--repeat N]

Copies the SQLite template (bench/sweep_ab.py's `after.db`) for each pass, optionally starts bench/sweep.py's
concurrent writer, and runs the phases of `run_maintenance` in this process, timed apart: the audit before, the
prune (`prune_due`), the rest of the task sweep (planning + lost-marking), the flows and sessions, the audit
after. The pacer's pauses (`Pacer.done`) are timed from outside, so the rest is the work. One JSON line per pass.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sweep
from measure import helper

from flowledger import FrozenClock, Ledger
from flowledger.flows import health
from flowledger.tasks.health import maintenance, sweep_pacing

NOW = "2026-12-01T12:00:00+00:00"


class Meter:
    """Wall and CPU time spent inside wrapped calls, by name."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.phase(name):
                return fn(*args, **kwargs)
        return timed

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - wall
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu
            self.calls[name] = self.calls.get(name, 0) + 1

    def report(self) -> dict[str, Any]:
        return {k: {"wall": round(self.wall[k], 3), "cpu": round(self.cpu[k], 3), "calls": self.calls[k]}
                for k in self.wall}


def one_pass(template: Path, with_writer: bool) -> dict[str, Any]:
    meter = Meter()
    # The pacer's pauses, the prune's batches and the lost path's write transactions, measured from outside.
    sweep_pacing.SqliteLockShare.pause = meter.wrap("pause", sweep_pacing.SqliteLockShare.pause)  # type: ignore[method-assign]
    maintenance.apply_steps = meter.wrap("apply_steps", maintenance.apply_steps)
    maintenance.plan_batches = _timed_generator(meter, "plan", maintenance.plan_batches)
    prune_due = meter.wrap("prune", maintenance.prune_due)
    maintenance.prune_due = prune_due
    with tempfile.TemporaryDirectory(prefix="flb-phases-", dir=template.parent) as tmp:
        db = Path(tmp) / "ledger.db"
        sweep.copy_sqlite(template, db)
        url = f"sqlite:///{db}"
        writer = None
        ready, stop = Path(tmp) / "ready", Path(tmp) / "stop"
        if with_writer:
            writer = subprocess.Popen([sys.executable, helper("writer_child.py"), url, str(ready), str(stop)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            while not ready.exists() and writer.poll() is None:
                time.sleep(0.01)
            time.sleep(0.2)
        from datetime import datetime

        now = datetime.fromisoformat(NOW)
        with Ledger.open(state_dir=Path(tmp) / "state", database_url=url, clock=FrozenClock(now)) as ledger:
            health.inspect = meter.wrap("audit", _ORIGINAL_INSPECT)
            with meter.phase("total"):
                report = ledger.maintenance(apply=True)
        writer_result: dict[str, Any] = {}
        if writer is not None:
            stop.touch()
            out, _ = writer.communicate(timeout=60)
            lines = [ln for ln in out.splitlines() if ln.startswith("{")]
            writer_result = json.loads(lines[-1]) if lines else {}
    tasks = report.to_json()["maintenance"]["tasks"]
    return {"phases": meter.report(), "tasks": tasks, "load": os.getloadavg()[0],
            "writer_max_ms": round(writer_result.get("max_wait_s", 0) * 1000, 1),
            "writer_p99_ms": round(writer_result.get("p99_wait_s", 0) * 1000, 1)}


def _timed_generator(meter: Meter, name: str, fn: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    """Time a generator's own steps (the reads and decisions between yields), not what its caller does."""
    def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
        it = fn(*args, **kwargs)
        while True:
            with meter.phase(name):
                try:
                    item = next(it)
                except StopIteration:
                    return
            yield item
    return timed


_ORIGINAL_INSPECT = health.inspect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("template", type=Path)
    parser.add_argument("--writer", action="store_true")
    args = parser.parse_args()
    print(json.dumps(one_pass(args.template, args.writer)), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(helper("sweep_phases.py")))
    main()
