"""Isolation: one owner can neither see, cancel, steer nor spawn into another owner's flows through the
owner-scoped API; a producer's run-scoped update reaches only its own task (REFERENCE §11 scenario 13); the
/tasks board fallback shows counts only; terminal output never carries a user's control characters."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flowledger import Ledger
from flowledger.cli.main import run
from flowledger.flows.models import UpdateReason
from flowledger.tasks.core.errors import InvalidInput, ParentFlowLinkError
from flowledger.tasks.core.states import TaskStatus
from flowledger.tasks.runs import liveness

VICTIM = "agent:victim:main"
ATTACKER = "agent:attacker:main"


def test_an_owner_bound_view_cannot_see_steer_cancel_or_spawn_into_another_owners_flow(ledger: Ledger) -> None:
    victim, attacker = ledger.flows.bind(VICTIM), ledger.flows.bind(ATTACKER)
    flow = victim.create_managed("ctl/victim", "private goal", status="running")
    child = victim.run_task(flow.flow_id, runtime="acp", task="victim work", child_session_key="agent:victim:acp:c",
                            run_id="run-victim", status="running")
    assert child.created
    own = attacker.create_managed("ctl/attacker", "attacker goal")

    assert attacker.get(flow.flow_id) is None
    assert attacker.resolve(flow.flow_id) is None and attacker.resolve(VICTIM) is None
    assert [f.flow_id for f in attacker.list()] == [own.flow_id]
    assert attacker.task_summary(flow.flow_id) is None
    for op in (attacker.set_waiting, attacker.resume, attacker.finish, attacker.fail, attacker.request_cancel):
        result = op(flow.flow_id, flow.revision)
        assert (result.applied, result.reason) == (False, UpdateReason.NOT_FOUND)
    assert attacker.update(flow.flow_id, flow.revision, {"goal": "hijacked"}).reason == UpdateReason.NOT_FOUND
    cancel = attacker.cancel(flow.flow_id)
    assert (cancel.found, cancel.cancelled) == (False, False)
    spawn = attacker.run_task(flow.flow_id, runtime="cli", task="smuggled")
    assert (spawn.found, spawn.created) == (False, False)
    # Spawning into its own flow cannot borrow the victim's identity either: the flow's owner wins.
    own_child = attacker.run_task(own.flow_id, runtime="cli", task="mine", owner_key=VICTIM, run_id="run-att")
    assert own_child.created and own_child.task is not None and own_child.task.owner_key == ATTACKER
    # …and the unscoped task door checks the link too (REFERENCE §11 scenario 4).
    with pytest.raises(ParentFlowLinkError, match=r"Task ownerKey must match parent flow ownerKey\."):
        ledger.tasks.create(runtime="cli", task="smuggled", owner_key=ATTACKER, parent_flow_id=flow.flow_id)

    after = ledger.flows.get(flow.flow_id)
    assert after is not None and after.goal == "private goal" and after.cancel_requested_at is None
    assert after.status == flow.status
    victim_task = ledger.tasks.get("run-victim")
    assert victim_task is not None and victim_task.status == TaskStatus.RUNNING
    assert {t.task for t in ledger.tasks.list() if t.parent_flow_id == flow.flow_id} == {"victim work"}


def test_an_owner_bound_view_cannot_borrow_another_owners_session(ledger: Ledger, state_dir: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 12 item 2: a child or requester session of another agent would make `tasks show <their key>` resolve
    to the intruder's task and list it on their board."""
    attacker = ledger.flows.bind(ATTACKER)
    own = attacker.create_managed("ctl/attacker", "attacker goal", status="running")
    for fields in ({"child_session_key": VICTIM}, {"child_session_key": "agent:victim:acp:x"},
                   {"requester_session_key": VICTIM}, {"agent_id": "victim"}, {"requester_agent_id": "victim"}):
        result = attacker.run_task(own.flow_id, runtime="acp", task="borrowed", run_id="run-b", **fields)
        assert (result.found, result.created) == (True, False), fields
        assert result.reason is not None and "victim" in result.reason
    assert ledger.tasks.get(VICTIM) is None and ledger.tasks.list() == []
    # The owner's own agent's sessions, and a session the owner spawned, stay usable.
    with ledger.db.write() as conn:
        liveness.upsert_session(conn, "spawned:by:attacker", ledger.clock.now(), kind="subagent",
                                spawned_by=ATTACKER)
    for key in ("agent:attacker:acp:c1", "agent:ATTACKER:acp:c2", "spawned:by:attacker", ATTACKER):
        made = attacker.run_task(own.flow_id, runtime="acp", task="own", child_session_key=key)
        assert made.created, (key, made.reason)
    url = ledger.db.engine.url.render_as_string(hide_password=False)
    capsys.readouterr()
    code = run(["--state-dir", str(state_dir), "--database-url", url, "tasks", "show", VICTIM])
    assert code == 1 and "Task not found" in capsys.readouterr().err


@pytest.mark.parametrize("op", ["ingest", "fail", "complete", "progress"])
def test_run_scope_isolation_scenario_13(ledger: Ledger, op: str) -> None:
    victim = ledger.tasks.create(runtime="acp", task="victim", owner_key=VICTIM,
                                 child_session_key="agent:victim:acp:child", run_id="run-shared", status="running")
    attacker = ledger.tasks.create(runtime="cli", task="attacker", owner_key="agent:attacker:parent",
                                   child_session_key=ATTACKER, run_id="run-shared", status="running")
    if op == "ingest":
        ledger.tasks.ingest("run-shared", "lifecycle", {"phase": "error", "error": "pwned"}, session_key=ATTACKER)
    elif op == "fail":
        ledger.tasks.fail("run-shared", error="pwned", session_key=ATTACKER)
    elif op == "complete":
        ledger.tasks.complete("run-shared", summary="pwned", session_key=ATTACKER)
    else:
        ledger.tasks.progress("run-shared", "pwned", session_key=ATTACKER)
    v, a = ledger.tasks.get(victim.task_id), ledger.tasks.get(attacker.task_id)
    assert v is not None and a is not None
    assert v.status == TaskStatus.RUNNING and v.error is None and v.progress_summary is None
    assert v.terminal_summary is None and v.last_event_at == victim.last_event_at
    assert [e.kind for e in ledger.tasks.events(victim.task_id)] == ["running"]
    assert a.status != TaskStatus.RUNNING or a.progress_summary == "pwned"


def _cli(ledger: Ledger, state_dir: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    url = ledger.db.engine.url.render_as_string(hide_password=False)
    capsys.readouterr()
    code = run(["--state-dir", str(state_dir), "--database-url", url, *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_board_fallback_shows_counts_only(ledger: Ledger, state_dir: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    ledger.tasks.create(runtime="acp", task="PRIVATE task text", label="PRIVATE label", owner_key="agent:main:one",
                        child_session_key="agent:main:acp:one", run_id="r1", status="running",
                        progress_summary="PRIVATE progress")
    ledger.tasks.create(runtime="cli", task="PRIVATE other", owner_key="agent:main:two", run_id="r2",
                        status="queued", progress_summary="PRIVATE error")
    code, out, _ = _cli(ledger, state_dir, capsys, "tasks", "board", "--session", "agent:main:elsewhere")
    assert code == 0
    assert "PRIVATE" not in out
    assert "Agent-local: 2 active · 2 total" in out


NASTY = "\x1b[31mred\x1b[0m\nsecond line\tTAB\x07bell\x1b]0;pwned title\x07\x01\x9b2J"
_BAD = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _assert_terminal_safe(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text and "\t" not in text and "\x9b" not in text
    assert not _BAD.search(text.replace("\n", "")), repr(text)


def test_nul_in_text_is_refused_as_bad_input_on_every_engine(ledger: Ledger) -> None:
    with pytest.raises(InvalidInput, match="NUL"):
        ledger.tasks.create(runtime="cli", task="a\x00b", owner_key=VICTIM)
    with pytest.raises(InvalidInput, match="NUL"):
        ledger.flows.create_managed(VICTIM, "ctl", "goal\x00")
    assert ledger.tasks.list() == [] and ledger.flows.list() == []


def test_text_output_escapes_control_characters_and_strips_ansi(
    ledger: Ledger, state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flow = ledger.flows.create_managed(VICTIM, "ctl", f"goal {NASTY}", status="running")
    child = ledger.flows.run_task(flow.flow_id, runtime="acp", task=f"task {NASTY}", label=f"label {NASTY}",
                                  child_session_key=f"agent:victim:acp:{NASTY}", run_id="run-nasty",
                                  status="running", progress_summary=f"progress {NASTY}")
    assert child.created and child.task is not None
    ledger.tasks.create(runtime="cli", task=f"other {NASTY}", owner_key=VICTIM, run_id="run-nasty-2",
                        status="failed", error=f"error {NASTY}", label=NASTY)
    views = [("tasks", "list"), ("tasks", "show", child.task.task_id), ("tasks", "show", "run-nasty-2"),
             ("tasks", "audit"), ("tasks", "flow", "list"), ("tasks", "flow", "show", flow.flow_id),
             ("tasks", "board", "--session", VICTIM), ("tasks", "events", "run-nasty-2"), ("status",)]
    for args in views:
        code, out, err = _cli(ledger, state_dir, capsys, *args)
        assert code in {0, 1}, (args, code, err)
        _assert_terminal_safe(out)
        _assert_terminal_safe(err)
    code, out, _ = _cli(ledger, state_dir, capsys, "tasks", "list")
    lines = out.splitlines()
    assert [line for line in lines if "error " in line], out  # the failed task's row shows its (escaped) error
    # An embedded newline splits nothing: no line starts with the text that followed it.
    assert not [line for line in lines if line.startswith(("second line", "TAB"))], out
    # A lookup that does not exist is echoed back escaped as well.
    code, _, err = _cli(ledger, state_dir, capsys, "tasks", "show", f"nope{NASTY}")
    assert code == 1
    _assert_terminal_safe(err)
