"""Listings at a million records: `tasks list` and `tasks flow list` (with `total`) through the real console
script, on SQLite and PostgreSQL (CONTRACT §7).

    python bench/listings.py [--records N] [--flows N] [--postgres URL|none] [--repeat R]
                             [--data DIR] [--before SRC] [--only sqlite|postgres]

`--data DIR` keeps the seeded SQLite ledger in DIR and reuses it on the next run (seeding 1 M records takes
minutes). `--before SRC` also times every command with the flowledger source tree in SRC (a `git archive` of
the baseline unpacked as SRC/flowledger), alternating with this tree in one run, and prints after/before.
Each run also times `python -c pass` and, when the dbos package is installed, `dbos workflow list` on a
SQLite system database: the interpreter floor and a peer's listing beside ours.

Seeds N tasks with sweep.records (10 % active, 30 % due, 60 % retained; one active record in ten stale and
unbacked, so the reconciled view shows it `lost`) and N flows (inserted in bulk, no linked tasks), then times
each command (median wall time, interpreter start included) and checks the `total` each JSON answer reports.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from clilat import flowledger_argv, time_command
from measure import postgres_database
from sweep import seed

from flowledger import FrozenClock, Ledger
from flowledger.flows import store as flow_store
from flowledger.flows.models import Flow, FlowStatus, SyncMode
from flowledger.tasks.core.ids import new_id
from flowledger.tasks.core.states import NotifyPolicy
from flowledger.tasks.core.tables import flow_runs

OWNER = "agent:bench:main"


def seed_flows(url: str, state_dir: Path, n: int, now: datetime) -> float:
    statuses = [FlowStatus.SUCCEEDED, FlowStatus.SUCCEEDED, FlowStatus.FAILED, FlowStatus.RUNNING]
    with Ledger.open(state_dir=state_dir, database_url=url, clock=FrozenClock(now)) as ledger:
        start = time.perf_counter()
        batch: list[dict[str, object]] = []
        for i in range(n):
            created = now - timedelta(seconds=n - i)
            flow = Flow(flow_id=new_id(), sync_mode=SyncMode.MANAGED, owner_key=OWNER if i % 100 == 0 else
                        f"agent:bench:{i % 7}", controller_id="bench", status=statuses[i % 4],
                        notify_policy=NotifyPolicy.SILENT, goal=f"bench flow {i}", created_at=created,
                        updated_at=created)
            batch.append(flow_store.flow_values(flow))
            if len(batch) == 5000 or i == n - 1:
                rows = batch
                ledger.db.transact(lambda conn, rows=rows: conn.execute(flow_runs.insert(), rows))  # type: ignore[misc]
                batch = []
        return time.perf_counter() - start


def total_of(args: list[str], state_dir: Path, url: str) -> int:
    argv = [*flowledger_argv(), "--state-dir", str(state_dir), "--database-url", url, *args, "--json"]
    proc = subprocess.run(argv, capture_output=True, check=True, env={**os.environ, "NO_COLOR": "1"})
    return int(json.loads(proc.stdout)["total"])


def ensure_seeded(engine: str, url: str, state_dir: Path, records: int, flows: int) -> None:
    marker = state_dir / f"seeded-{records}-{flows}"
    if marker.exists():
        print(f"[{engine}] reusing the data set in {state_dir}", flush=True)
        return
    now = datetime.now(UTC)
    seconds = seed(url, state_dir, records, now)
    print(f"[{engine}] seeded {records:,} tasks in {seconds:.0f} s", flush=True)
    seconds = seed_flows(url, state_dir, flows, now)
    print(f"[{engine}] seeded {flows:,} flows in {seconds:.0f} s", flush=True)
    marker.touch()


def run(engine: str, url: str, state_dir: Path, records: int, flows: int, repeat: int,
        before: Path | None = None, only: str | None = None, before_data: Path | None = None) -> None:
    ensure_seeded(engine, url, state_dir, records, flows)
    with Ledger.open(state_dir=state_dir, database_url=url) as ledger:
        some = ledger.tasks.list(limit=1)[0].task_id
        with ledger.db.read() as conn:
            flow_id = flow_store.list_flows(conn, limit=1)[0].flow_id
    commands = [
        ("tasks list", ["tasks", "list"]),
        ("tasks list --json", ["tasks", "list", "--json"]),
        ("tasks list --status lost", ["tasks", "list", "--status", "lost"]),
        ("tasks list --status succeeded --limit 20", ["tasks", "list", "--status", "succeeded", "--limit", "20"]),
        ("tasks list --runtime cli --offset 10000", ["tasks", "list", "--runtime", "cli", "--offset", "10000"]),
        ("tasks list --since 1h", ["tasks", "list", "--since", "1h"]),
        ("tasks show <8-char prefix>", ["tasks", "show", some[:13]]),
        ("status", ["status"]),
        ("tasks flow list", ["tasks", "flow", "list"]),
        ("tasks flow list --json", ["tasks", "flow", "list", "--json"]),
        ("tasks flow list --owner KEY", ["tasks", "flow", "list", "--owner", OWNER]),
        ("tasks flow list --status running", ["tasks", "flow", "list", "--status", "running"]),
        ("tasks flow show <8-char prefix>", ["tasks", "flow", "show", flow_id[:13]]),
        ("tasks flow show <prefix> --json", ["tasks", "flow", "show", flow_id[:13], "--json"]),
    ]
    print(f"[{engine}] load average {os.getloadavg()[0]:.2f}; python -c pass {floor_ms(repeat):.0f} ms; "
          f"dbos workflow list {dbos_list_ms(repeat)}", flush=True)
    for label, args in commands:
        if only is not None and not any(part.strip() and label.startswith(part.strip()) for part in only.split(",")):
            continue
        shown = ""
        if before is not None:  # alternate the two trees command by command: the same load for both
            old_dir = before_data or state_dir  # a copy at the baseline's schema version, when this tree migrated
            old, _, _ = time_command(args, state_dir=old_dir, url=f"sqlite:///{old_dir / 'runs.sqlite'}"
                                     if before_data else url, repeat=repeat, timeout=300,
                                     env={"PYTHONPATH": str(before)})
            shown = f"before {old * 1000:7.0f} ms  " if old is not None else "before n/a  "
        median, reason, samples = time_command(args, state_dir=state_dir, url=url, repeat=repeat, timeout=300)
        shown += f"{median * 1000:7.0f} ms" if median is not None else f"n/a ({reason})"
        if before is not None and median is not None and old is not None:
            shown += f"  after/before {median / old:.2f}"
        print(f"[{engine}] {label:<42} {shown}  ({len(samples)} runs)", flush=True)
    print(f"[{engine}] totals: tasks {total_of(['tasks', 'list'], state_dir, url):,}, "
          f"flows {total_of(['tasks', 'flow', 'list'], state_dir, url):,}, "
          f"lost {total_of(['tasks', 'list', '--status', 'lost'], state_dir, url):,}", flush=True)


def floor_ms(repeat: int) -> float:
    """`python -c pass`: what any Python command costs before it does anything."""
    samples = []
    for _ in range(max(repeat, 3)):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        samples.append(time.perf_counter() - start)
    return sorted(samples)[len(samples) // 2] * 1000


def dbos_list_ms(repeat: int) -> str:
    """`dbos workflow list` against a SQLite system database holding a few workflows (its listing of the last
    ten, interpreter start included), or why it could not run."""
    dbos = Path(sys.executable).with_name("dbos")
    if not dbos.exists():
        return "n/a (dbos not installed)"
    with tempfile.TemporaryDirectory(prefix="flbench-dbos-") as tmp:
        url = f"sqlite:///{tmp}/dbos.sqlite"
        code = ("from dbos import DBOS\n"
                f"DBOS(config={{'name': 'bench', 'system_database_url': {url!r}}})\n"
                "@DBOS.workflow()\ndef wf(i: int) -> int:\n    return i\n"
                "DBOS.launch()\n[wf(i) for i in range(20)]\nDBOS.destroy()\n")
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)
        samples = []
        for _ in range(max(repeat, 3)):
            start = time.perf_counter()
            proc = subprocess.run([str(dbos), "workflow", "list", "--sys-db-url", url], capture_output=True,
                                  timeout=120, check=False)
            samples.append(time.perf_counter() - start)
            if proc.returncode != 0:
                detail = (proc.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
                return f"n/a (exit {proc.returncode}: {detail[:80]})"
    return f"{sorted(samples)[len(samples) // 2] * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--flows", type=int, default=1_000_000)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--only", choices=("sqlite", "postgres"), default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, default=None, help="keep (and reuse) the SQLite data set here")
    parser.add_argument("--before", type=Path, default=None, help="a baseline source tree to time beside")
    parser.add_argument("--before-data", type=Path, default=None, help="the data set the baseline reads (a copy "
                        "of --data at the baseline's schema version, when this tree's schema is newer)")
    parser.add_argument("--commands", default=None, help="only the commands whose label starts with one of these "
                        "(comma-separated), e.g. 'tasks show,tasks flow'")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flbench-listings-") as tmp:
        if args.only in (None, "sqlite"):
            state = args.data or Path(tmp) / "sqlite"
            run("sqlite", f"sqlite:///{state / 'runs.sqlite'}", state, args.records, args.flows, args.repeat,
                args.before, args.commands, args.before_data)
        if args.only in (None, "postgres") and args.postgres != "none":
            with postgres_database(args.postgres) as url:
                run("postgres", url, Path(tmp) / "pg", args.records, args.flows, args.repeat)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
