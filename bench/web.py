"""The web board at scale: a 1,000-step flow's page, and `/api/tasks` paging a ledger of a million records.

    .venv/bin/python bench/web.py [--records 1000000] [--steps 1000] [--repeat 7] [--postgres URL]

Each figure is the median wall time of `--repeat` requests through the whole app (routing, the service calls,
JSON or Jinja rendering) in this process, after one warm-up request; the ledger is a SQLite file (and, with
`--postgres`, a PostgreSQL database, which the run empties first). Targets (issue 19): the flow page < 1 s,
`/api/tasks` < 0.3 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from flowsched import InstantLauncher, random_dag
from starlette.testclient import TestClient

from flowledger import Ledger
from flowledger.flows.controller import run_flow
from flowledger.flows.definitions import flow_from_document
from flowledger.tasks.core.clock import SystemClock
from flowledger.tasks.core.ids import new_id
from flowledger.web.app import build_app
from flowledger.web.security import decide_access
from flowledger.web.source import LedgerSource


def records(n: int, now: datetime) -> Iterator[dict[str, Any]]:
    """A ledger as an operator's looks: mostly ended work over the last days, 1 % failed, a few running."""
    for i in range(n):
        base = {"runtime": ("cli", "cron", "subagent")[i % 3], "task": f"bench record {i}", "scope_kind": "system",
                "run_id": new_id(), "owner_key": f"agent:bench:{i % 50}"}
        if i % 1000 == 0:
            yield {**base, "status": "running", "started_at": now - timedelta(seconds=30)}
        elif i % 100 == 0:
            yield {**base, "status": "failed", "ended_at": now - timedelta(hours=i % 72), "error": "exit code 1"}
        else:
            yield {**base, "status": "succeeded", "ended_at": now - timedelta(hours=i % 72), "terminal_summary": "ok"}


def timed(client: TestClient, path: str, repeat: int) -> float:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code, response.text[:200])
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        response = client.get(path)
        samples.append(time.perf_counter() - start)
        assert response.status_code == 200
    return statistics.median(samples)


def bench(url: str, state_dir: Path, n_records: int, steps: int, repeat: int) -> dict[str, Any]:
    out: dict[str, Any] = {"database": url.split(":", 1)[0], "records": n_records, "steps": steps}
    with Ledger.open(state_dir=state_dir, database_url=url) as ledger:
        start = time.perf_counter()
        flow = run_flow(ledger, flow_from_document(random_dag(steps)), InstantLauncher(ledger), poll_interval=0)
        out["flow_run_s"] = time.perf_counter() - start
        start = time.perf_counter()
        ledger.tasks.create_many(records(n_records, SystemClock().now()), batch_size=5000)
        out["seed_s"] = time.perf_counter() - start
        client = TestClient(build_app(LedgerSource.of(ledger), decide_access("127.0.0.1", None,
                                                                             allow_actions=False)))
        page = client.get(f"/flows/{flow.flow_id}")
        out["flow_page_nodes"] = page.text.count('<g class="step"')
        out["flow_page_kb"] = round(len(page.content) / 1024)
        out["flow_page_s"] = timed(client, f"/flows/{flow.flow_id}", repeat)
        out["flow_api_s"] = timed(client, f"/api/flows/{flow.flow_id}", repeat)
        out["api_tasks_s"] = timed(client, "/api/tasks", repeat)
        out["api_tasks_page_500_s"] = timed(client, "/api/tasks?limit=100&offset=50000", repeat)
        out["api_tasks_failed_s"] = timed(client, "/api/tasks?status=failed", repeat)
        out["api_tasks_owner_s"] = timed(client, "/api/tasks?owner=agent:bench:7", repeat)
        out["tasks_page_s"] = timed(client, "/tasks", repeat)
        out["overview_s"] = timed(client, "/", max(1, repeat // 2))
        out["metrics_s"] = timed(client, "/metrics", max(1, repeat // 2))
        client.close()
    return out


def _empty_pg(url: str) -> None:
    from sqlalchemy import create_engine, text

    from flowledger.tasks.core.tables import METADATA

    engine = create_engine(url)
    with engine.begin() as conn:
        names = ", ".join(f'"{t.name}"' for t in METADATA.sorted_tables if conn.dialect.has_table(conn, t.name))
        if names:
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY"))
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--postgres", default=None, help="also measure on this (emptied) PostgreSQL database")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        results.append(bench(f"sqlite:///{state / 'tasks' / 'runs.sqlite'}", state, args.records, args.steps,
                             args.repeat))
        if args.postgres:
            _empty_pg(args.postgres)
            results.append(bench(args.postgres, Path(tmp) / "pg-state", args.records, args.steps, args.repeat))
    json.dump(results, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
