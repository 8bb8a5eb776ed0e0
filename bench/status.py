"""`flowledger status` (and `status --json`) at a million records on SQLite, through the real console script,
beside `python -c pass` (and `dbos workflow list` with --dbos-url), and beside another checkout's `status`
(before/after in one run).

    python bench/status.py --data DIR [--base DIR --base-data DIR] [--repeat 5]

`--data` holds `runs.sqlite`, seeded with sweep.records (10 % active, 1 % of them stale and unbacked, 30 % due,
60 % retained), e.g. by `python bench/status.py --seed DIR --records 1000000`. The seeded active rows were fresh
at seeding time; the CLI reads the system clock, so before timing, the running rows are moved forward by the time
since seeding (`refresh`): the fresh ones are fresh again, the stale ones still stale — the ledger as it was
seeded, whenever it is measured. `--base DIR` is a folder holding another checkout's `flowledger` package (e.g.
the commit before, unpacked with `git archive`) and `--base-data` a copy of the data set for it (its schema
version may differ). Each round runs every contender once (interleaved), and the JSON answers of both are
compared (without the retained-lost timestamp, which moves with the clock).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clilat import flowledger_argv


def refresh(db_path: Path) -> int:
    """Move the running rows forward by the time since seeding; returns the shift in ms."""
    conn = sqlite3.connect(db_path, isolation_level=None, timeout=30)
    try:
        seeded = conn.execute("SELECT MAX(created_at) FROM task_runs").fetchone()[0]
        shift = time.time_ns() // 1_000_000 - int(seeded)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE task_runs SET created_at = created_at + ?, started_at = started_at + ?, "
                     "last_event_at = last_event_at + ? WHERE status IN ('queued', 'running')",
                     (shift, shift, shift))
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return shift
    finally:
        conn.close()


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the child, stdout). On a shared machine the CPU time moves far less with
    the load than the wall time does, so both are reported."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{argv} failed: {proc.stderr.strip()[-300:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu, proc.stdout


def comparable(stdout: str) -> object:
    doc = json.loads(stdout)
    if doc.get("retained_lost"):
        doc["retained_lost"].pop("next_cleanup_after", None)
    return doc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path)
    parser.add_argument("--base", default=None)
    parser.add_argument("--base-data", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dbos-url", default=None, help="also time `dbos workflow list` on this system database")
    parser.add_argument("--seed", type=Path, default=None, help="seed a data set into this folder and stop")
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args()
    if args.seed is not None:
        from sweep import seed

        seconds = seed(f"sqlite:///{args.seed / 'runs.sqlite'}", args.seed, args.records, datetime.now(UTC))
        print(f"seeded {args.records:,} in {seconds:.0f} s")
        return

    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("PYTHONPATH", None)
    contenders: dict[str, tuple[list[str], dict[str, str]]] = {"python -c pass": ([sys.executable, "-c", "pass"], env)}
    dbos = Path(sys.executable).with_name("dbos")
    if args.dbos_url and dbos.exists():  # a DBOS system database that `dbos migrate` prepared
        contenders["dbos workflow list"] = ([str(dbos), "workflow", "list", "--sys-db-url", args.dbos_url], env)
    targets = [("", args.data, env)]
    if args.base:
        targets.append(("base ", args.base_data, {**env, "PYTHONPATH": args.base}))
    for prefix, data, run_env in targets:
        refresh(data / "runs.sqlite")
        cli = [*flowledger_argv(), "--state-dir", str(data), "--database-url", f"sqlite:///{data / 'runs.sqlite'}"]
        contenders[f"{prefix}status"] = ([*cli, "status"], run_env)
        contenders[f"{prefix}status --json"] = ([*cli, "status", "--json"], run_env)

    samples: dict[str, list[float]] = {name: [] for name in contenders}
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    outputs: dict[str, str] = {}
    load_before = os.getloadavg()
    for _ in range(args.repeat):
        for name, (argv, run_env) in contenders.items():
            elapsed, used, stdout = timed(argv, run_env)
            samples[name].append(elapsed)
            cpu[name].append(used)
            outputs[name] = stdout
    result: dict[str, object] = {
        "load_before": load_before, "load_after": os.getloadavg(),
        "median_s": {k: statistics.median(v) for k, v in samples.items()},
        "median_cpu_s": {k: statistics.median(v) for k, v in cpu.items()},
        "samples_s": samples,
    }
    if args.base:
        result["status / base status"] = statistics.median(
            a / b for a, b in zip(samples["status"], samples["base status"], strict=True))
        result["status / base status (CPU)"] = statistics.median(
            a / b for a, b in zip(cpu["status"], cpu["base status"], strict=True))
        result["json identical (but the retained-lost timestamp)"] = (
            comparable(outputs["status --json"]) == comparable(outputs["base status --json"]))
        result["text identical (but the retained-lost line)"] = (
            [ln for ln in outputs["status"].splitlines() if "retained until" not in ln]
            == [ln for ln in outputs["base status"].splitlines() if "retained until" not in ln])
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
