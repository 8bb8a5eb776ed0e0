"""Single-task lifecycles (create → start → complete, three committed transactions) through the ledger, beside
two raw floors, interleaved: every alternation runs each contender once, so machine drift hits all alike, and the
ratios are taken per alternation and reported as median with their spread.

    python bench/lifecycles.py [--n 300] [--alternations 7] [--postgres URL|none] [--no-counts] [--base DIR]

- `same-schema floor`: the ledger's statements in raw sqlite3 on the same schema, pragmas, indexes and triggers
  (writes.raw_sqlite_lifecycles: the task row and one `task_events` row per transaction).
- `minimal floor`: the task row alone — INSERT + two guarded UPDATEs, three commits, on a table with five
  indexes (task_id, run_id, status, created, cleanup) and no history, no counts.
- `--no-counts` adds the ledger with the task-count triggers dropped (tasks/core/counts.py), to price them.
- PostgreSQL: the ledger beside raw psycopg (writes.raw_postgres_lifecycles), same schema and triggers.
- `--cpu`: instead, CPU time per lifecycle (`time.process_time` around N lifecycles in a child interpreter per
  contender): SQLite with synchronous=NORMAL is CPU-bound, and on a shared machine CPU time spreads far less
  than wall time (±5 % against 3×).
- `--base DIR`: also the ledger as another checkout has it (DIR holds a `flowledger` package, e.g. an older
  commit unpacked with `git archive`), in a child interpreter, beside this one: before and after in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from writes import ledger_lifecycles, raw_postgres_lifecycles, raw_sqlite_lifecycles, to_ms_now

from flowledger.tasks.core.db import BUSY_TIMEOUT_MS, Database

_MINIMAL_SCHEMA = [
    "CREATE TABLE task_runs (seq INTEGER PRIMARY KEY AUTOINCREMENT, task_id VARCHAR(128) NOT NULL UNIQUE, "
    "runtime VARCHAR(16) NOT NULL, owner_key TEXT NOT NULL, run_id TEXT, task TEXT NOT NULL, "
    "status VARCHAR(16) NOT NULL, created_at BIGINT NOT NULL, started_at BIGINT, ended_at BIGINT, "
    "last_event_at BIGINT, cleanup_after BIGINT, terminal_summary TEXT)",
    "CREATE INDEX ix_run_id ON task_runs (run_id)",
    "CREATE INDEX ix_status ON task_runs (status)",
    "CREATE INDEX ix_created ON task_runs (created_at, seq)",
    "CREATE INDEX ix_cleanup ON task_runs (cleanup_after, seq)",
]


def raw_minimal_lifecycles(path: Path, n: int) -> float:
    """The task row alone: INSERT + two guarded UPDATEs, three commits, five indexes (task_id's unique one too)."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    for pragma in (f"busy_timeout = {BUSY_TIMEOUT_MS}", "journal_mode = WAL", "synchronous = NORMAL"):
        conn.execute(f"PRAGMA {pragma}")
    for statement in _MINIMAL_SCHEMA:
        conn.execute(statement)
    tag = uuid.uuid4().hex[:8]
    start = time.perf_counter()
    for i in range(n):
        task_id, now = str(uuid.uuid4()), to_ms_now()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO task_runs (task_id, runtime, owner_key, run_id, task, status, created_at, "
                     "last_event_at) VALUES (?, 'cli', 'agent:main:main', ?, ?, 'queued', ?, ?)",
                     (task_id, f"run-{tag}-{i}", f"Summarise PR {i}", now, now))
        conn.execute("COMMIT")
        now = to_ms_now()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE task_runs SET status = 'running', started_at = ?, last_event_at = ? "
                     "WHERE task_id = ? AND status IN ('queued', 'running')", (now, now, task_id))
        conn.execute("COMMIT")
        now = to_ms_now()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE task_runs SET status = 'succeeded', ended_at = ?, last_event_at = ?, cleanup_after = ?, "
                     "terminal_summary = 'ok' WHERE task_id = ? AND status IN ('queued', 'running')",
                     (now, now, now + 7 * 86_400_000, task_id))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def _drop_counts(url: str, state: Path) -> None:
    """The ledger's schema without the count triggers (to price them; never done outside this bench)."""
    db = Database.open(url, state_dir=state)
    with db.write() as conn:
        for name in ("task_counts_insert", "task_counts_delete", "task_counts_update"):
            conn.exec_driver_sql(f"DROP TRIGGER {name}" + (" ON task_runs" if db.is_postgres else ""))
    db.close()


def base_lifecycles(base: str, url: str, n: int, state: Path) -> float:
    """`ledger_lifecycles` of the checkout in `base`, in a child interpreter (its own imports, its own schema)."""
    code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
            "from writes import ledger_lifecycles; "
            "print(ledger_lifecycles(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), runtime='cli'))")
    proc = subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve().parent), url, str(n), str(state)],
                          capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": base})
    return float(proc.stdout.strip().splitlines()[-1])


_CPU_CHILD = """
import sys, time; from pathlib import Path; sys.path.insert(0, sys.argv[4])
import writes, lifecycles
kind, path, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
path.parent.mkdir(parents=True, exist_ok=True)
if kind == "ledger":
    writes.ledger_lifecycles(f"sqlite:///{path}", 20, path.parent, runtime="cli")  # imports and schema: not timed
    start = time.process_time(); writes.ledger_lifecycles(f"sqlite:///{path}", n, path.parent, runtime="cli")
elif kind == "floor":
    start = time.process_time(); writes.raw_sqlite_lifecycles(path, n)
else:
    start = time.process_time(); lifecycles.raw_minimal_lifecycles(path, n)
print(time.process_time() - start)
"""


def cpu_alternate(n: int, alternations: int, base: str | None) -> dict[str, list[float]]:
    """Lifecycles per CPU second of each contender in each alternation (SQLite)."""
    out: dict[str, list[float]] = {}
    contenders = [("ledger_sqlite", "ledger", None), ("same_schema_floor", "floor", None),
                  ("minimal_floor", "minimal", None)]
    if base:
        contenders.append(("base_sqlite", "ledger", base))
    bench = str(Path(__file__).resolve().parent)
    with tempfile.TemporaryDirectory(prefix="flbench-lccpu-") as tmp:
        for a in range(alternations):
            for name, kind, pythonpath in contenders:
                env = {**os.environ, "PYTHONPATH": pythonpath} if pythonpath else dict(os.environ)
                proc = subprocess.run([sys.executable, "-c", _CPU_CHILD, kind, f"{tmp}/{a}-{name}/runs.sqlite",
                                       str(n), bench], capture_output=True, text=True, env=env, check=True)
                out.setdefault(name, []).append(n / float(proc.stdout.strip().splitlines()[-1]))
            print(f"alternation {a + 1} (per CPU s): " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in out.items()),
                  file=sys.stderr, flush=True)
    return out


def alternate(n: int, alternations: int, pg_url: str | None, no_counts: bool, base: str | None = None
              ) -> dict[str, list[float]]:
    """Lifecycles/s of every contender in every alternation (each on a fresh database)."""
    out: dict[str, list[float]] = {}

    def record(name: str, run: Callable[..., float], *args: Any, **kwargs: Any) -> None:
        out.setdefault(name, []).append(n / run(*args, **kwargs))

    with tempfile.TemporaryDirectory(prefix="flbench-lc-") as tmp:
        root = Path(tmp)
        for a in range(alternations):
            state = root / f"ledger{a}"
            record("ledger_sqlite", ledger_lifecycles, f"sqlite:///{state / 'runs.sqlite'}", n, state, runtime="cli")
            raw = root / f"raw{a}" / "runs.sqlite"
            raw.parent.mkdir(parents=True)
            record("same_schema_floor", raw_sqlite_lifecycles, raw, n)
            minimal = root / f"min{a}" / "runs.sqlite"
            minimal.parent.mkdir(parents=True)
            record("minimal_floor", raw_minimal_lifecycles, minimal, n)
            if base:
                old = root / f"base{a}"
                record("base_sqlite", base_lifecycles, base, f"sqlite:///{old / 'runs.sqlite'}", n, old)
            if no_counts:
                bare = root / f"bare{a}"
                url = f"sqlite:///{bare / 'runs.sqlite'}"
                _drop_counts(url, bare)
                record("ledger_sqlite_no_counts", ledger_lifecycles, url, n, bare, runtime="cli")
            if pg_url:
                from measure import postgres_database

                with postgres_database(pg_url) as url:
                    record("ledger_pg", ledger_lifecycles, url, n, root / f"pg{a}", runtime="cli")
                with postgres_database(pg_url) as url:
                    record("raw_pg", raw_postgres_lifecycles, url, n, root / f"pgraw{a}")
                if base:
                    with postgres_database(pg_url) as url:
                        record("base_pg", base_lifecycles, base, url, n, root / f"pgbase{a}")
                if no_counts:
                    with postgres_database(pg_url) as url:
                        _drop_counts(url, root / f"pgbare{a}")
                        record("ledger_pg_no_counts", ledger_lifecycles, url, n, root / f"pgbare{a}", runtime="cli")
            print(f"alternation {a + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in out.items()),
                  file=sys.stderr, flush=True)
    return out


def ratios(got: dict[str, list[float]], num: str, den: str) -> dict[str, float] | None:
    if num not in got or den not in got:
        return None
    per = [a / b for a, b in zip(got[num], got[den], strict=True)]
    return {"median": statistics.median(per), "min": min(per), "max": max(per), "n": len(per)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--alternations", type=int, default=7)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--no-counts", action="store_true", help="also the ledger without the count triggers")
    parser.add_argument("--base", default=None, help="a folder holding another checkout's flowledger package")
    parser.add_argument("--cpu", action="store_true", help="CPU time per lifecycle instead of wall time (SQLite)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    if args.cpu:
        got = cpu_alternate(args.n, args.alternations, args.base)
    else:
        got = alternate(args.n, args.alternations, None if args.postgres == "none" else args.postgres,
                        args.no_counts, args.base)
    result = {
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "rates": {k: statistics.median(v) for k, v in got.items()},
        "ledger / same-schema floor": ratios(got, "ledger_sqlite", "same_schema_floor"),
        "ledger / minimal floor": ratios(got, "ledger_sqlite", "minimal_floor"),
        "ledger / ledger without counts (SQLite)": ratios(got, "ledger_sqlite", "ledger_sqlite_no_counts"),
        "ledger / raw psycopg (PostgreSQL)": ratios(got, "ledger_pg", "raw_pg"),
        "ledger / ledger without counts (PostgreSQL)": ratios(got, "ledger_pg", "ledger_pg_no_counts"),
        "ledger / base ledger (SQLite)": ratios(got, "ledger_sqlite", "base_sqlite"),
        "base ledger / same-schema floor": ratios(got, "base_sqlite", "same_schema_floor"),
        "base ledger / minimal floor": ratios(got, "base_sqlite", "minimal_floor"),
        "ledger / base ledger (PostgreSQL)": ratios(got, "ledger_pg", "base_pg"),
        "base ledger / raw psycopg (PostgreSQL)": ratios(got, "base_pg", "raw_pg"),
        "samples": got,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
