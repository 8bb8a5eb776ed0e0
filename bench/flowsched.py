"""Flow scheduling overhead on a random DAG of no-op steps: the pure Readiness tracker, then the whole
graph controller with an instant launcher (each step still a real task: create, start, complete).

Before/after in one run (issue 18 goal 2):

    python bench/flowsched.py compare [--steps 300] [--rounds 5] [--baseline main] [--postgres URL|none]

drives the same DAG through the controller of git revision `--baseline` (extracted under /tmp, imported first
through PYTHONPATH) and this tree's, each with the three instant launchers (per-step; batch, `BatchInstantLauncher`;
batch started with create, `StartedBatchInstantLauncher`: a baseline without batch transitions fails those); each
run a fresh process and a fresh ledger, the six interleaved round after round (order rotated), on SQLite and
PostgreSQL. It prints the median ms/step (wall and CPU) per variant with its spread, and each variant's ratio,
taken round by round, to the baseline's per-step run and to the baseline with the same launcher.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
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


class BatchInstantLauncher(InstantLauncher):
    """The same instant steps, taken a controller turn at a time (`flows.step_launch.BatchStepLauncher`): the
    turn's starts in one transaction and, as those steps all end at once, their completions in another."""

    def start_batch(self, launches: Sequence[Any]) -> None:
        from flowledger.tasks.core.batch_transitions import complete_many, start_many

        run_ids = [launch.task.run_id for launch in launches]
        start_many(self.ledger.tasks, run_ids)
        complete_many(self.ledger.tasks, run_ids, summary="ok")


class StartedBatchInstantLauncher(InstantLauncher):
    """The batch launcher whose steps the controller records running in the transaction that creates their
    tasks (`starts_with_create`, as the cli runtime records a start before it spawns): it records only the ends
    of the turn's steps, in one transaction."""

    starts_with_create = True

    def start_batch(self, launches: Sequence[Any]) -> None:
        from flowledger.tasks.core.batch_transitions import complete_many

        complete_many(self.ledger.tasks, [launch.task.run_id for launch in launches], summary="ok")


LAUNCHERS = {"per-step": InstantLauncher, "batch": BatchInstantLauncher,
             "batch, started with create": StartedBatchInstantLauncher}


def controller_overhead(steps: int, url: str, state_dir: Path, launcher: str = "per-step") -> float:
    """Seconds for `run_flow` to drive the whole DAG to `succeeded` (`launcher`: a key of LAUNCHERS)."""
    from flowledger.flows.controller import run_flow

    definition: FlowDefinition = flow_from_document(random_dag(steps))
    with Ledger.open(state_dir=state_dir, database_url=url) as ledger:
        start = time.perf_counter()
        flow = run_flow(ledger, definition, LAUNCHERS[launcher](ledger), poll_interval=0.0)
        elapsed = time.perf_counter() - start
    assert flow.status.value == "succeeded", flow.status
    return elapsed


# --- before/after in one run ------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent
VARIANTS = (("baseline", "per-step"), ("this tree", "per-step"), ("baseline", "batch"), ("this tree", "batch"),
            ("baseline", "batch, started with create"), ("this tree", "batch, started with create"))


def measure_once(steps: int, url: str, state_dir: Path, launcher: str) -> dict[str, float]:
    """One child's measurement: a 20-step warm-up flow (statement caches), then the timed DAG; ms per step."""
    controller_overhead(20, url, state_dir, launcher)
    cpu = time.process_time()
    wall = controller_overhead(steps, url, state_dir, launcher)
    return {"wall_ms": wall * 1000 / steps, "cpu_ms": (time.process_time() - cpu) * 1000 / steps}


def baseline_tree(revision: str) -> Path:
    """`revision` of this repository extracted as an importable `flowledger` package; the PYTHONPATH entry."""
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", revision], check=True, capture_output=True,
                         text=True).stdout.strip()
    root = Path(tempfile.gettempdir()) / f"flowsched-baseline-{sha[:12]}"
    if not (root / "flowledger" / "__init__.py").exists():
        (root / "flowledger").mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", sha], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(root / "flowledger")], input=archive, check=True)
    return root


def _child(steps: int, url: str, state_dir: Path, launcher: str, pythonpath: Path | None) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    out = subprocess.run([sys.executable, __file__, "measure", "--steps", str(steps), "--url", url,
                          "--state-dir", str(state_dir), "--launcher", launcher, "--expect-root",
                          str(pythonpath / "flowledger" if pythonpath else REPO)],
                         check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def compare(steps: int, rounds: int, revision: str, pg_admin: str | None) -> list[dict[str, Any]]:
    from measure import postgres_database

    base = baseline_tree(revision)
    engines = ["sqlite"] + (["postgresql"] if pg_admin else [])
    rows: list[dict[str, Any]] = []
    for engine in engines:
        samples: dict[int, list[dict[str, float]]] = {i: [] for i in range(len(VARIANTS))}
        load = [os.getloadavg()[0]]
        for n in range(rounds):
            order = [(n + k) % len(VARIANTS) for k in range(len(VARIANTS))]  # rotated: no variant always first
            for index in order:
                tree, launcher = VARIANTS[index]
                pythonpath = base if tree == "baseline" else None
                work = Path(tempfile.mkdtemp(prefix="flowsched-"))
                os.chmod(work, 0o700)
                try:
                    if engine == "sqlite":
                        got = _child(steps, f"sqlite:///{work / 'ledger.db'}", work, launcher, pythonpath)
                    else:
                        assert pg_admin is not None
                        with postgres_database(pg_admin) as url:
                            got = _child(steps, url, work, launcher, pythonpath)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
                samples[index].append(got)
            load.append(os.getloadavg()[0])
        for index, (tree, launcher) in enumerate(VARIANTS):
            walls = [s["wall_ms"] for s in samples[index]]
            ratios = [s["wall_ms"] / b["wall_ms"] for s, b in zip(samples[index], samples[0], strict=True)]
            same = samples[VARIANTS.index(("baseline", launcher))]  # the baseline with this launcher, round by round
            same_ratios = [s["wall_ms"] / b["wall_ms"] for s, b in zip(samples[index], same, strict=True)]
            rows.append({"same_ratio": statistics.median(same_ratios), "same_min": min(same_ratios),
                         "same_max": max(same_ratios), "engine": engine,
                         "variant": f"{revision if tree == 'baseline' else tree}, {launcher}",
                         "wall_ms": statistics.median(walls), "wall_min": min(walls), "wall_max": max(walls),
                         "cpu_ms": statistics.median(s["cpu_ms"] for s in samples[index]),
                         "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                         "load": f"{min(load):.1f}-{max(load):.1f}", "steps": steps, "rounds": rounds})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("measure", help="(internal) one measurement in this process, JSON on stdout")
    one.add_argument("--steps", type=int, required=True)
    one.add_argument("--url", required=True)
    one.add_argument("--state-dir", type=Path, required=True)
    one.add_argument("--launcher", choices=sorted(LAUNCHERS), required=True)
    one.add_argument("--expect-root", type=Path, help="fail unless flowledger is imported from here")
    both = sub.add_parser("compare", help="baseline vs this tree, interleaved, on SQLite and PostgreSQL")
    both.add_argument("--steps", type=int, default=300)
    both.add_argument("--rounds", type=int, default=5)
    both.add_argument("--baseline", default="main", help="git revision to compare with (default: main)")
    both.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                      help="admin URL of a PostgreSQL server (fresh databases are made there), or none")
    both.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    if args.command == "measure":
        import flowledger

        imported = Path(flowledger.__file__).resolve().parent
        if args.expect_root is not None and imported != args.expect_root.resolve():
            raise SystemExit(f"flowledger imported from {imported}, expected {args.expect_root}")
        print(json.dumps(measure_once(args.steps, args.url, args.state_dir, args.launcher)))
        return 0
    pg = None if args.postgres.lower() == "none" else args.postgres
    rows = compare(args.steps, args.rounds, args.baseline, pg)
    print(f"graph controller, instant launcher: random DAG of {args.steps} steps (max_parallel {MAX_PARALLEL}), "
          f"median of {args.rounds} interleaved rounds")
    print("| engine | variant | wall ms/step (min–max) | CPU ms/step | × baseline per-step wall (min–max) | "
          "× baseline, same launcher (min–max) | load |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['engine']} | {r['variant']} | {r['wall_ms']:.2f} ({r['wall_min']:.2f}–{r['wall_max']:.2f}) | "
              f"{r['cpu_ms']:.2f} | {r['ratio']:.2f} ({r['ratio_min']:.2f}–{r['ratio_max']:.2f}) | "
              f"{r['same_ratio']:.2f} ({r['same_min']:.2f}–{r['same_max']:.2f}) | {r['load']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
