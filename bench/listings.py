"""Listings at a million records: `tasks list` and `tasks flow list` (with `total`) through the real console
script, on SQLite and PostgreSQL (CONTRACT §7).

    python bench/listings.py [--records N] [--flows N] [--postgres URL|none] [--repeat R]

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


def run(engine: str, url: str, state_dir: Path, records: int, flows: int, repeat: int) -> None:
    now = datetime.now(UTC)
    seconds = seed(url, state_dir, records, now)
    print(f"[{engine}] seeded {records:,} tasks in {seconds:.0f} s", flush=True)
    seconds = seed_flows(url, state_dir, flows, now)
    print(f"[{engine}] seeded {flows:,} flows in {seconds:.0f} s", flush=True)
    with Ledger.open(state_dir=state_dir, database_url=url) as ledger:
        some = ledger.tasks.list(limit=1)[0].task_id
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
    ]
    for label, args in commands:
        median, reason, samples = time_command(args, state_dir=state_dir, url=url, repeat=repeat, timeout=300)
        shown = f"{median * 1000:7.0f} ms" if median is not None else f"n/a ({reason})"
        print(f"[{engine}] {label:<42} {shown}  ({len(samples)} runs)", flush=True)
    print(f"[{engine}] totals: tasks {total_of(['tasks', 'list'], state_dir, url):,}, "
          f"flows {total_of(['tasks', 'flow', 'list'], state_dir, url):,}, "
          f"lost {total_of(['tasks', 'list', '--status', 'lost'], state_dir, url):,}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--flows", type=int, default=1_000_000)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--only", choices=("sqlite", "postgres"), default=None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flbench-listings-") as tmp:
        if args.only in (None, "sqlite"):
            state = Path(tmp) / "sqlite"
            run("sqlite", f"sqlite:///{state / 'runs.sqlite'}", state, args.records, args.flows, args.repeat)
        if args.only in (None, "postgres") and args.postgres != "none":
            with postgres_database(args.postgres) as url:
                run("postgres", url, Path(tmp) / "pg", args.records, args.flows, args.repeat)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
