"""Queue wake-ups on both engines (tasks/runs/wakeup.py): a committed submission cuts the gateway's poll short,
and the cli runtime starts a claimed task without recording its start a second time."""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from flowledger import InvalidInput, Ledger, TaskStatus
from flowledger.scheduler import queue
from flowledger.scheduler.gateway import Gateway
from flowledger.scheduler.runtimes.cli import CliRuntime
from flowledger.tasks.core.tables import run_contexts, task_events
from flowledger.tasks.runs import wakeup

pytestmark = pytest.mark.skipif(not wakeup.SUPPORTED, reason="abstract Unix sockets are Linux-only")


def _gateway_id() -> str:
    return f"gw-test-{uuid.uuid4().hex[:12]}"  # abstract socket names are machine-wide: one per test


def _until(predicate: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _identity() -> str:
    return f"sqlite:/nowhere/{uuid.uuid4().hex}"  # abstract socket names are machine-wide: one per test


def test_a_wake_reaches_the_listeners_of_that_database_only() -> None:
    mine, other = _identity(), _identity()
    woken = threading.Event()
    listener = wakeup.WakeListener(mine, woken.set)
    assert listener.start() and listener.slot == 0
    try:
        assert wakeup.wake(other) == 0  # nobody listens there: no error, nothing reached
        assert not woken.is_set()
        assert wakeup.wake(mine) == 1
        assert woken.wait(10)
    finally:
        listener.stop()
    assert not listener.listening
    assert wakeup.wake(mine) == 0  # the address went with the listener


def test_gateways_of_one_database_take_the_next_slot_and_past_the_last_they_poll() -> None:
    identity = _identity()
    woken = [threading.Event() for _ in range(wakeup.SLOTS)]
    listeners = [wakeup.WakeListener(identity, event.set) for event in woken]
    try:
        assert all(listener.start() for listener in listeners)
        assert [listener.slot for listener in listeners] == list(range(wakeup.SLOTS))
        assert not wakeup.WakeListener(identity, lambda: None).start()  # no slot left: it polls
        assert wakeup.wake(identity) == wakeup.SLOTS
        assert all(event.wait(10) for event in woken)
    finally:
        for listener in listeners:
            listener.stop()


def test_the_identity_names_a_database_the_same_way_from_any_spelling(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    direct = make_url(f"sqlite:///{tmp_path / 'runs.sqlite'}")
    roundabout = make_url(f"sqlite:///{tmp_path / 'd' / '..' / 'runs.sqlite'}")
    assert wakeup.database_identity(direct) == wakeup.database_identity(roundabout)
    secret = make_url("postgresql+psycopg://u:secret@db:5432/ledger")
    assert "secret" not in wakeup.database_identity(secret)
    assert wakeup.database_identity(secret) != wakeup.database_identity(make_url("postgresql+psycopg://db/other"))


def test_a_submission_wakes_an_idle_gateway_long_before_its_poll(ledger: Ledger) -> None:
    gateway = Gateway(ledger, gateway_id=_gateway_id(), queue_poll_s=3600)
    gateway.start()
    try:
        assert gateway.wakeups.listening
        # The loop found nothing and waits for a wake-up or its hour-long poll.
        _until(lambda: gateway.queue_waits >= 1, 30, "the queue loop never went idle")
        task = queue.enqueue(ledger, [sys.executable, "-c", "pass"])
        _until(lambda: ledger.tasks.require(task.task_id).status == TaskStatus.SUCCEEDED, 30,
               "the submission did not wake the gateway")
    finally:
        gateway.stop()


def test_a_claimed_task_starts_without_a_second_start_record(ledger: Ledger) -> None:
    runtime = CliRuntime(ledger, gateway_id=_gateway_id())
    task = queue.enqueue(ledger, [sys.executable, "-c", "pass"])
    [(claimed, payload)] = queue.claim(ledger, runtime.gateway_id, 1)
    runtime.start(claimed, payload.argv, claimed=True)
    done = runtime.wait(task.task_id, timeout=30)
    runtime.shutdown()
    assert done is not None and done.status == TaskStatus.SUCCEEDED
    with ledger.db.read() as conn:
        kinds = [k for (k,) in conn.execute(select(task_events.c.kind).where(task_events.c.task_id == task.task_id)
                                            .order_by(task_events.c.id))]
        left = conn.execute(select(func.count()).select_from(run_contexts)
                            .where(run_contexts.c.run_id == task.run_id)).scalar_one()
    assert kinds.count("running") == 1 and kinds[-1] == "succeeded"
    assert left == 0  # released at its end, as for any run


def test_claimed_refuses_a_task_that_was_not_claimed(ledger: Ledger) -> None:
    runtime = CliRuntime(ledger, gateway_id=_gateway_id())
    task = queue.enqueue(ledger, [sys.executable, "-c", "pass"])
    with pytest.raises(InvalidInput):
        runtime.start(task, [sys.executable, "-c", "pass"], claimed=True)
    assert ledger.tasks.require(task.task_id).status == TaskStatus.QUEUED
    runtime.shutdown()


def test_a_claimed_runs_pid_is_recorded_while_it_runs(ledger: Ledger) -> None:
    """Recorded by the run's own thread: a later gateway can still reap the child if this one dies."""
    runtime = CliRuntime(ledger, gateway_id=_gateway_id(), kill_grace=timedelta(milliseconds=300))
    task = queue.enqueue(ledger, ["sleep", "30"])
    [(claimed, payload)] = queue.claim(ledger, runtime.gateway_id, 1)
    runtime.start(claimed, payload.argv, claimed=True)

    def recorded_pid() -> int | None:
        with ledger.db.read() as conn:
            return conn.execute(select(run_contexts.c.pid).where(run_contexts.c.run_id == task.run_id)).scalar()

    try:
        _until(lambda: recorded_pid() is not None, 30, "the claimed run's pid was never recorded")
        pid = recorded_pid()
        assert pid is not None and os.getpgid(pid) == pid
    finally:
        runtime.shutdown()
    assert ledger.tasks.require(task.task_id).status == TaskStatus.CANCELLED


def test_a_claimed_run_that_cannot_open_its_logs_ends_failed_on_its_own_thread(ledger: Ledger) -> None:
    """A claimed run is launched on its own thread (the queue loop only claims): when its log files cannot be
    opened there, the task still ends `failed` at once, its run context goes and its slot is free again."""
    logs = ledger.state_dir / "logs"
    if logs.is_dir():
        logs.rmdir()
    logs.write_text("not a directory")
    runtime = CliRuntime(ledger, gateway_id=_gateway_id())
    task = queue.enqueue(ledger, [sys.executable, "-c", "pass"])
    [(claimed, payload)] = queue.claim(ledger, runtime.gateway_id, 1)
    try:
        runtime.start(claimed, payload.argv, claimed=True)  # returns: the launch is the run's thread's
        done = runtime.wait(task.task_id, timeout=30)
        assert runtime.running_count() == 0
    finally:
        runtime.shutdown()
    assert done is not None and done.status == TaskStatus.FAILED
    assert done.error is not None and "cannot write its output" in done.error
    with ledger.db.read() as conn:
        left = conn.execute(select(func.count()).select_from(run_contexts)
                            .where(run_contexts.c.run_id == task.run_id)).scalar_one()
    assert left == 0
