"""N real processes hammering one ledger (SQLite file and PostgreSQL): no lock error reaches a caller, no lost
update, every history a legal path. Smoke mode in CI; FLOWLEDGER_STRESS=1 for the long run (8 × 1500 ops)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import harness
import pytest
from conftest import STRESS

from flowledger import Ledger

HARNESS = Path(harness.__file__)
WORKERS = 8 if STRESS else 4
OPS_PER_WORKER = 1500 if STRESS else 80


def hammer(url: str, state_dir: Path, tmp_path: Path, *, workers: int, ops: int, pool: int,
           sweep: bool) -> dict[str, object]:
    """Start `workers` processes, release them together, collect their stats."""
    Ledger.open(state_dir=state_dir, database_url=url).close()  # schema first, so workers only do work
    events_dir = tmp_path / "events"
    events_dir.mkdir(exist_ok=True)
    procs = [
        subprocess.Popen(
            [sys.executable, str(HARNESS), "worker", "--url", url, "--state-dir", str(state_dir),
             "--events", str(events_dir / f"events-{n}.jsonl"), "--seed", str(1000 + n), "--ops", str(ops),
             "--pool", str(pool), *(["--sweep"] if sweep else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for n in range(workers)
    ]
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read() if proc.stderr else line
    started = time.perf_counter()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in procs:
        out, errs = proc.communicate(timeout=600)
        assert proc.returncode == 0, errs
        assert "Traceback" not in errs, errs
        results.append(json.loads(out.strip().splitlines()[-1]))
    wall = time.perf_counter() - started
    total = sum(int(r["ops"]) for r in results)
    return {"results": results, "ops": total, "wall_s": wall, "ops_per_s": total / wall,
            "events_dir": events_dir}


@pytest.mark.parametrize("pool", [4])
def test_processes_hammering_one_ledger_keep_every_history_legal(
    database_url: str, state_dir: Path, tmp_path: Path, pool: int, capsys: pytest.CaptureFixture[str]
) -> None:
    run = hammer(database_url, state_dir, tmp_path, workers=WORKERS, ops=OPS_PER_WORKER, pool=pool, sweep=True)
    results = run["results"]
    assert isinstance(results, list)
    errors = [e for r in results for e in r["errors"]]
    assert errors == [], errors[:10]  # includes any "database is locked"
    assert run["ops"] == WORKERS * OPS_PER_WORKER

    reported = harness.read_reported(Path(str(run["events_dir"])))
    with Ledger.open(state_dir=state_dir, database_url=database_url) as ledger:
        verdict = harness.verify(ledger, reported)
        assert harness.integrity_ok(ledger) == "ok"
    assert verdict.ok, verdict.violations[:20]
    assert verdict.tasks >= 1 and verdict.events >= verdict.tasks
    # Callers were told about real transitions and every one of them is in the log (checked in verify).
    assert len(reported) >= verdict.tasks
    engine = "sqlite" if database_url.startswith("sqlite") else "postgres"
    refusals = sum(int(r["refusals"]) for r in results)  # "changed while …" answers: allowed, but counted
    with capsys.disabled():
        sys.stderr.write(
            f"\n[concurrency {engine}] {WORKERS} procs × {OPS_PER_WORKER} ops = {run['ops']} ops in "
            f"{float(str(run['wall_s'])):.2f}s → {float(str(run['ops_per_s'])):.0f} ops/s; tasks={verdict.tasks} "
            f"events={verdict.events} terminal={verdict.terminal} refusals={refusals} "
            f"violations={len(verdict.violations)}\n"
        )
