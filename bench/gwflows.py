"""Detached-flow throughput: flows of instant steps handed to a real gateway process, steps per second end to end.

`python bench/gwflows.py [--flows 10] [--steps 20] [--max-flows 8] [--postgres URL]`

Starts `flowledger gateway` on a fresh ledger (a SQLite file, or a fresh database on the PostgreSQL server of
URL), records `--flows` detached flows of `--steps` independent `true` steps each (what `tasks flow run
--detach` records: the definition with the submitter's directory and environment; flow `max_parallel` 4, the
default), and times from the first submission until every flow has ended: steps/s = flows × steps / that time.
Each step is a real process started by the gateway's cli runtime and recorded through the ledger.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from flowledger import Ledger
from flowledger.flows.context import capture
from flowledger.flows.controller import define_flow
from flowledger.flows.definitions import parse_flow
from flowledger.flows.models import FlowStatus


def flow_text(steps: int) -> str:
    lines = ["[flow]", 'goal = "bench"']
    for n in range(steps):
        lines += ["[[step]]", f'id = "s{n}"', 'run = ["true"]']
    return "\n".join(lines) + "\n"


def fresh_postgres(url: str) -> tuple[str, str]:
    """A new database on the server of `url`; (its URL, its name)."""
    name = f"flb_gwflows_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False), name


def drop_postgres(url: str, name: str) -> None:
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def run(url: str, state: Path, *, flows: int, steps: int, max_flows: int) -> dict[str, float]:
    Ledger.open(state_dir=state, database_url=url).close()  # the schema, before the gateway and the clock start
    log = (state.parent / "gateway.log").open("wb")
    gateway = subprocess.Popen(
        [sys.executable, "-m", "flowledger.cli.main", "--state-dir", str(state), "--database-url", url, "gateway",
         "--max-flows", str(max_flows), "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=log, env={**os.environ})
    try:
        deadline = time.monotonic() + 60
        while b"gateway ready" not in (state.parent / "gateway.log").read_bytes():
            if gateway.poll() is not None or time.monotonic() > deadline:
                raise SystemExit((state.parent / "gateway.log").read_text(errors="replace"))
            time.sleep(0.05)
        definition = parse_flow(flow_text(steps))
        context = capture(os.getcwd(), os.environ)
        with Ledger.open(state_dir=state, database_url=url) as ledger:
            began = time.perf_counter()
            ids = [define_flow(ledger, definition, context).flow_id for _ in range(flows)]
            submitted = time.perf_counter() - began
            pending = set(ids)
            ended_at: dict[str, float] = {}
            while pending:
                for flow_id in list(pending):
                    flow = ledger.flows.get_by_id(flow_id)
                    if flow is not None and flow.status not in (FlowStatus.QUEUED, FlowStatus.RUNNING):
                        if flow.status != FlowStatus.SUCCEEDED:
                            raise SystemExit(f"flow {flow_id} ended {flow.status.value}")
                        ended_at[flow_id] = time.perf_counter() - began
                        pending.discard(flow_id)
                time.sleep(0.02)
            total = max(ended_at.values())
    finally:
        gateway.terminate()
        gateway.wait(30)
        log.close()
    return {"flows": flows, "steps": flows * steps, "seconds": total, "submit_s": submitted,
            "steps_per_s": flows * steps / total, "median_flow_s": statistics.median(ended_at.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--max-flows", type=int, default=8)
    parser.add_argument("--postgres", default=None, help="a PostgreSQL URL; a fresh database is made beside it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gwflows-") as tmp:
        state = Path(tmp) / "state"
        if args.postgres:
            url, name = fresh_postgres(args.postgres)
            try:
                result = run(url, state, flows=args.flows, steps=args.steps, max_flows=args.max_flows)
            finally:
                drop_postgres(args.postgres, name)
            engine = "postgresql"
        else:
            result = run(f"sqlite:///{state / 'tasks' / 'runs.sqlite'}", state, flows=args.flows, steps=args.steps,
                         max_flows=args.max_flows)
            engine = "sqlite"
    load = os.getloadavg()
    print(f"{engine}: {result['flows']} flows × {args.steps} steps = {result['steps']} steps in "
          f"{result['seconds']:.2f} s → {result['steps_per_s']:.1f} steps/s "
          f"(median flow {result['median_flow_s']:.2f} s, "
          f"submitting {result['submit_s']:.2f} s; --max-flows {args.max_flows}; load {load[0]:.1f})")


if __name__ == "__main__":
    main()
