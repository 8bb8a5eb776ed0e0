"""SIGKILL a real gateway (`python -m flowledger.cli.main … gateway`) at random moments while it claims and runs
queued `cli` work, sweeps and delivers to session queues; restart it, repeat. Afterwards: integrity_check ok,
every history a legal path (no terminal status downgraded), nothing queued was lost track of, and once the lost
grace has passed with no live gateway, nothing is left active."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import harness
import pytest
from conftest import STRESS

from flowledger import FrozenClock, Ledger
from flowledger.scheduler import queue
from flowledger.tasks.core.clock import SystemClock
from flowledger.tasks.core.states import ACTIVE, TaskStatus

KILLS = 30 if STRESS else 2
# The gateway's testing knobs (docs/gateway.md): a short lease and fast sweeps so every kill lands mid-work.
FAST = {"FLOWLEDGER_LEASE_TTL_MS": "1500", "FLOWLEDGER_SWEEP_FIRST_MS": "100", "FLOWLEDGER_SWEEP_INTERVAL_MS": "200"}


def start_gateway(state_dir: Path, url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "flowledger.cli.main", "--state-dir", str(state_dir), "--database-url", url,
             "gateway", "--log-level", "info"],
            stdout=subprocess.DEVNULL, stderr=sink, env={**os.environ, **FAST},
        )


def wait_ready(proc: subprocess.Popen[bytes], log: Path, already: int) -> None:
    wait_for_text(proc, log, "gateway ready", already + 1)


def wait_for_text(proc: subprocess.Popen[bytes], log: Path, text: str, count: int) -> None:
    """The gateway reports on stderr; poll its log (an external process, not a time rule)."""
    deadline = time.monotonic() + 60
    while log.read_text(errors="replace").count(text) < count:
        assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
        assert time.monotonic() < deadline, f"gateway never logged {text!r} ×{count}"
        time.sleep(0.02)


def test_killed_gateways_leave_a_truthful_ledger(database_url: str, state_dir: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(23)
    log = tmp_path / "gateway.log"
    log.touch()
    submitted: list[str] = []
    with Ledger.open(state_dir=state_dir, database_url=database_url) as ledger:
        for round_no in range(KILLS):
            for n in range(4):
                argv = ["sleep", f"0.{rng.randrange(1, 4)}"] if n % 2 else ["true"]
                task = queue.enqueue(ledger, argv, label=f"round {round_no}.{n}",
                                     session_key="agent:main:main" if n == 3 else None)
                submitted.append(task.task_id)
            claims = log.read_text(errors="replace").count("claimed by")
            proc = start_gateway(state_dir, database_url, log)
            try:
                wait_ready(proc, log, round_no)
                wait_for_text(proc, log, "claimed by", claims + 1)  # this gateway has started work
                time.sleep(rng.uniform(0.0, 0.8))  # the random kill point: claims, runs, sweeps in flight
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
            assert proc.returncode == -signal.SIGKILL
        assert harness.integrity_ok(ledger) == "ok"
        verdict = harness.verify(ledger)
        stored = {t.task_id: t for t in ledger.tasks.list()}
    assert verdict.ok, verdict.violations[:20]
    assert set(submitted) <= set(stored)  # nothing submitted vanished (nothing was due for pruning)
    gw_log = log.read_text(errors="replace")
    assert "Traceback" not in gw_log, gw_log[-3000:]
    finished = sum(1 for t in submitted if stored[t].status == TaskStatus.SUCCEEDED)

    # No gateway is alive now. Past the lease and the lost grace, maintenance leaves nothing active.
    later = FrozenClock(SystemClock().now() + timedelta(minutes=5, seconds=2))
    with Ledger.open(state_dir=state_dir, database_url=database_url, clock=later) as ledger:
        ledger.maintenance(apply=True)
        after = {t.task_id: t for t in ledger.tasks.list()}
        assert harness.verify(ledger).ok
    assert [t for t in after.values() if t.status in ACTIVE] == []
    assert all(after[t].status == TaskStatus.SUCCEEDED for t in submitted if stored[t].status == TaskStatus.SUCCEEDED)
    engine = "sqlite" if database_url.startswith("sqlite") else "postgres"
    with capsys.disabled():
        sys.stderr.write(f"\n[gateway-crash {engine}] gateways killed={KILLS} submitted={len(submitted)} "
                         f"succeeded-before-kill={finished} lost-after-grace="
                         f"{sum(1 for t in submitted if after[t].status == TaskStatus.LOST)} "
                         f"violations={len(verdict.violations)}\n")
