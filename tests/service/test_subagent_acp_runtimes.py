"""The subagent and acp runtimes on both engines, against real child processes and a real ACP agent
(tests/e2e/acp_echo_agent.py, written with the same `agent-client-protocol` package).
REFERENCE §11 scenario 27 (cancel by runtime) for both."""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from flowledger import FrozenClock, Ledger, TaskStatus
from flowledger.scheduler.runtimes.acp import AcpRuntime
from flowledger.scheduler.runtimes.subagent import SubagentRuntime
from flowledger.tasks.core.states import Runtime
from flowledger.tasks.runs import liveness

SESSION = "agent:main:main"
AGENT = [sys.executable, str(Path(__file__).resolve().parents[1] / "e2e" / "acp_echo_agent.py")]


@pytest.fixture
def subagents(ledger: Ledger):  # type: ignore[no-untyped-def]
    runtime = SubagentRuntime(ledger, kill_grace=timedelta(milliseconds=300))
    ledger.tasks.cancel_adapters[Runtime.SUBAGENT] = runtime
    yield runtime
    runtime.shutdown()


@pytest.fixture
def acp(ledger: Ledger):  # type: ignore[no-untyped-def]
    runtime = AcpRuntime(ledger, kill_grace=timedelta(seconds=2))
    ledger.tasks.cancel_adapters[Runtime.ACP] = runtime
    yield runtime
    runtime.shutdown()


def _session(ledger: Ledger, key: str) -> liveness.Session | None:
    with ledger.db.read() as conn:
        return liveness.get_session(conn, key)


def _wait_status(ledger: Ledger, task_id: str, status: TaskStatus) -> None:
    deadline = time.monotonic() + 10
    while ledger.tasks.require(task_id).status != status:
        assert time.monotonic() < deadline, ledger.tasks.require(task_id)
        time.sleep(0.02)


# --- subagent ----------------------------------------------------------------------------------------


def test_subagent_progress_and_result(ledger: Ledger, subagents: SubagentRuntime) -> None:
    script = "print('PROGRESS: reading'); print('PROGRESS: writing'); print('Summary line 1'); print('line 2')"
    task = subagents.spawn(task="summarise", target=[sys.executable, "-c", script], requester_session_key=SESSION)
    assert task.runtime == Runtime.SUBAGENT and task.child_session_key
    done = subagents.wait(task.task_id, 10)
    assert done is not None and done.status == TaskStatus.SUCCEEDED
    assert done.progress_summary == "writing" and done.terminal_summary == "Summary line 1 line 2"
    session = _session(ledger, task.child_session_key)
    assert session is not None and session.kind == "subagent" and session.parent_session_key == SESSION
    kinds = [e.kind for e in ledger.tasks.events(task.task_id)]
    assert kinds.count("progress") == 2


def test_subagent_runs_a_python_callable(ledger: Ledger, subagents: SubagentRuntime) -> None:
    task = subagents.spawn(task="quote me", target=["json:dumps"], requester_session_key=SESSION)
    done = subagents.wait(task.task_id, 10)
    assert done is not None and done.status == TaskStatus.SUCCEEDED and done.terminal_summary == '"quote me"'


def test_subagent_failure_does_not_replay_its_reply_text(ledger: Ledger, subagents: SubagentRuntime) -> None:
    script = "import sys; print('half a reply'); print('bad input', file=sys.stderr); sys.exit(2)"
    task = subagents.spawn(task="t", target=[sys.executable, "-c", script], requester_session_key=SESSION)
    done = subagents.wait(task.task_id, 10)
    assert done is not None and done.status == TaskStatus.FAILED
    assert done.error == "exit code 2: bad input" and done.terminal_summary is None


def test_subagent_cancel_kills_the_child(ledger: Ledger, subagents: SubagentRuntime) -> None:
    task = subagents.spawn(task="t", target=["sleep", "30"], requester_session_key=SESSION)
    result = ledger.tasks.cancel(task.task_id)
    assert result.cancelled
    done = subagents.wait(task.task_id, 10)
    assert done is not None and done.status == TaskStatus.CANCELLED and done.error == "Cancelled by operator."


def test_subagent_not_running_here_refuses_the_cancel(ledger: Ledger, subagents: SubagentRuntime,
                                                       clock: FrozenClock) -> None:
    """Scenario 27: an admin kill that finds nothing fails with "Subagent was not running."."""
    task = ledger.tasks.create(runtime="subagent", task="t", owner_key=SESSION,
                               child_session_key="agent:main:subagent:elsewhere", run_id="sa-1", status="running")
    result = ledger.tasks.cancel(task.task_id)
    assert not result.cancelled and result.reason == "Subagent was not running."


def test_subagent_timeout(ledger: Ledger, subagents: SubagentRuntime) -> None:
    created = ledger.tasks.create(runtime="subagent", task="t", owner_key=SESSION, run_id="sa-t",
                                  child_session_key="agent:main:subagent:t")
    subagents.start(created, ["sleep", "30"], timeout=timedelta(milliseconds=200))
    done = subagents.wait(created.task_id, 10)
    assert done is not None and done.status == TaskStatus.TIMED_OUT


# --- acp ---------------------------------------------------------------------------------------------


def test_acp_end_turn_succeeds_and_the_oneshot_session_closes(ledger: Ledger, acp: AcpRuntime) -> None:
    task = acp.spawn(task="hello there", agent=AGENT, requester_session_key=SESSION)
    done = acp.wait(task.task_id, 15)
    assert done is not None and done.status == TaskStatus.SUCCEEDED
    assert done.terminal_summary == "echo: hello there"
    session = _session(ledger, task.child_session_key or "")
    assert session is not None and session.kind == "acp" and session.mode == "oneshot" and session.acp is None


def test_acp_persistent_session_keeps_its_metadata(ledger: Ledger, acp: AcpRuntime) -> None:
    task = acp.spawn(task="hi", agent=AGENT, requester_session_key=SESSION, mode="persistent")
    assert acp.wait(task.task_id, 15) is not None
    session = _session(ledger, task.child_session_key or "")
    assert session is not None and session.mode == "persistent"
    assert session.acp is not None and session.acp["state"] == "idle" and session.acp["session_id"]


@pytest.mark.parametrize(("text", "status", "error"), [
    ("refuse this", TaskStatus.FAILED, "ACP agent refused the prompt"),
    ("crash now", TaskStatus.FAILED, "ACP agent failed: the agent exited during session/prompt (exit code 3)"),
])
def test_acp_stop_reasons_and_crashes_map_to_statuses(ledger: Ledger, acp: AcpRuntime, text: str,
                                                      status: TaskStatus, error: str) -> None:
    task = acp.spawn(task=text, agent=AGENT, requester_session_key=SESSION)
    done = acp.wait(task.task_id, 15)
    assert done is not None and done.status == status and done.error == error


def test_acp_cancel_sends_the_protocol_cancel(ledger: Ledger, acp: AcpRuntime) -> None:
    task = acp.spawn(task="sleep 30", agent=AGENT, requester_session_key=SESSION)
    deadline = time.monotonic() + 10
    while (_session(ledger, task.child_session_key or "").acp or {}).get("state") != "running":  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    started = time.monotonic()
    assert ledger.tasks.cancel(task.task_id, "enough").cancelled
    done = acp.wait(task.task_id, 10)
    assert done is not None and done.status == TaskStatus.CANCELLED and done.error == "enough"
    # The agent answered the protocol cancel itself (stop reason `cancelled`), well inside the kill grace.
    assert time.monotonic() - started < 2


def test_acp_timeout(ledger: Ledger, acp: AcpRuntime) -> None:
    created = ledger.tasks.create(runtime="acp", task="sleep 30", owner_key=SESSION, run_id="acp-t",
                                  child_session_key="agent:main:acp:t")
    acp.start(created, AGENT, timeout=timedelta(milliseconds=500))
    done = acp.wait(created.task_id, 15)
    assert done is not None and done.status == TaskStatus.TIMED_OUT


def test_acp_agent_that_cannot_start_fails_with_one_line(ledger: Ledger, acp: AcpRuntime, tmp_path: Path) -> None:
    # Found but not startable (the launch check passes; the exec fails): said as the other runtimes say it.
    agent = tmp_path / "not-an-executable-format"
    agent.write_bytes(b"\x00\x01\x02")
    agent.chmod(0o755)
    task = acp.spawn(task="hi", agent=[str(agent)], requester_session_key=SESSION)
    done = acp.wait(task.task_id, 15)
    assert done is not None and done.status == TaskStatus.FAILED
    assert done.error == f"ACP agent failed: cannot start '{agent}': Exec format error"
