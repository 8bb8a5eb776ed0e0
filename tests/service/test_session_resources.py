"""Completion cleanup (SPEC §5): what a child session tracked is released when its sub-agent run ends, best effort,
after the terminal status is recorded, on both engines with real processes. The sub-agent registers its own
resources through the Python API, as the work of a real run would."""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from flowledger import Ledger, TaskStatus
from flowledger.flows import resources
from flowledger.flows.processes import RUN_MARKER, proc_stat
from flowledger.scheduler.runtimes.subagent import SubagentRuntime
from flowledger.tasks.core.errors import InvalidInput
from flowledger.tasks.runs import liveness

SESSION = "agent:main:main"


def alive(pid: int) -> bool:
    fields = proc_stat(pid)
    return fields is not None and fields[0] != "Z"


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} still alive"
        time.sleep(0.02)


def test_a_subagents_resources_are_released_after_its_terminal_status(
        ledger: Ledger, database_url: str, state_dir: Path, tmp_path: Path) -> None:
    closed, hang_pid, browser_pid = tmp_path / "closed", tmp_path / "hang.pid", tmp_path / "browser.pid"
    script = f"""
import os, subprocess, sys
from flowledger import Ledger
key, run = os.environ["FLOWLEDGER_SESSION_KEY"], os.environ["{RUN_MARKER}"]
browser = subprocess.Popen(["sleep", "60"], start_new_session=True,  # outlives this run; carries the marker
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
open({str(browser_pid)!r}, "w").write(str(browser.pid))
with Ledger.open(state_dir={str(state_dir)!r}, database_url={database_url!r}) as ledger:
    ledger.sessions.track_process(key, browser.pid, run, label="browser")
    ledger.sessions.track_cleanup(key, [sys.executable, "-c", "open({str(closed)!r}, 'w').write('tab 1')"],
                                  label="close tab 1")
    ledger.sessions.track_cleanup(key, ["sh", "-c", "echo $$ > {hang_pid}; exec sleep 30"], label="hanging")
    ledger.sessions.track_cleanup(key, ["false"], label="failing")
print("looked it up")
"""
    runtime = SubagentRuntime(ledger, kill_grace=timedelta(milliseconds=300), cleanup_timeout=timedelta(seconds=1.5))
    try:
        task = runtime.spawn(task="browse", target=[sys.executable, "-c", script], requester_session_key=SESSION)
        done = runtime.wait(task.task_id, 30)
        # The terminal status is there while the hanging cleanup still runs: cleanup never delays it.
        assert done is not None and done.status == TaskStatus.SUCCEEDED, done
        assert done.terminal_summary == "looked it up"
        release = runtime.releases[task.task_id]
        assert release.is_alive()
        release.join(15)
        assert not release.is_alive()
    finally:
        runtime.shutdown()
    assert task.child_session_key is not None
    outcomes = {r.label: r.outcome for r in ledger.sessions.resources(task.child_session_key)}
    browser = int(browser_pid.read_text())
    assert outcomes == {"browser": f"killed pid {browser}", "close tab 1": "ok",
                        "hanging": "timed out after 1.5s; killed", "failing": "exit 1"}
    assert all(r.released_at is not None for r in ledger.sessions.resources(task.child_session_key))
    assert closed.read_text() == "tab 1"
    wait_gone(browser)
    wait_gone(int(hang_pid.read_text()))
    assert ledger.tasks.require(task.task_id).status == TaskStatus.SUCCEEDED  # cleanup failures mask nothing
    with ledger.db.read() as conn:
        session = conn.execute(liveness.sessions.select().where(
            liveness.sessions.c.session_key == task.child_session_key)).mappings().one()
    assert session["ended_at"] is not None


def test_a_process_without_the_run_marker_is_left_alone(ledger: Ledger) -> None:
    import subprocess

    stranger = subprocess.Popen(["sleep", "30"], start_new_session=True, env={**os.environ, RUN_MARKER: "other"})
    try:
        ledger.sessions.track_process("agent:main:subagent:x", stranger.pid, "run-x", label="not ours")
        [released] = resources.release_session(ledger, "agent:main:subagent:x")
        assert (released.outcome, released.ok) == (f"pid {stranger.pid} already gone", True)
        assert stranger.poll() is None  # still running: a reused pid is never killed
        assert resources.release_session(ledger, "agent:main:subagent:x") == []  # released once
    finally:
        stranger.kill()
        stranger.wait()


def test_tracking_refuses_bad_input(ledger: Ledger) -> None:
    with pytest.raises(InvalidInput):
        ledger.sessions.track_process("agent:main:s", 0, "run")
    with pytest.raises(InvalidInput):
        ledger.sessions.track_process("agent:main:s", 1234, " ")
    with pytest.raises(InvalidInput):
        ledger.sessions.track_cleanup("agent:main:s", [])
    with pytest.raises(InvalidInput):
        ledger.sessions.track_cleanup("agent:main:s", "close-tab 1")  # type: ignore[arg-type]
    [missing] = [ledger.sessions.track_cleanup("agent:main:s", ["no-such-cleanup-binary-xyz"])]
    [released] = resources.release_session(ledger, "agent:main:s")
    assert released.resource.resource_id == missing.resource_id
    assert released.outcome.startswith("cannot start 'no-such-cleanup-binary-xyz'") and not released.ok
