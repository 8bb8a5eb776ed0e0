"""flowledger benchmarks: the ledger against the physical floor and against its peers, side by side.

    python bench/run.py [--quick] [--only NAME] [--postgres URL|none] [--peers-python PY] [--write-docs]

Sections (NAME): write, bulk, sweep, cli, flow, e2e. Every comparison runs in this one invocation and is reported as
a ratio, because absolute times on shared machines drift. The full mode writes bench/results/performance.md (the
generated tables; docs/performance.md is curated by hand from them and from the round-two runs, so a run never
overwrites its notes); --quick (small sizes, CI smoke test, < 60 s) writes it only with
--write-docs. Peers run in their own interpreter
(`--peers-python`, $FLOWLEDGER_BENCH_PEERS_PYTHON, else this one) and are n/a when missing or over time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import clilat
import e2e
import flowsched
import peers
import report
import sweep
import writes
from measure import REPO, Row, postgres_database, rate

SECTIONS = ("write", "bulk", "sweep", "cli", "flow", "e2e")
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class Sizes:
    lifecycles: int
    rounds: int
    peer_n: int
    prefect_n: int
    peer_box_s: float
    bulk: int
    sweep: tuple[int, ...]
    pg_sweep: tuple[int, ...]
    cli_records: int
    cli_repeat: int
    cli_box_s: float
    dag: int
    controller_steps: tuple[int, ...]


QUICK = Sizes(lifecycles=100, rounds=1, peer_n=30, prefect_n=0, peer_box_s=30, bulk=2000, sweep=(2000,),
              pg_sweep=(2000,), cli_records=2000, cli_repeat=1, cli_box_s=60, dag=500, controller_steps=(20,))
# 10,000 steps through the controller are left out: at the rate measured they take tens of minutes (see
# docs/performance.md); run them by hand with --only.
FULL = Sizes(lifecycles=1000, rounds=2, peer_n=200, prefect_n=40, peer_box_s=600, bulk=100_000,
             sweep=(100_000, 1_000_000), pg_sweep=(100_000, 1_000_000), cli_records=1_000_000, cli_repeat=3,
             cli_box_s=300, dag=10_000, controller_steps=(100, 300))


class Bench:
    def __init__(self, sizes: Sizes, pg_admin: str | None, peers_python: str, quick: bool) -> None:
        self.sizes = sizes
        self.pg_admin = pg_admin
        self.peers_python = peers_python
        self.quick = quick
        self.rows: list[Row] = []
        self.meta: dict[str, str] = {}
        self.tmp = Path(tempfile.mkdtemp(prefix="flbench-"))

    def add(self, section: str, name: str, value: float | None, unit: str, note: str = "", **extra: object) -> None:
        row = Row(section, name, value, unit, note, dict(extra))
        self.rows.append(row)
        print(f"  {name:<58} {row.shown():>14} {unit}", flush=True)

    def value(self, name: str) -> float | None:
        return next((r.value for r in self.rows if r.name == name), None)

    def ratio(self, section: str, name: str, top: str, bottom: str) -> None:
        a, b = self.value(top), self.value(bottom)
        if a is None or b is None or b == 0:
            self.add(section, name, None, "×", "an operand is n/a")
        else:
            self.add(section, name, a / b, "×")

    def sqlite_url(self, name: str) -> tuple[str, Path]:
        state = self.tmp / name
        return f"sqlite:///{state / 'tasks' / 'runs.sqlite'}", state

    # --- 1 and 6: write path ----------------------------------------------------------------------------

    def write(self) -> None:
        s = self.sizes
        print(f"Write path: {s.lifecycles} lifecycles × {s.rounds} round(s), create → start → complete", flush=True)
        got = writes.side_by_side(s.lifecycles, s.rounds, self.pg_admin)
        self.add("write", "ledger lifecycles/s (SQLite)", writes.best_rate(s.lifecycles, got["ledger_sqlite"]), "/s",
                 "cli task: the task write path alone")
        self.add("write", "ledger lifecycles/s (SQLite, acp + one-task flow)",
                 writes.best_rate(s.lifecycles, got["ledger_sqlite_acp"]), "/s")
        self.add("write", "raw sqlite3 lifecycles/s (floor)", writes.best_rate(s.lifecycles, got["raw_sqlite"]), "/s")
        self.ratio("write", "ledger ÷ raw sqlite3 floor", "ledger lifecycles/s (SQLite)",
                   "raw sqlite3 lifecycles/s (floor)")
        for peer in peers.PEERS:
            n = s.prefect_n if peer == "prefect" else s.peer_n
            name = f"{peer} lifecycles/s ({peers.UNIT[peer]})"
            if n == 0:
                self.add("write", name, None, "/s", "skipped in --quick: ephemeral server start alone takes > 20 s")
                continue
            value, version, reason = peers.run_peer(self.peers_python, peer, n, s.peer_box_s)
            if version:
                self.meta[f"{peer} version"] = version
            self.add("write", name, value, "/s", reason)
            self.ratio("write", f"ledger ÷ {peer}", "ledger lifecycles/s (SQLite)", name)
        if self.pg_admin:
            self.add("write", "ledger lifecycles/s (PostgreSQL)", writes.best_rate(s.lifecycles, got["ledger_pg"]),
                     "/s", "cli task")
            self.add("write", "ledger lifecycles/s (PostgreSQL, acp + one-task flow)",
                     writes.best_rate(s.lifecycles, got["ledger_pg_acp"]), "/s")
            self.add("write", "raw psycopg lifecycles/s (PostgreSQL floor)",
                     writes.best_rate(s.lifecycles, got["raw_pg"]), "/s")
            self.ratio("write", "ledger ÷ raw psycopg floor (PostgreSQL)", "ledger lifecycles/s (PostgreSQL)",
                       "raw psycopg lifecycles/s (PostgreSQL floor)")

    # --- 2: bulk ------------------------------------------------------------------------------------------

    def bulk(self) -> None:
        n = self.sizes.bulk
        print(f"Bulk ingestion: {n:,} records through create_many (5,000 per transaction)", flush=True)
        url, state = self.sqlite_url("bulk")
        self.add("bulk", f"create_many records/s (SQLite, {n:,})", rate(n, writes.bulk_ingest(url, n, state)), "/s")
        self.ratio("bulk", "create_many ÷ single create lifecycles (SQLite)",
                   f"create_many records/s (SQLite, {n:,})", "ledger lifecycles/s (SQLite)")
        if self.pg_admin:
            with postgres_database(self.pg_admin) as pg:
                self.add("bulk", f"create_many records/s (PostgreSQL, {n:,})",
                         rate(n, writes.bulk_ingest(pg, n, self.tmp / "bulk-pg")), "/s")

    # --- 3 and 6: sweep -----------------------------------------------------------------------------------

    def sweep(self) -> None:
        now = datetime.now(UTC).replace(microsecond=0)
        for n in self.sizes.sweep:
            print(f"Sweep: {n:,} records on SQLite (10 % active, 30 % due for pruning)", flush=True)
            template, _ = self._seeded_sqlite(n, now)
            url, state = self.sqlite_url(f"sweep-{n}")
            sweep.copy_sqlite(template, Path(url[len("sqlite:///"):]))
            self._sweep_rows("SQLite", n, url, state, now)
        if not self.pg_admin:
            return
        for n in self.sizes.pg_sweep:
            print(f"Sweep: {n:,} records on PostgreSQL", flush=True)
            with postgres_database(self.pg_admin) as pg:
                seconds = sweep.seed(pg, self.tmp / f"pg-sweep-{n}", n, now)
                self.add("sweep", f"seed {n:,} via create_many (PostgreSQL)", rate(n, seconds), "records/s")
                self._sweep_rows("PostgreSQL", n, pg, self.tmp / f"pg-sweep-{n}", now)

    def _seeded_sqlite(self, n: int, now: datetime) -> tuple[Path, datetime]:
        """One seeded template per size, reused (copied) by the sweep and the CLI sections."""
        key = f"template-{n}"
        url, state = self.sqlite_url(key)
        path = Path(url[len("sqlite:///"):])
        if key not in self.meta:
            seconds = sweep.seed(url, state, n, now)
            self.meta[key] = now.isoformat()
            self.add("sweep", f"seed {n:,} via create_many (SQLite)", rate(n, seconds), "records/s")
        return path, datetime.fromisoformat(self.meta[key])

    def _sweep_rows(self, engine: str, n: int, url: str, state: Path, now: datetime) -> None:
        got = sweep.sweep_with_writer(url, state, now, timeout=1800)
        label = f"{n:,} {engine}"
        result = got["sweep"]
        if result is None:
            self.add("sweep", f"maintenance --apply wall time ({label})", None, "s", got["reason"])
            return
        self.add("sweep", f"maintenance --apply wall time ({label})", result["seconds"], "s",
                 pruned=result["tasks"].get("pruned"))
        self.add("sweep", f"maintenance peak RSS ({label})", result["peak_rss_kb"] / 1024, "MB")
        self.add("sweep", f"  of which before the pass ({label})", result["baseline_rss_kb"] / 1024, "MB")
        self.add("sweep", f"pruned ({label})", float(result["tasks"].get("pruned", 0)), "tasks")
        self.add("sweep", f"marked lost ({label})", float(result["tasks"].get("reconciled", 0)), "tasks")
        writer = got["writer"]
        if "max_wait_s" in writer:
            self.add("sweep", f"concurrent writer: longest wait ({label})", writer["max_wait_s"] * 1000, "ms")
            self.add("sweep", f"concurrent writer: p99 wait ({label})", writer["p99_wait_s"] * 1000, "ms")
            self.add("sweep", f"concurrent writer: writes during pass ({label})", float(writer["writes"]), "")
        else:
            self.add("sweep", f"concurrent writer ({label})", None, "", str(writer.get("error")))

    # --- 4: CLI latency -----------------------------------------------------------------------------------

    def cli(self) -> None:
        s = self.sizes
        n = s.cli_records
        print(f"CLI latency: {n:,} records on SQLite, median of {s.cli_repeat}", flush=True)
        now = datetime.now(UTC).replace(microsecond=0)
        template, _ = self._seeded_sqlite(n, now)
        url, state = self.sqlite_url(f"cli-{n}")
        sweep.copy_sqlite(template, Path(url[len("sqlite:///"):]))
        task_id = clilat.one_task_id(url, state)
        commands = [("flowledger --help (start-up floor)", ["--help"]),
                    ("tasks show <id> --json", ["tasks", "show", task_id, "--json"]),
                    ("status --json", ["status", "--json"]),
                    ("tasks audit --json", ["tasks", "audit", "--json"]),
                    ("tasks list --json (default limit)", ["tasks", "list", "--json"])]
        for label, args in commands:
            median, reason, samples = clilat.time_command(args, state_dir=state, url=url, repeat=s.cli_repeat,
                                                          timeout=s.cli_box_s)
            self.add("cli", f"{label} @ {n:,}", median * 1000 if median is not None else None, "ms", reason,
                     runs=len(samples))
        for what in ("prefect flow-run ls", "dbos workflow list"):
            self.add("cli", f"{what} @ {n:,}", None, "ms",
                     "not feasible: seeding 1 M runs through the peer's API takes hours at the rate measured above"
                     if not self.quick else "skipped in --quick")

    # --- 5: flow scheduling -------------------------------------------------------------------------------

    def flow(self) -> None:
        n = self.sizes.dag
        print(f"Flow scheduling: random DAG of {n:,} no-op steps", flush=True)
        got = flowsched.readiness_overhead(n)
        self.add("flow", f"parse + validate flow document ({n:,} steps)", got["parse_s"] * 1000 / n, "ms/step")
        self.add("flow", f"Readiness: drive every step ({n:,} steps)", got["drive_s"] * 1e6 / n, "µs/step")
        self.add("flow", f"Readiness total incl. parse ({n:,} steps)", got["total_s"] * 1000 / n, "ms/step")
        # The per-step launcher reports each step's start and end alone (three transactions per step); the batch
        # launcher takes a controller turn's steps together (flows/step_launch.py BatchStepLauncher). Before/after
        # against another revision, interleaved: `python bench/flowsched.py compare`.
        for steps in self.sizes.controller_steps:
            for launcher, label in (("per-step", "instant launcher"), ("batch", "instant batch launcher")):
                url, state = self.sqlite_url(f"controller-{launcher}-{steps}")
                try:
                    seconds = flowsched.controller_overhead(steps, url, state, launcher)
                except Exception as exc:  # another engineer's layer; report, never break the run
                    self.add("flow", f"graph controller, {label} ({steps:,} steps)", None, "ms/step",
                             f"{type(exc).__name__}: {str(exc)[:80]}")
                    continue
                self.add("flow", f"graph controller, {label} ({steps:,} steps)", seconds * 1000 / steps, "ms/step")

    # --- 7: end to end through a gateway (bench/e2e.py) ---------------------------------------------------

    def e2e(self) -> None:
        n, cli_submits = (20, 1) if self.quick else (1000, 20)
        print(f"End to end: {n:,} `true` commands through a gateway, beside huey and Celery", flush=True)
        if self.quick:
            print("  (--quick: huey and Celery are skipped; their servers and packages are not part of CI)")
        for name, value, unit, note in e2e.run_all(n, cli_submits, self.pg_admin,
                                                   None if self.quick else self.peers_python, self.tmp):
            self.add("e2e", name, value, unit, note)


def save(path: str, rows: list[Row], machine: dict[str, str], quick: bool, elapsed: float,
         sections: list[str]) -> None:
    Path(path).write_text(json.dumps({"rows": [dataclasses.asdict(r) for r in rows], "machine": machine,
                                      "quick": quick, "elapsed": elapsed, "sections": sections}, indent=1),
                          encoding="utf-8")


def render(paths: list[str], docs: str) -> None:
    """Merge saved runs (e.g. one per section, run side by side) into one report."""
    rows: list[Row] = []
    machine: dict[str, str] = {}
    sections: list[str] = []
    elapsed = 0.0
    quick = False
    for path in paths:
        saved = json.loads(Path(path).read_text(encoding="utf-8"))
        rows += [Row(**r) for r in saved["rows"]]
        machine.update(saved["machine"])
        sections += [s for s in saved["sections"] if s not in sections]
        elapsed = max(elapsed, saved["elapsed"])
        quick = quick or saved["quick"]
    ordered = [s for s in SECTIONS if s in sections]
    Path(docs).write_text(report.markdown(rows, machine, quick=quick, elapsed=elapsed, sections=ordered),
                          encoding="utf-8")
    print(f"wrote {docs}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, < 60 s (the CI smoke test)")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run only this section (repeatable)")
    parser.add_argument("--postgres", default=DEFAULT_PG, metavar="URL",
                        help="PostgreSQL server for the PostgreSQL figures ('none' to skip); a database is "
                             "created and dropped")
    parser.add_argument("--peers-python", default=None, metavar="PY", help="interpreter with the peers installed")
    parser.add_argument("--write-docs", action="store_true", help="write the report in --quick mode too")
    parser.add_argument("--docs", default=os.path.join(REPO, "bench", "results", "performance.md"), metavar="MD",
                        help="where the generated report goes (default bench/results/performance.md)")
    parser.add_argument("--save", metavar="JSON", help="also save the raw results here")
    parser.add_argument("--render", metavar="JSON", nargs="+",
                        help="only re-render the report from saved results (several runs merge)")
    args = parser.parse_args(argv)
    if args.render:
        render(args.render, args.docs)
        return 0

    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")  # temp dirs are 0755; the ledger's permission warning is noise here
    pg_admin = None if args.postgres.lower() == "none" else args.postgres
    if pg_admin and not report.postgres_reachable(pg_admin):
        print(f"PostgreSQL at {pg_admin} is not reachable: PostgreSQL figures are n/a", file=sys.stderr)
        pg_admin = None
    bench = Bench(QUICK if args.quick else FULL, pg_admin, peers.peers_python(args.peers_python), args.quick)
    started = time.perf_counter()
    machine = report.machine(pg_admin, bench.meta)
    sections = args.only or list(SECTIONS)
    try:
        for section in sections:
            getattr(bench, section)()
            if args.save:  # after every section, so a long run that is stopped keeps what it measured
                machine.update({k: v for k, v in bench.meta.items() if k.endswith("version")})
                save(args.save, bench.rows, machine, args.quick, time.perf_counter() - started, sections)
    finally:
        shutil.rmtree(bench.tmp, ignore_errors=True)  # the 1 M-record databases are gigabytes
    elapsed = time.perf_counter() - started
    print()
    print(report.table(bench.rows))
    print(f"\n{'quick' if args.quick else 'full'} run took {elapsed:.1f} s")
    machine = report.machine(pg_admin, bench.meta)
    if not args.quick or args.write_docs:
        Path(args.docs).write_text(report.markdown(bench.rows, machine, quick=args.quick, elapsed=elapsed,
                                                   sections=args.only or list(SECTIONS)), encoding="utf-8")
        print(f"wrote {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
