"""Sweep: seed N records (10 % active, 30 % due for pruning, 60 % retained), then one maintenance pass in a
subprocess (its own peak RSS) while another process keeps doing one small write transaction in a loop.

Every record carries a run id, as gateway-run `cli` tasks do. One active record in ten is stale: running, its
last sign of life 10 minutes ago and no run context backs it (its gateway died), so the pass marks it `lost` —
1 % of the records, the write path of a sweep after a crash, next to the prune path of the 30 % due.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from measure import helper, run_json

from flowledger import FrozenClock, Ledger
from flowledger.tasks.core.ids import new_id

ACTIVE_SHARE, DUE_SHARE = 1, 3  # tenths


def records(n: int, now: datetime) -> Iterator[dict[str, Any]]:
    due = now - timedelta(days=8)  # ended 8 days ago: past the 7-day retention
    kept = now - timedelta(days=1)
    for i in range(n):
        tenth = i % 10
        base = {"runtime": "cli", "task": f"bench record {i}", "scope_kind": "system", "run_id": new_id()}
        if tenth < ACTIVE_SHARE:
            stale = i % 100 == 0
            yield {**base, "status": "running", "started_at": now - timedelta(minutes=10 if stale else 2)}
        elif tenth < ACTIVE_SHARE + DUE_SHARE:
            yield {**base, "status": "succeeded", "ended_at": due, "terminal_summary": "ok"}
        else:
            yield {**base, "status": "succeeded", "ended_at": kept, "terminal_summary": "ok"}


def seed(url: str, state_dir: Path, n: int, now: datetime) -> float:
    """Seconds to bulk-create the data set (this is the bulk-ingestion figure at scale, too)."""
    with Ledger.open(state_dir=state_dir, database_url=url, clock=FrozenClock(now)) as ledger:
        start = time.perf_counter()
        ledger.tasks.create_many(records(n, now), batch_size=5000)
        return time.perf_counter() - start


def copy_sqlite(template: Path, target: Path) -> None:
    """Copy and flush: otherwise the first WAL checkpoint's fsync pays for writing back the whole fresh copy, and
    a concurrent writer that happens to run it measures that instead of the sweep (seen: a 212 ms commit)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, target)
    with open(target, "rb+") as copied:
        os.fsync(copied.fileno())


def sweep_with_writer(url: str, state_dir: Path, now: datetime, timeout: float) -> dict[str, Any]:
    """Run the maintenance child while the writer child loops; both results in one dict."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="flbench-writer-") as tmp:
        ready, stop = Path(tmp) / "ready", Path(tmp) / "stop"
        writer_target = url
        if not url.startswith("sqlite:///"):
            from measure import libpq

            writer_target = libpq(url)
        writer = subprocess.Popen([sys.executable, helper("writer_child.py"), writer_target, str(ready), str(stop)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not ready.exists() and writer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # a few quiet writes first, so the baseline is in the sample too
        result, reason = run_json([sys.executable, helper("sweep_child.py"), url, str(state_dir), now.isoformat()],
                                  timeout=timeout)
        stop.touch()
        try:
            out, err = writer.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            writer.kill()
            out, err = writer.communicate()
    import json

    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    writer_result = json.loads(lines[-1]) if lines else {"error": (err.strip().splitlines() or ["?"])[-1]}
    return {"sweep": result, "reason": reason, "writer": writer_result}
