"""Hot rows on PostgreSQL: several processes (gateways) writing lifecycles at once to one ledger, with the task
counts (tasks/core/counts.py) sharded per backend, in one shard (every writer moves the same rows), and without the
count triggers. Interleaved rounds; the aggregate lifecycles/s of each variant and the ratios per round.

    python bench/pg_counts.py [--writers 4] [--n 150] [--rounds 3] [--postgres URL]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import postgres_database

from flowledger.tasks.core import counts
from flowledger.tasks.core.db import Database

CHILD = ("import sys, time; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
         "from writes import ledger_lifecycles; "
         "print(ledger_lifecycles(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), runtime='cli'))")


def prepare(url: str, state: Path, variant: str) -> None:
    db = Database.open(url, state_dir=state)
    with db.write() as conn:
        if variant == "one shard":
            for statement in counts._PG_TRIGGERS[:2]:
                conn.exec_driver_sql(statement.replace(counts._PG_SHARD, "0"))
        elif variant == "no counts":
            for name in ("task_counts_insert", "task_counts_delete", "task_counts_update"):
                conn.exec_driver_sql(f"DROP TRIGGER {name} ON task_runs")
    db.close()


def concurrent(url: str, state: Path, writers: int, n: int) -> float:
    """Aggregate lifecycles/s of `writers` processes started together."""
    bench = str(Path(__file__).resolve().parent)
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, bench, url, str(n), str(state / f"w{i}")],
                              stdout=subprocess.PIPE, text=True) for i in range(writers)]
    start = time.perf_counter()
    for proc in procs:
        proc.communicate()
        if proc.returncode != 0:
            raise SystemExit("a writer failed")
    return writers * n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--n", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    variants = ("sharded", "one shard", "no counts")
    got: dict[str, list[float]] = {v: [] for v in variants}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="flbench-pgc-") as tmp:
        for r in range(args.rounds):
            for variant in variants:
                with postgres_database(args.postgres) as url:
                    state = Path(tmp) / f"{r}-{variant.replace(' ', '-')}"
                    prepare(url, state, variant)
                    got[variant].append(concurrent(url, state, args.writers, args.n))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in got.items()), file=sys.stderr,
                  flush=True)
    per = {f"{v} / no counts": statistics.median(a / b for a, b in zip(got[v], got["no counts"], strict=True))
           for v in variants[:2]}
    print(json.dumps({"writers": args.writers, "load_before": load_before, "load_after": os.getloadavg(),
                      "median_rate": {k: statistics.median(v) for k, v in got.items()}, **per, "samples": got},
                     indent=1))


if __name__ == "__main__":
    main()
