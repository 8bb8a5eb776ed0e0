"""Per-job cron timeout on both engines: stored in `cron_jobs.timeout_ms`, NULL meaning the runtime's 1 h default,
and enforced by the cron runtime at its exact boundary (a hand-driven timer, a real child process)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select

from flowledger import InvalidInput, Ledger, TaskStatus
from flowledger.scheduler import cron
from flowledger.scheduler.runtimes.cron import CronRunner
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.tables import cron_jobs, cron_run_log, run_contexts


class HandTimer:
    """A monotonic clock the test moves; `calls` shows the runtime's supervising loop has looked at it."""

    def __init__(self) -> None:
        self.value = 0.0
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self.calls += 1
            return self.value

    def move_to(self, seconds: float, *, settle: bool = True) -> None:
        """Set the time; with `settle`, return once the runtime has read it a few times (its loop polls
        every 50 ms), so whatever it does at this time has been done."""
        with self._lock:
            self.value = seconds
            seen = self.calls
        if settle:
            _until(lambda: self.calls >= seen + 3, "the runtime to read the timer")


def _until(condition: Callable[[], object], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_timeout_is_stored_and_null_means_the_default(ledger: Ledger) -> None:
    own = cron.add_job(ledger, "own", ["true"], every=timedelta(minutes=5), timeout=timedelta(seconds=90))
    default = cron.add_job(ledger, "default", ["true"], every=timedelta(minutes=5))
    with ledger.db.read() as conn:
        stored = dict(conn.execute(select(cron_jobs.c.name, cron_jobs.c.timeout_ms)).all())
    assert stored == {"own": 90_000, "default": None}
    assert own.timeout == timedelta(seconds=90) and own.effective_timeout == timedelta(seconds=90)
    assert default.timeout is None and default.effective_timeout == cron.DEFAULT_TIMEOUT == timedelta(hours=1)
    now = ledger.clock.now()
    assert own.to_json(now)["timeout_ms"] == 90_000 and default.to_json(now)["timeout_ms"] is None
    got = cron.get_job(ledger, "own")
    assert got is not None and got.timeout == timedelta(seconds=90)


@pytest.mark.parametrize("bad", [timedelta(0), timedelta(seconds=-1), timedelta(microseconds=999)])
def test_a_timeout_that_is_not_positive_is_refused(ledger: Ledger, bad: timedelta) -> None:
    with pytest.raises(InvalidInput, match="must be longer than zero"):
        cron.add_job(ledger, "x", ["true"], every=timedelta(minutes=5), timeout=bad)
    assert cron.list_jobs(ledger) == []


@pytest.mark.parametrize(("timeout", "boundary_s"), [(timedelta(seconds=2), 2.0), (None, 3600.0)])
def test_a_run_times_out_exactly_at_its_jobs_timeout(ledger: Ledger, timeout: timedelta | None,
                                                     boundary_s: float) -> None:
    job = cron.add_job(ledger, "nightly", ["sleep", "30"], every=timedelta(minutes=5), timeout=timeout)
    timer = HandTimer()
    runner = CronRunner(ledger, "gw-a", kill_grace=timedelta(milliseconds=200), timer=timer)
    result: list[Task | None] = []
    worker = threading.Thread(target=lambda: result.append(runner.run_job(job.job_id)))
    worker.start()
    try:
        _until(lambda: _child_pid(ledger) is not None, "the child to start")
        timer.move_to(boundary_s - 0.001)  # one millisecond inside: still running
        [run_id] = runner.active_run_ids()
        assert ledger.tasks.require(run_id).status == TaskStatus.RUNNING
        timer.move_to(boundary_s, settle=False)  # exactly at the timeout
        worker.join(15)
    finally:
        if worker.is_alive():
            runner.shutdown()
            worker.join(15)
    [task] = result
    assert task is not None and task.status == TaskStatus.TIMED_OUT and task.error == cron.TIMED_OUT_ERROR
    with ledger.db.read() as conn:
        [entry] = conn.execute(select(cron_run_log)).all()
    assert entry.error == cron.TIMED_OUT_ERROR and entry.duration_ms == int(boundary_s * 1000)


def test_a_run_that_ends_inside_its_timeout_succeeds(ledger: Ledger) -> None:
    job = cron.add_job(ledger, "quick", ["true"], every=timedelta(minutes=5), timeout=timedelta(seconds=2))
    timer = HandTimer()
    task = CronRunner(ledger, "gw-a", timer=timer).run_job(job.job_id)
    assert task is not None and task.status == TaskStatus.SUCCEEDED


def _child_pid(ledger: Ledger) -> int | None:
    with ledger.db.read() as conn:
        pid = conn.execute(select(run_contexts.c.pid)).scalar()
    return int(pid) if pid is not None else None
