"""Flow audit and maintenance: REFERENCE §11 scenarios 44–45, each threshold at its exact boundary, and the
blocked-task repair of reference-bugs 143739. Both engines."""

from __future__ import annotations

from datetime import timedelta

from flowledger import FrozenClock, Ledger
from flowledger.flows.audit import FLOW_CODES, audit_flows, summarize_flow_findings
from flowledger.flows.maintenance import apply_flows, plan_flows
from flowledger.flows.models import FlowStatus

OWNER = "agent:main:main"
MINUTE = timedelta(minutes=1)


def codes(ledger: Ledger) -> dict[str, list[str]]:
    with ledger.db.read() as conn:
        findings = audit_flows(conn, ledger.clock.now())
    out: dict[str, list[str]] = {}
    for finding in findings:
        assert finding.kind == "task_flow"
        out.setdefault(finding.token or "", []).append(finding.code)
    return out


def maintain(ledger: Ledger, apply: bool) -> tuple[int, int]:
    now = ledger.clock.now()
    with ledger.db.read() as conn:
        plan = plan_flows(conn, now)
    if not apply:
        return plan.reconciled, plan.pruned
    return apply_flows(ledger, plan, now)


def test_missing_linked_tasks_boundary_scenario_44(ledger: Ledger, clock: FrozenClock) -> None:
    flow = ledger.flows.create_managed(OWNER, "tests/c", "Goal", status="running")
    clock.advance(30 * MINUTE - timedelta(milliseconds=1))
    assert codes(ledger) == {}
    clock.advance(timedelta(milliseconds=1))
    with ledger.db.read() as conn:
        findings = audit_flows(conn, clock.now())
    assert [(f.code, f.severity.value) for f in findings] == [("stale_running", "error"),
                                                             ("missing_linked_tasks", "error")]
    assert findings[0].age_ms == 30 * 60_000 and findings[0].status == "running" and findings[0].token == flow.flow_id


def test_fresh_flow_then_stale_and_waiting_severity(ledger: Ledger, clock: FrozenClock) -> None:
    flow = ledger.flows.create_managed(OWNER, "tests/c", "Goal")
    ledger.flows.set_waiting(flow.flow_id, 0)
    clock.advance(5 * MINUTE)
    assert codes(ledger) == {}
    clock.advance(26 * MINUTE)
    with ledger.db.read() as conn:
        findings = audit_flows(conn, clock.now())
    assert sorted((f.code, f.severity.value) for f in findings) == [("missing_linked_tasks", "warn"),
                                                                    ("stale_waiting", "warn")]
    summary = summarize_flow_findings(findings)
    assert set(summary["by_code"]) == set(FLOW_CODES) and len(FLOW_CODES) == 8
    assert (summary["total"], summary["warnings"], summary["errors"]) == (2, 2, 0)


def test_wait_state_or_active_child_suppresses_missing_linked_tasks(ledger: Ledger, clock: FrozenClock) -> None:
    waiting = ledger.flows.create_managed(OWNER, "tests/c", "Waits")
    ledger.flows.set_waiting(waiting.flow_id, 0, wait={"kind": "external_event"})
    busy = ledger.flows.create_managed(OWNER, "tests/c", "Busy", status="running")
    ledger.flows.run_task(busy.flow_id, runtime="cli", task="child", run_id="run-busy", status="running")
    clock.advance(31 * MINUTE)
    found = codes(ledger)
    assert found[waiting.flow_id] == ["stale_waiting"]
    assert found[busy.flow_id] == ["stale_running"]


def test_blocked_task_missing_and_cancel_stuck(ledger: Ledger, clock: FrozenClock) -> None:
    blocked = ledger.flows.create_managed(OWNER, "tests/c", "Blocked")
    ledger.flows.set_waiting(blocked.flow_id, 0, blocked_task_id="task-missing")
    cancelling = ledger.flows.create_managed(OWNER, "tests/c", "Cancelling", status="running")
    ledger.flows.request_cancel(cancelling.flow_id, 0, cancel_requested_at=clock.now() + timedelta(milliseconds=100))
    clock.advance(5 * MINUTE + timedelta(milliseconds=99))
    found = codes(ledger)
    assert found[blocked.flow_id] == ["blocked_task_missing"]
    assert cancelling.flow_id not in found
    clock.advance(timedelta(milliseconds=1))
    assert codes(ledger)[cancelling.flow_id] == ["cancel_stuck"]


def test_inconsistent_timestamps(ledger: Ledger, clock: FrozenClock) -> None:
    flow = ledger.flows.create_managed(OWNER, "tests/c", "Odd", updated_at=clock.now() - MINUTE)
    assert codes(ledger)[flow.flow_id] == ["inconsistent_timestamps"]


def test_cancel_finalisation_preview_then_apply_scenario_45(ledger: Ledger, clock: FrozenClock) -> None:
    flow = ledger.flows.create_managed(OWNER, "tests/c", "Goal", status="running")
    requested = ledger.flows.request_cancel(flow.flow_id, 0).flow
    assert requested is not None
    clock.advance(MINUTE)
    assert maintain(ledger, apply=False) == (1, 0)
    assert ledger.flows.get(flow.flow_id).status == FlowStatus.RUNNING  # type: ignore[union-attr]
    assert maintain(ledger, apply=True) == (1, 0)
    final = ledger.flows.get(flow.flow_id)
    assert final is not None and final.status == FlowStatus.CANCELLED
    assert final.cancel_requested_at == requested.cancel_requested_at and final.ended_at == clock.now()
    assert maintain(ledger, apply=True) == (0, 0)


def test_prune_boundary_and_active_child_scenario_45(ledger: Ledger, clock: FrozenClock) -> None:
    old = ledger.flows.create_managed(OWNER, "tests/c", "Old")
    ledger.flows.finish(old.flow_id, 0)
    busy = ledger.flows.create_managed(OWNER, "tests/c", "Busy", status="running")
    ledger.flows.run_task(busy.flow_id, runtime="cli", task="child", run_id="run-b", status="running")
    clock.advance(timedelta(days=7) - timedelta(milliseconds=1))
    assert maintain(ledger, apply=True) == (0, 0)
    clock.advance(timedelta(milliseconds=1))
    assert maintain(ledger, apply=False) == (0, 1)
    assert maintain(ledger, apply=True) == (0, 1)
    assert ledger.flows.get(old.flow_id) is None
    assert ledger.flows.get(busy.flow_id).status == FlowStatus.RUNNING  # type: ignore[union-attr]


def test_prune_many_keeps_fresh_and_running_scenario_45(ledger: Ledger, clock: FrozenClock) -> None:
    for n in range(25):
        flow = ledger.flows.create_managed(OWNER, "tests/c", f"Old {n}")
        ledger.flows.finish(flow.flow_id, 0)
    clock.advance(timedelta(days=6))
    fresh = ledger.flows.create_managed(OWNER, "tests/c", "Fresh")
    ledger.flows.finish(fresh.flow_id, 0)
    running = ledger.flows.create_managed(OWNER, "tests/c", "Running", status="running",
                                          wait={"kind": "external_event"})
    clock.advance(timedelta(days=2))
    assert maintain(ledger, apply=True) == (0, 25)
    assert {f.flow_id for f in ledger.flows.list()} == {fresh.flow_id, running.flow_id}


def test_apply_skips_flows_changed_since_the_plan(ledger: Ledger, clock: FrozenClock) -> None:
    flow = ledger.flows.create_managed(OWNER, "tests/c", "Goal", status="running")
    ledger.flows.request_cancel(flow.flow_id, 0)
    now = clock.now()
    with ledger.db.read() as conn:
        plan = plan_flows(conn, now)
    ledger.flows.update(flow.flow_id, 1, {"current_step": "moved on"})
    assert apply_flows(ledger, plan, now) == (0, 0)


def test_mirrored_timestamp_repair(ledger: Ledger, clock: FrozenClock) -> None:
    flow = ledger.flows.create_mirrored(OWNER, "Watched")
    ledger.tasks.create(runtime="cli", task="x", owner_key=OWNER, parent_flow_id=flow.flow_id, run_id="run-t",
                        status="running")
    ledger.tasks.complete("run-t")
    done = ledger.flows.get(flow.flow_id)
    assert done is not None and done.status == FlowStatus.SUCCEEDED
    clock.advance(MINUTE)
    ledger.flows.update(flow.flow_id, done.revision, {})  # a stray write moves updated_at past ended_at
    assert maintain(ledger, apply=True) == (1, 0)
    repaired = ledger.flows.get(flow.flow_id)
    assert repaired is not None and repaired.updated_at == repaired.ended_at == done.ended_at


def test_blocked_flow_on_missing_task_is_repaired_then_pruned(ledger: Ledger, clock: FrozenClock) -> None:
    flow = ledger.flows.create_managed(OWNER, "tests/c", "Stuck")
    ledger.flows.set_waiting(flow.flow_id, 0, blocked_task_id="task-gone")
    assert maintain(ledger, apply=True) == (1, 0)
    repaired = ledger.flows.get(flow.flow_id)
    assert repaired is not None and repaired.status == FlowStatus.BLOCKED
    assert repaired.blocked_task_id is None and repaired.blocked_summary == "Blocked task task-gone no longer exists."
    assert repaired.ended_at is not None
    assert codes(ledger).get(flow.flow_id, []) == []
    clock.advance(timedelta(days=7))
    assert maintain(ledger, apply=True) == (0, 1)
    assert ledger.flows.get(flow.flow_id) is None
