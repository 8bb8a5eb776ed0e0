"""The cli runtime on both engines: a real child process per task, outcomes mapped to statuses, logs kept,
a durable run context while it runs, cancel/timeout by SIGTERM then SIGKILL (CONTRACT §5b)."""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from flowledger import FrozenClock, Ledger, TaskStatus
from flowledger.scheduler import queue
from flowledger.scheduler.logs import log_paths
from flowledger.scheduler.runner import run_command
from flowledger.scheduler.runtimes.cli import CliRuntime
from flowledger.scheduler.runtimes.launch import LaunchFailed
from flowledger.tasks.core.states import Runtime
from flowledger.tasks.core.tables import run_contexts
from flowledger.tasks.runs import liveness


def _run(ledger: Ledger, argv: list[str], **kwargs: object) -> tuple[CliRuntime, str]:
    runtime = CliRuntime(ledger, kill_grace=timedelta(milliseconds=300))
    task = queue.enqueue(ledger, argv)
    runtime.start(task, argv, **kwargs)  # type: ignore[arg-type]
    return runtime, task.task_id


def _wait(runtime: CliRuntime, task_id: str) -> object:
    done = runtime.wait(task_id, timeout=15)
    runtime.shutdown()
    assert done is not None
    return done


def _wait_armed(ledger: Ledger, task_id: str) -> None:
    """Poll (with a deadline) until the child printed that its signal handler is installed."""
    out, _ = log_paths(ledger.state_dir, task_id)
    deadline = time.monotonic() + 10
    while "armed" not in (out.read_text() if out.exists() else ""):
        assert time.monotonic() < deadline, "child never armed"
        time.sleep(0.02)


def test_exit_zero_succeeds_with_logs_and_releases_the_run(ledger: Ledger) -> None:
    runtime, task_id = _run(ledger, ["sh", "-c", "echo first; echo last; echo note >&2"])
    task = _wait(runtime, task_id)
    assert task.status == TaskStatus.SUCCEEDED and task.terminal_summary == "last"  # type: ignore[attr-defined]
    out, err = log_paths(ledger.state_dir, task_id)
    assert out.read_text() == "first\nlast\n" and err.read_text() == "note\n"
    with ledger.db.read() as conn:
        assert conn.execute(select(run_contexts)).first() is None
    kinds = [e.kind for e in ledger.tasks.events(task_id)]
    assert kinds == ["queued", "running", "succeeded"]


def test_non_zero_exit_fails_with_code_and_stderr_tail(ledger: Ledger) -> None:
    runtime, task_id = _run(ledger, ["sh", "-c", "echo out; echo 'disk full' >&2; exit 7"])
    task = _wait(runtime, task_id)
    assert task.status == TaskStatus.FAILED  # type: ignore[attr-defined]
    assert task.error == "exit code 7: disk full"  # type: ignore[attr-defined]


def test_missing_program_is_refused_before_anything_is_recorded(ledger: Ledger, tmp_path: object) -> None:
    runtime = CliRuntime(ledger, kill_grace=timedelta(milliseconds=300))
    task = queue.enqueue(ledger, ["definitely-not-a-program-xyz"])
    with pytest.raises(LaunchFailed, match="program 'definitely-not-a-program-xyz' not found on PATH"):
        runtime.start(task, ["definitely-not-a-program-xyz"])
    gone = str(tmp_path) + "/vanished"
    with pytest.raises(LaunchFailed, match=r"working directory .*vanished' does not exist"):
        runtime.start(task, ["true"], cwd=gone)
    runtime.shutdown()
    assert ledger.tasks.require(task.task_id).status == TaskStatus.QUEUED
    with ledger.db.read() as conn:
        assert conn.execute(select(run_contexts)).all() == []


def test_run_in_process_records_a_missing_program_as_failed(ledger: Ledger) -> None:
    outcome = run_command(ledger, ["definitely-not-a-program-xyz"], kill_grace=timedelta(milliseconds=300))
    assert outcome.task.status == TaskStatus.FAILED
    assert outcome.task.error == "cannot start: program 'definitely-not-a-program-xyz' not found on PATH"
    with ledger.db.read() as conn:
        assert conn.execute(select(run_contexts)).all() == []


def test_shell_only_when_asked(ledger: Ledger) -> None:
    runtime, task_id = _run(ledger, ["echo $((1+2)) | tr 3 x"], shell=True)
    assert _wait(runtime, task_id).terminal_summary == "x"  # type: ignore[attr-defined]
    runtime, task_id = _run(ledger, ["echo", "$((1+2))"])
    assert _wait(runtime, task_id).terminal_summary == "$((1+2))"  # type: ignore[attr-defined]


def test_timeout_ends_timed_out(ledger: Ledger) -> None:
    started = time.monotonic()
    runtime, task_id = _run(ledger, ["sleep", "30"], timeout=timedelta(milliseconds=300))
    task = _wait(runtime, task_id)
    assert task.status == TaskStatus.TIMED_OUT and task.error == "timed out after 300ms"  # type: ignore[attr-defined]
    assert time.monotonic() - started < 10


def test_the_run_is_live_while_it_runs_then_released(ledger: Ledger, clock: FrozenClock) -> None:
    runtime, task_id = _run(ledger, ["sleep", "30"])
    task = ledger.tasks.require(task_id)
    assert task.status == TaskStatus.RUNNING
    with ledger.db.read() as conn:
        assert liveness.run_is_live(conn, task.run_id or "", clock.now())
        pid = conn.execute(select(run_contexts.c.pid)).scalar()
    assert pid and os.getpgid(pid) == pid  # its own process group: a stop reaches the whole tree
    result = ledger.tasks.cancel(task_id)  # no adapter here: the registry records it, the watcher stops it
    assert result.cancelled
    assert _wait(runtime, task_id).status == TaskStatus.CANCELLED  # type: ignore[attr-defined]
    with ledger.db.read() as conn:
        assert not liveness.run_is_live(conn, task.run_id or "", clock.now())


def test_cancel_through_the_adapter_sends_sigterm(ledger: Ledger) -> None:
    script = ("import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
              "print('armed', flush=True)\ntime.sleep(30)")
    runtime, task_id = _run(ledger, [sys.executable, "-c", script])
    ledger.tasks.cancel_adapters[Runtime.CLI] = runtime
    _wait_armed(ledger, task_id)
    result = ledger.tasks.cancel(task_id, "operator said stop")
    assert result.cancelled and result.task is not None
    task = _wait(runtime, task_id)
    assert task.status == TaskStatus.CANCELLED and task.error == "operator said stop"  # type: ignore[attr-defined]


def test_a_child_ignoring_sigterm_is_killed_after_the_grace(ledger: Ledger) -> None:
    script = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              "print('armed', flush=True)\ntime.sleep(30)")
    runtime, task_id = _run(ledger, [sys.executable, "-c", script])
    _wait_armed(ledger, task_id)
    started = time.monotonic()
    runtime.cancel(ledger.tasks.require(task_id), None)
    task = _wait(runtime, task_id)
    assert task.status == TaskStatus.CANCELLED  # type: ignore[attr-defined]
    assert 0.25 <= time.monotonic() - started < 5  # SIGKILL came after the 300 ms grace


def test_no_downgrade_a_cancelled_task_stays_cancelled_when_the_child_exits_zero(ledger: Ledger) -> None:
    runtime, task_id = _run(ledger, ["sh", "-c", "trap 'exit 0' TERM; sleep 30 & wait"])
    ledger.tasks.cancel(task_id)
    assert _wait(runtime, task_id).status == TaskStatus.CANCELLED  # type: ignore[attr-defined]


def test_start_refuses_an_empty_argv(ledger: Ledger) -> None:
    task = queue.enqueue(ledger, ["true"])
    with pytest.raises(Exception, match="nothing to run"):
        CliRuntime(ledger).start(task, [])


def test_a_command_queued_for_the_next_gateway_stays_queued(ledger: Ledger, clock: FrozenClock) -> None:
    # `flowledger run --detach` with no gateway running: docs/runtimes.md promises the task waits, not `lost`.
    waiting = queue.enqueue(ledger, ["true"])
    claimed = queue.enqueue(ledger, ["true"])
    assert queue.claim(ledger, "gw-gone", 1, task_id=claimed.task_id)  # a gateway took it, then vanished
    clock.advance(timedelta(minutes=10))
    ledger.maintenance(apply=True)
    assert ledger.tasks.require(waiting.task_id).status == TaskStatus.QUEUED
    assert ledger.tasks.require(claimed.task_id).status == TaskStatus.LOST
