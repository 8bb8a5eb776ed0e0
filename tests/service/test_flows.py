"""Task Flow service: REFERENCE §11 scenarios 35–43, explicit JSON null, revision conflicts, owner-bound views,
and the many-task mirrored rule. Every test runs on a SQLite file and on PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from flowledger import FrozenClock, Ledger, ParentFlowLinkError, TaskStatus
from flowledger.flows.models import ABSENT, LEGACY_CONTROLLER, FlowStatus, SyncMode, UpdateReason
from flowledger.flows.service import CANCEL_ATTEMPTS, CONTROLLER_REQUIRED
from flowledger.tasks.core.errors import InvalidInput
from flowledger.tasks.core.tables import flow_runs

OWNER = "agent:main:main"


def ms(clock: FrozenClock, n: int):  # a time n ms after the test's epoch, like the reference's small integers
    return clock.now() + timedelta(milliseconds=n)


def test_managed_flow_lifecycle_scenario_35(ledger: Ledger, clock: FrozenClock) -> None:
    flows = ledger.flows
    flow = flows.create_managed(OWNER, "tests/managed", "Investigate")
    assert (flow.revision, flow.status, flow.sync_mode) == (0, FlowStatus.QUEUED, SyncMode.MANAGED)

    waiting = flows.set_waiting(flow.flow_id, 0, wait={"kind": "task", "taskId": "task-123"})
    assert waiting.applied and waiting.flow is not None
    assert (waiting.flow.revision, waiting.flow.status) == (1, FlowStatus.WAITING)

    stale = flows.update(flow.flow_id, 0, {"goal": "other"})
    assert not stale.applied and stale.reason == UpdateReason.REVISION_CONFLICT
    assert stale.current is not None and stale.current.revision == 1

    resumed = flows.resume(flow.flow_id, 1, status="running")
    assert resumed.flow is not None and resumed.flow.revision == 2 and resumed.flow.wait is None
    assert resumed.flow.status == FlowStatus.RUNNING

    cancel_at = ms(clock, 400)
    requested = flows.request_cancel(flow.flow_id, 2, cancel_requested_at=cancel_at)
    assert requested.flow is not None and requested.flow.revision == 3
    assert requested.flow.cancel_requested_at == cancel_at
    assert requested.flow.status == FlowStatus.RUNNING  # the intent alone changes no status

    failed = flows.fail(flow.flow_id, 3, blocked_summary="Task runner failed.", ended_at=ms(clock, 500))
    assert failed.flow is not None and failed.flow.revision == 4 and failed.flow.status == FlowStatus.FAILED
    assert failed.flow.ended_at == ms(clock, 500) and failed.flow.blocked_summary == "Task runner failed."
    stored = flows.get(flow.flow_id)
    assert stored == failed.flow

    assert flows.delete(flow.flow_id)
    assert flows.get(flow.flow_id) is None
    assert flows.update(flow.flow_id, 4, {"goal": "x"}).reason == UpdateReason.NOT_FOUND


def test_finish_sets_ended_at_and_clears_wait(ledger: Ledger, clock: FrozenClock) -> None:
    flow = ledger.flows.create_managed(OWNER, "tests/managed", "Goal", wait={"kind": "x"})
    clock.advance(timedelta(seconds=3))
    done = ledger.flows.finish(flow.flow_id, 0, state={"ok": True})
    assert done.flow is not None
    assert done.flow.status == FlowStatus.SUCCEEDED and done.flow.ended_at == clock.now()
    assert done.flow.wait is None and done.flow.state == {"ok": True}


def test_set_waiting_with_blocker_is_blocked(ledger: Ledger) -> None:
    flow = ledger.flows.create_managed(OWNER, "tests/managed", "Goal")
    result = ledger.flows.set_waiting(flow.flow_id, 0, blocked_task_id="task-9", blocked_summary="Needs input")
    assert result.flow is not None and result.flow.status == FlowStatus.BLOCKED
    assert result.flow.blocked_task_id == "task-9"


def test_controller_required_scenario_36(ledger: Ledger) -> None:
    with pytest.raises(InvalidInput, match=CONTROLLER_REQUIRED):
        ledger.flows.create_managed(OWNER, None, "Goal")
    flow = ledger.flows.create_managed(OWNER, "tests/managed", "Goal")
    with pytest.raises(InvalidInput, match=CONTROLLER_REQUIRED):
        ledger.flows.update(flow.flow_id, 0, {"controller_id": None})
    with pytest.raises(InvalidInput, match="ownerKey is required"):
        ledger.flows.create_managed("  ", "c", "Goal")


def test_legacy_restore_scenario_37(ledger: Ledger) -> None:
    flow = ledger.flows.create_managed(OWNER, "tests/managed", "Goal")
    legacy = ledger.flows.create_mirrored(OWNER, "Old")
    with ledger.db.write() as conn:
        conn.execute(update(flow_runs).where(flow_runs.c.flow_id == flow.flow_id).values(controller_id=None))
        conn.execute(update(flow_runs).where(flow_runs.c.flow_id == legacy.flow_id).values(sync_mode="task_mirrored"))
    restored = ledger.flows.get(flow.flow_id)
    assert restored is not None and restored.controller_id == LEGACY_CONTROLLER
    mirrored = ledger.flows.get(legacy.flow_id)
    assert mirrored is not None and mirrored.sync_mode == SyncMode.MIRRORED


def test_mirroring_blocked_and_managed_untouched_scenario_38(ledger: Ledger) -> None:
    task = ledger.tasks.create(runtime="acp", task="Patch the repo", owner_key=OWNER,
                               child_session_key="agent:main:acp:c1", run_id="run-b", status="running")
    ledger.tasks.complete("run-b", summary="Writable session required.", outcome="blocked")
    mirrored = ledger.flows.get(task.parent_flow_id or "")
    assert mirrored is not None and mirrored.status == FlowStatus.BLOCKED
    assert mirrored.blocked_task_id == task.task_id and mirrored.blocked_summary == "Writable session required."

    managed = ledger.flows.create_managed(OWNER, "tests/managed", "Goal")
    waiting = ledger.flows.set_waiting(managed.flow_id, 0, wait={"kind": "external_event"}).flow
    assert waiting is not None
    ledger.flows.run_task(managed.flow_id, runtime="acp", task="child", child_session_key="agent:main:acp:c2",
                          run_id="run-c", status="running")
    ledger.tasks.progress("run-c", "still going")
    after = ledger.flows.get(managed.flow_id)
    assert after is not None and after.status == FlowStatus.WAITING and after.wait == {"kind": "external_event"}
    assert after.revision == waiting.revision


@pytest.mark.parametrize("value", [None, {"a": [1, None]}, [], 0, "text"])
def test_json_null_survives_round_trip_scenario_39(ledger: Ledger, value: object) -> None:
    flow = ledger.flows.create_managed(OWNER, "tests/managed", "Goal", state=value, wait=value)
    stored = ledger.flows.get(flow.flow_id)
    assert stored is not None and stored.state == value and stored.wait == value
    assert stored.state is not ABSENT
    resumed = ledger.flows.resume(flow.flow_id, 0, state=value).flow
    assert resumed is not None and resumed.state == value and resumed.wait is None
    again = ledger.flows.get(flow.flow_id)
    assert again is not None and again.state == value and again.wait is None and again.wait is not ABSENT
    with ledger.db.read() as conn:
        raw = conn.execute(select(flow_runs.c.wait_json).where(flow_runs.c.flow_id == flow.flow_id)).scalar()
    assert raw == "null"


def test_absent_json_is_sql_null(ledger: Ledger) -> None:
    flow = ledger.flows.create_managed(OWNER, "tests/managed", "Goal")
    with ledger.db.read() as conn:
        raw = conn.execute(select(flow_runs.c.state_json).where(flow_runs.c.flow_id == flow.flow_id)).scalar()
    assert raw is None
    stored = ledger.flows.get(flow.flow_id)
    assert stored is not None and stored.state is ABSENT and stored.to_json()["state"] is None


def test_one_task_flows_scenario_40(ledger: Ledger, clock: FrozenClock) -> None:
    task = ledger.tasks.create(runtime="subagent", task="Summarise the thread", owner_key=OWNER,
                               child_session_key="agent:main:subagent:s1", run_id="run-s", status="running")
    assert task.parent_flow_id is not None
    flow = ledger.flows.get(task.parent_flow_id)
    assert flow is not None
    assert (flow.sync_mode, flow.status, flow.goal, flow.notify_policy.value) == (
        SyncMode.MIRRORED, FlowStatus.RUNNING, "Summarise the thread", "done_only")
    ended = ms(clock, 40)
    ledger.tasks.complete("run-s", ended_at=ended)
    flow = ledger.flows.get(task.parent_flow_id)
    assert flow is not None and flow.status == FlowStatus.SUCCEEDED and flow.ended_at == ended

    cli = ledger.tasks.create(runtime="cli", task="make", owner_key=OWNER, delivery_status="not_applicable")
    assert cli.parent_flow_id is None
    system = ledger.tasks.create(runtime="acp", task="x", scope_kind="system", child_session_key="agent:x:acp:1")
    assert system.parent_flow_id is None

    blocked = ledger.tasks.create(runtime="acp", task="Apply patch", owner_key=OWNER,
                                  child_session_key="agent:main:acp:b", run_id="run-bl", status="running")
    ledger.tasks.complete("run-bl", summary="Needs approval.", outcome="blocked", ended_at=ended)
    flow = ledger.flows.get(blocked.parent_flow_id or "")
    assert flow is not None and flow.status == FlowStatus.BLOCKED
    assert (flow.blocked_task_id, flow.blocked_summary, flow.ended_at) == (blocked.task_id, "Needs approval.", ended)


def test_parent_flow_link_checks(ledger: Ledger) -> None:
    flow = ledger.flows.create_managed(OWNER, "tests/managed", "Goal")
    with pytest.raises(ParentFlowLinkError, match="ownerKey must match"):
        ledger.tasks.create(runtime="cli", task="x", owner_key="agent:other:main", parent_flow_id=flow.flow_id)
    ledger.flows.request_cancel(flow.flow_id, 0)
    with pytest.raises(ParentFlowLinkError, match="cancellation has already been requested"):
        ledger.tasks.create(runtime="cli", task="x", owner_key=OWNER, parent_flow_id=flow.flow_id)


def test_flow_cancel_cascade_scenario_41(ledger: Ledger) -> None:
    flow = ledger.flows.create_managed(OWNER, "tests/managed", "Goal")
    child = ledger.flows.run_task(flow.flow_id, runtime="acp", task="child", child_session_key="agent:main:acp:k",
                                  run_id="run-k", status="running")
    assert child.created and child.task is not None and child.task.parent_flow_id == flow.flow_id
    result = ledger.flows.cancel(flow.flow_id)
    assert (result.found, result.cancelled) == (True, True)
    assert result.flow is not None and result.flow.status == FlowStatus.CANCELLED
    task = ledger.tasks.get(child.task.task_id)
    assert task is not None and task.status == TaskStatus.CANCELLED
    again = ledger.flows.cancel(flow.flow_id)
    assert (again.cancelled, again.reason) == (False, "Flow is already cancelled.")
    assert ledger.flows.cancel("missing").found is False


def _driver_saves_before_each_cancel_request(ledger: Ledger, monkeypatch: pytest.MonkeyPatch, times: int) -> None:
    """A real concurrent write (the driver recording its step) lands between each of the first `times` cancel
    reads and their revision-checked request."""
    original = ledger.flows.request_cancel
    races = iter(range(times))

    def racing(flow_id: str, expected_revision: int, **kw: object) -> object:
        if next(races, None) is not None:
            current = ledger.flows.get(flow_id)
            assert current is not None
            assert ledger.flows.set_waiting(flow_id, current.revision, current_step="step saved").applied
        return original(flow_id, expected_revision, **kw)

    monkeypatch.setattr(ledger.flows, "request_cancel", racing)


def test_cancel_that_loses_a_revision_race_reads_again_and_cancels(ledger: Ledger,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    flow = ledger.flows.create_managed(OWNER, "tests/managed", "Goal")
    _driver_saves_before_each_cancel_request(ledger, monkeypatch, CANCEL_ATTEMPTS - 1)
    result = ledger.flows.cancel(flow.flow_id)
    assert (result.found, result.cancelled, result.reason) == (True, True, None)
    assert result.flow is not None and result.flow.status == FlowStatus.CANCELLED


def test_cancel_refuses_when_every_attempt_loses_the_race(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    flow = ledger.flows.create_managed(OWNER, "tests/managed", "Goal")
    _driver_saves_before_each_cancel_request(ledger, monkeypatch, CANCEL_ATTEMPTS)
    result = ledger.flows.cancel(flow.flow_id)
    assert (result.found, result.cancelled) == (True, False)
    assert result.reason == "Flow changed while cancellation was in progress."
    stored = ledger.flows.get(flow.flow_id)
    assert stored is not None and stored.cancel_requested_at is None and stored.status == FlowStatus.WAITING


class _SlowAcp:
    def cancel(self, task: object, reason: str | None) -> str | None:
        return "ACP runtime did not stop the session."


def test_cancel_with_slow_child_then_deferred_finalisation_scenario_42(ledger: Ledger, clock: FrozenClock) -> None:
    from flowledger import Runtime

    ledger.tasks.cancel_adapters[Runtime.ACP] = _SlowAcp()
    flow = ledger.flows.create_managed(OWNER, "tests/managed", "Goal")
    ledger.flows.run_task(flow.flow_id, runtime="acp", task="child", child_session_key="agent:main:acp:slow",
                          run_id="run-slow", status="running")
    result = ledger.flows.cancel(flow.flow_id)
    assert (result.found, result.cancelled, result.reason) == (True, False, "One or more child tasks are still active.")
    assert result.flow is not None and result.flow.status == FlowStatus.QUEUED
    assert result.flow.cancel_requested_at is not None
    # The intent is durable: a fresh read (another process) sees it.
    stored = ledger.flows.get(flow.flow_id)
    assert stored is not None and stored.cancel_requested_at == result.flow.cancel_requested_at

    ended = ms(clock, 50)
    [child] = ledger.tasks.fail("run-slow", status="cancelled", ended_at=ended)
    assert child.status == TaskStatus.CANCELLED
    final = ledger.flows.get(flow.flow_id)
    assert final is not None and final.status == FlowStatus.CANCELLED and final.ended_at == ended


def test_no_children_after_cancel_and_owner_scope_scenario_43(ledger: Ledger) -> None:
    flow = ledger.flows.create_managed(OWNER, "tests/managed", "Goal")
    ledger.flows.request_cancel(flow.flow_id, 0)
    result = ledger.flows.run_task(flow.flow_id, runtime="cli", task="late")
    assert (result.found, result.created, result.reason) == (
        True, False, "Flow cancellation has already been requested.")

    other = ledger.flows.create_managed(OWNER, "tests/managed", "Second")
    intruder = ledger.flows.bind("agent:intruder:main")
    assert intruder.cancel(other.flow_id).found is False
    assert intruder.run_task(other.flow_id, runtime="cli", task="x").found is False
    assert intruder.get(other.flow_id) is None
    assert intruder.set_waiting(other.flow_id, 0).reason == UpdateReason.NOT_FOUND
    owner = ledger.flows.bind(OWNER)
    spawned = owner.run_task(other.flow_id, runtime="cli", task="x")
    assert spawned.created
    stored = ledger.flows.get(other.flow_id)
    assert stored is not None and stored.status == FlowStatus.QUEUED
    mirrored = ledger.flows.create_mirrored(OWNER, "Watched")
    assert owner.finish(mirrored.flow_id, 0).reason == UpdateReason.NOT_MANAGED


def test_run_task_refusals(ledger: Ledger) -> None:
    assert ledger.flows.run_task("nope", runtime="cli", task="x").reason == "Flow not found."
    mirrored = ledger.flows.create_mirrored(OWNER, "Watched")
    assert ledger.flows.run_task(mirrored.flow_id, runtime="cli", task="x").reason == (
        "Flow does not accept managed child tasks.")
    flow = ledger.flows.create_managed(OWNER, "tests/managed", "Goal")
    ledger.flows.finish(flow.flow_id, 0)
    assert ledger.flows.run_task(flow.flow_id, runtime="cli", task="x").reason == "Flow is already succeeded."
    blocked = ledger.flows.create_managed(OWNER, "tests/managed", "Blocked")
    ledger.flows.set_waiting(blocked.flow_id, 0, blocked_summary="waiting on a human")
    assert ledger.flows.run_task(blocked.flow_id, runtime="cli", task="x").created  # blocked is not terminal here


def test_owner_lookup_prefers_live_flow(ledger: Ledger, clock: FrozenClock) -> None:
    live = ledger.flows.create_managed(OWNER, "tests/managed", "Still running", status="running")
    clock.advance(timedelta(seconds=1))
    done = ledger.flows.create_managed(OWNER, "tests/managed", "Finished")
    ledger.flows.finish(done.flow_id, 0)
    found = ledger.flows.get(OWNER)
    assert found is not None and found.flow_id == live.flow_id
    ledger.flows.finish(live.flow_id, 0)
    newest = ledger.flows.get(OWNER)
    assert newest is not None and newest.flow_id == done.flow_id
    assert [f.flow_id for f in ledger.flows.list()] == [done.flow_id, live.flow_id]
    assert [f.flow_id for f in ledger.flows.list("succeeded")] == [done.flow_id, live.flow_id]


def test_revision_conflict_between_two_controllers(ledger: Ledger) -> None:
    flow = ledger.flows.create_managed(OWNER, "tests/managed", "Goal")
    first = ledger.flows.resume(flow.flow_id, 0, status="running")
    second = ledger.flows.set_waiting(flow.flow_id, 0, wait="external")
    assert first.applied and not second.applied
    assert second.reason == UpdateReason.REVISION_CONFLICT and second.current == first.flow


def _child(ledger: Ledger, flow_id: str, n: int, status: str = "running") -> str:
    task = ledger.tasks.create(runtime="cli", task=f"part {n}", owner_key=OWNER, parent_flow_id=flow_id,
                               run_id=f"run-m{n}", status=status)
    return task.task_id


def test_mirrored_many_task_rule(ledger: Ledger) -> None:
    flow = ledger.flows.create_mirrored(OWNER, "Watch three jobs")
    _child(ledger, flow.flow_id, 1)
    _child(ledger, flow.flow_id, 2, "queued")
    _child(ledger, flow.flow_id, 3, "queued")

    def status() -> FlowStatus:
        current = ledger.flows.get(flow.flow_id)
        assert current is not None
        return current.status

    assert status() == FlowStatus.RUNNING
    ledger.tasks.complete("run-m1")
    assert status() == FlowStatus.QUEUED
    ledger.tasks.start("run-m2")
    ledger.tasks.fail("run-m2", error="boom")
    assert status() == FlowStatus.QUEUED  # one still queued: not finished yet
    ledger.tasks.cancel("run-m3")
    assert status() == FlowStatus.FAILED  # failed outranks cancelled and succeeded
    final = ledger.flows.get(flow.flow_id)
    assert final is not None and final.goal == "Watch three jobs" and final.ended_at is not None


def test_lost_child_makes_mirrored_flow_lost(ledger: Ledger, clock: FrozenClock) -> None:
    flow = ledger.flows.create_mirrored(OWNER, "Watch two jobs")
    _child(ledger, flow.flow_id, 1)
    _child(ledger, flow.flow_id, 2)
    ledger.tasks.complete("run-m1")

    def mark_lost(conn, now):  # what maintenance does: a guarded write through the task service
        from flowledger.tasks.core import store as task_store

        [current] = task_store.by_run_id(conn, "run-m2", for_update=True)
        lost = current.replace(status=TaskStatus.LOST, ended_at=now, error="backing session missing")
        change = ledger.tasks.apply(conn, current, lost, expected={TaskStatus.RUNNING}, now=now)
        return [change] if change else []

    clock.advance(timedelta(minutes=6))
    ledger.tasks.run_unit(mark_lost)
    current = ledger.flows.get(flow.flow_id)
    assert current is not None and current.status == FlowStatus.LOST


def test_mirrored_all_cancelled_and_linking_existing_tasks(ledger: Ledger) -> None:
    flow = ledger.flows.create_mirrored(OWNER, "Adopted")
    loose = ledger.tasks.create(runtime="cli", task="loose", owner_key=OWNER, run_id="run-loose", status="running")
    assert loose.parent_flow_id is None
    linked = ledger.flows.link_task(flow.flow_id, loose.task_id)
    assert linked.parent_flow_id == flow.flow_id
    current = ledger.flows.get(flow.flow_id)
    assert current is not None and current.status == FlowStatus.RUNNING and current.goal == "Adopted"
    result = ledger.flows.cancel(flow.flow_id)
    assert result.cancelled and result.flow is not None and result.flow.status == FlowStatus.CANCELLED


def test_one_task_flow_follows_its_task_notify_policy(ledger: Ledger) -> None:
    task = ledger.tasks.create(runtime="acp", task="Long job", owner_key=OWNER, child_session_key="agent:main:acp:n",
                               run_id="run-n", status="running")
    ledger.tasks.set_notify_policy(task.task_id, "state_changes")
    flow = ledger.flows.get(task.parent_flow_id or "")
    assert flow is not None and flow.notify_policy.value == "state_changes"
    assert flow.to_json()["sync_mode"] == "mirrored" and flow.to_json()["controller_id"] is None
