"""Isolated cron delivery (SPEC §5, REFERENCE §4 cron notes) on both engines: a run whose work spawned a sub-agent
waits for its follow-up before the run's completion is summarised, and the parent's interim acknowledgement is
never the recorded result. The cron command is a real child process that records its sub-agent through the
Python API; the wait is paced by an injected sleep and timer, so nothing here sleeps for time."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from flowledger import Ledger, TaskStatus
from flowledger.scheduler import cron
from flowledger.scheduler.runtimes.cron import FOLLOWUP_MIN_S, CronRunner
from flowledger.tasks.core.states import Runtime
from flowledger.tasks.core.tables import cron_run_log

ACK = "On it - spawned a subagent, it will auto-announce when done."


def spawning_job(ledger: Ledger, state_dir: Path, database_url: str, marker: Path) -> cron.CronJob:
    script = f"""
import os, sys
from flowledger import Ledger
key = os.environ["FLOWLEDGER_SESSION_KEY"]
with Ledger.open(state_dir={str(state_dir)!r}, database_url={database_url!r}) as ledger:
    ledger.tasks.create(runtime="subagent", task="fetch the weather", owner_key=key, run_id="sub-1",
                        child_session_key="agent:main:subagent:weather", status="running")
    ledger.sessions.track_cleanup(key, [sys.executable, "-c", "open({str(marker)!r}, 'w').write('closed')"],
                                  label="close tab")
print({ACK!r})
"""
    return cron.add_job(ledger, "weather", [sys.executable, "-c", script], every=timedelta(hours=1), isolated=True,
                        timeout=timedelta(seconds=10))


class Pacer:
    """The runtime's sleep and timer: each sleep moves the timer on; `on_sleep` acts as the world would meanwhile."""

    def __init__(self, on_sleep: object = None) -> None:
        self.now = 0.0
        self.sleeps = 0
        self.on_sleep = on_sleep

    def timer(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds
        if callable(self.on_sleep):
            self.on_sleep()


def test_an_isolated_run_waits_for_its_subagent_and_records_its_follow_up(
        ledger: Ledger, state_dir: Path, database_url: str, tmp_path: Path) -> None:
    job = spawning_job(ledger, state_dir, database_url, tmp_path / "closed")
    seen_running: list[TaskStatus] = []

    def subagent_finishes() -> None:
        [run] = ledger.tasks.list(runtime="cron")
        seen_running.append(run.status)  # the run is not summarised while it waits
        ledger.tasks.complete("sub-1", summary="Weather: sunny, 21 C.", runtime=Runtime.SUBAGENT)

    pacer = Pacer(subagent_finishes)
    runner = CronRunner(ledger, "gw-a", timer=pacer.timer, sleep=pacer.sleep)
    task = runner.run_job(job.job_id)
    assert task is not None and task.status == TaskStatus.SUCCEEDED
    assert task.terminal_summary == "Weather: sunny, 21 C."
    assert pacer.sleeps == 1 and seen_running == [TaskStatus.RUNNING]
    with ledger.db.read() as conn:
        [entry] = conn.execute(select(cron_run_log.c.summary).where(cron_run_log.c.action == "finished")).all()
    assert entry.summary == "Weather: sunny, 21 C."
    # The run's session is released like a sub-agent's: its tracked tab is closed.
    assert task.run_id is not None
    runner.releases[task.run_id].join(15)
    assert (tmp_path / "closed").read_text() == "closed"
    assert task.child_session_key is not None
    [tab] = ledger.sessions.resources(task.child_session_key)
    assert tab.outcome == "ok"


def test_a_subagent_still_running_at_the_deadline_leaves_no_stale_acknowledgement(
        ledger: Ledger, state_dir: Path, database_url: str, tmp_path: Path) -> None:
    job = spawning_job(ledger, state_dir, database_url, tmp_path / "closed")
    pacer = Pacer()
    task = CronRunner(ledger, "gw-a", timer=pacer.timer, sleep=pacer.sleep).run_job(job.job_id)
    assert task is not None and task.status == TaskStatus.SUCCEEDED
    assert task.terminal_summary is None  # not the acknowledgement
    # The wait lasted its floor: 30 s, longer than what was left of the job's 10 s budget.
    assert pacer.now == FOLLOWUP_MIN_S
    assert ledger.tasks.require("sub-1").status == TaskStatus.RUNNING
