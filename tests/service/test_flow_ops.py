"""Operating graph flows (CONTRACT §7): the per-step view, retry of what failed, retry_delay with backoff on the
injected clock, and the flow's notices through a real local HTTP server — on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from flowledger import FrozenClock, Ledger, Task
from flowledger.flows.controller import GraphController, define_flow, run_flow
from flowledger.flows.definitions import FlowDefinition, StepDefinition
from flowledger.flows.documents import flow_document
from flowledger.flows.models import FlowStatus
from flowledger.flows.retry import retry_flow
from flowledger.flows.steps import step_views, why_not_succeeded
from flowledger.tasks.core.errors import OperationRefused
from flowledger.tasks.core.states import NotifyPolicy
from flowledger.tasks.delivery import outbox
from flowledger.tasks.delivery.dispatch import delivery_hooks
from flowledger.tasks.sessions.events import SessionEvents

OWNER = "agent:main:main"
POLL = 0.001


class Scripted:
    """Ends each attempt at once with the scripted status for that step's n-th start ("hang" keeps it running)."""

    def __init__(self, ledger: Ledger, script: dict[str, list[str]] | None = None) -> None:
        self.ledger = ledger
        self.script = script or {}
        self.started: list[str] = []

    def start(self, task: Task, argv: list[str], *, shell: bool, timeout: timedelta | None, cwd: str | None,
              env: dict[str, str] | None) -> None:
        assert task.run_id
        step = task.run_id.split(":")[-2]
        attempt = sum(1 for s in self.started if s == step)
        self.started.append(step)
        outcomes = self.script.get(step, ["succeeded"])
        outcome = outcomes[min(attempt, len(outcomes) - 1)]
        self.ledger.tasks.start(task.run_id)
        if outcome == "succeeded":
            self.ledger.tasks.complete(task.run_id)
        elif outcome != "hang":
            self.ledger.tasks.fail(task.run_id, error=f"exit code 1: {step} broke\nlast line of {step}",
                                   status=outcome)


def chain(n: int, **step: Any) -> FlowDefinition:
    steps = [StepDefinition(f"s{i}", run=("true",), needs=(f"s{i - 1}",) if i > 1 else (), **step)
             for i in range(1, n + 1)]
    return FlowDefinition("Chain", owner=OWNER, steps=tuple(steps))


def steps_json(ledger: Ledger, flow_id: str) -> list[dict[str, Any]]:
    flow = ledger.flows.get_by_id(flow_id)
    assert flow is not None
    document = flow_document(flow, ledger.flows.linked_tasks(flow_id))
    steps: list[dict[str, Any]] = document["steps"]
    return steps


# --- the per-step view --------------------------------------------------------------------------------


def test_a_step_that_fails_twice_then_succeeds_shows_three_attempts(ledger: Ledger) -> None:
    definition = FlowDefinition("Flaky", owner=OWNER, steps=(
        StepDefinition("build", run=("true",), label="Build it"),
        StepDefinition("unit-tests", run=("true",), needs=("build",), retries=2),
    ))
    flow = run_flow(ledger, definition, Scripted(ledger, {"unit-tests": ["failed", "failed", "succeeded"]}),
                    poll_interval=POLL)
    assert flow.status == FlowStatus.SUCCEEDED
    build, tests = steps_json(ledger, flow.flow_id)
    assert (build["step_id"], build["label"], build["attempts"], build["status"]) == ("build", "Build it", 1,
                                                                                      "succeeded")
    assert (tests["attempts"], tests["status"], tests["error"]) == (3, "succeeded", None)
    last = ledger.tasks.require(tests["task_id"])
    assert last.run_id == f"flow:{flow.flow_id}:unit-tests:3" and last.label == "unit-tests"
    assert ledger.tasks.require(build["task_id"]).label == "Build it"  # `label` is the step tasks' label
    assert tests["duration_ms"] == 0 and tests["started_at"] is not None  # frozen clock: started = ended
    assert why_not_succeeded(flow, step_views(flow, ledger.flows.linked_tasks(flow.flow_id))) is None


def test_a_failed_flow_names_its_failed_step_and_error(ledger: Ledger) -> None:
    flow = run_flow(ledger, chain(3), Scripted(ledger, {"s2": ["failed"]}), poll_interval=POLL)
    assert flow.status == FlowStatus.FAILED
    s1, s2, s3 = steps_json(ledger, flow.flow_id)
    assert (s1["status"], s2["status"], s2["attempts"]) == ("succeeded", "failed", 1)
    assert s2["error"].startswith("exit code 1: s2 broke")
    assert (s3["status"], s3["attempts"], s3["task_id"]) == ("cancelled", 0, None)  # never started
    why = why_not_succeeded(flow, step_views(flow, ledger.flows.linked_tasks(flow.flow_id)))
    assert why == "Step s2 failed: exit code 1: s2 broke"


def test_steps_are_pending_while_the_flow_is_active_and_null_for_other_flows(ledger: Ledger) -> None:
    flow = define_flow(ledger, chain(2))
    assert [s["status"] for s in steps_json(ledger, flow.flow_id)] == ["pending", "pending"]
    plain = ledger.flows.create_managed(OWNER, "my/controller", "Not a graph")
    assert flow_document(plain, [])["steps"] is None


# --- retry ----------------------------------------------------------------------------------------------


def test_retry_of_a_flow_failed_at_step_4_of_6_runs_exactly_steps_4_to_6(ledger: Ledger) -> None:
    launcher = Scripted(ledger, {"s4": ["failed", "succeeded"]})
    flow = run_flow(ledger, chain(6), launcher, poll_interval=POLL)
    assert flow.status == FlowStatus.FAILED
    before = {s["step_id"]: s["task_id"] for s in steps_json(ledger, flow.flow_id)}
    revision = flow.revision

    plan = retry_flow(ledger, flow.flow_id)
    assert (plan.to_run, plan.kept) == (("s4", "s5", "s6"), ("s1", "s2", "s3"))
    assert plan.flow.status == FlowStatus.QUEUED and plan.flow.revision == revision + 1
    assert plan.flow.ended_at is None and plan.flow.cancel_requested_at is None
    first_run = len(launcher.started)
    done = GraphController(ledger, plan.flow, launcher, poll_interval=POLL).run()

    assert done.status == FlowStatus.SUCCEEDED
    assert launcher.started[first_run:] == ["s4", "s5", "s6"]
    after = {s["step_id"]: s for s in steps_json(ledger, flow.flow_id)}
    for kept in ("s1", "s2", "s3"):
        assert after[kept]["task_id"] == before[kept] and after[kept]["attempts"] == 1
    assert after["s4"]["task_id"] != before["s4"] and after["s4"]["attempts"] == 2  # every attempt of every run
    assert ledger.tasks.require(after["s4"]["task_id"]).run_id == f"flow:{flow.flow_id}:s4:2"
    assert after["s5"]["attempts"] == 1 and after["s6"]["attempts"] == 1
    assert len(ledger.flows.linked_tasks(flow.flow_id)) == 7
    [entry] = done.state["history"]  # the retry is in the flow's history
    assert entry["run"] == 2 and entry["previous_status"] == "failed" and entry["to_run"] == ["s4", "s5", "s6"]


def test_retry_gives_each_step_its_retries_budget_afresh(ledger: Ledger) -> None:
    definition = FlowDefinition("Budget", owner=OWNER, steps=(StepDefinition("a", run=("true",), retries=1),))
    launcher = Scripted(ledger, {"a": ["failed", "failed", "failed", "succeeded"]})
    flow = run_flow(ledger, definition, launcher, poll_interval=POLL)
    assert flow.status == FlowStatus.FAILED and len(launcher.started) == 2
    done = GraphController(ledger, retry_flow(ledger, flow.flow_id).flow, launcher, poll_interval=POLL).run()
    assert done.status == FlowStatus.SUCCEEDED and len(launcher.started) == 4
    [view] = steps_json(ledger, flow.flow_id)
    assert view["attempts"] == 4


def test_retry_of_a_cancelled_flow_clears_the_cancel_intent(ledger: Ledger) -> None:
    flow = define_flow(ledger, chain(2))
    ledger.flows.cancel(flow.flow_id)
    cancelled = ledger.flows.require(flow.flow_id)
    assert cancelled.status == FlowStatus.CANCELLED and cancelled.cancel_requested_at is not None
    plan = retry_flow(ledger, flow.flow_id)
    assert plan.to_run == ("s1", "s2") and plan.flow.cancel_requested_at is None
    done = GraphController(ledger, plan.flow, Scripted(ledger), poll_interval=POLL).run()
    assert done.status == FlowStatus.SUCCEEDED


@pytest.mark.parametrize("setup", ["running", "succeeded", "mirrored", "not_graph"])
def test_retry_refuses_flows_it_cannot_retry(ledger: Ledger, setup: str) -> None:
    if setup == "running":
        flow = define_flow(ledger, chain(1))
    elif setup == "succeeded":
        flow = run_flow(ledger, chain(1), Scripted(ledger), poll_interval=POLL)
    elif setup == "mirrored":
        flow = ledger.flows.create_mirrored(OWNER, "Mirrored")
    else:
        made = ledger.flows.create_managed(OWNER, "my/controller", "Plain")
        flow = ledger.flows.fail(made.flow_id, made.revision).flow or made
    with pytest.raises(OperationRefused):
        retry_flow(ledger, flow.flow_id)


def test_a_lost_flow_is_retried_only_once_every_attempt_has_ended(ledger: Ledger) -> None:
    flow = define_flow(ledger, chain(1))
    controller = GraphController(ledger, flow, Scripted(ledger, {"s1": ["hang"]}), poll_interval=POLL)
    assert controller.claim()
    controller.turn()
    current = ledger.flows.require(flow.flow_id)
    lost = ledger.flows.update(flow.flow_id, current.revision, {"status": "lost", "ended_at": ledger.clock.now()})
    assert lost.applied
    with pytest.raises(OperationRefused, match="still has an active step task"):
        retry_flow(ledger, flow.flow_id)
    [task] = ledger.flows.linked_tasks(flow.flow_id)
    ledger.tasks.fail(task.run_id or "", error="stopped")
    assert retry_flow(ledger, flow.flow_id).to_run == ("s1",)


# --- retry_delay and retry_backoff on the injected clock ----------------------------------------------------


def test_retry_delay_with_backoff_at_its_exact_boundaries(ledger: Ledger, clock: FrozenClock) -> None:
    definition = FlowDefinition("Backoff", owner=OWNER, steps=(StepDefinition(
        "a", run=("true",), retries=2, retry_delay=timedelta(seconds=1), retry_backoff=2),))
    launcher = Scripted(ledger, {"a": ["failed", "failed", "succeeded"]})
    controller = GraphController(ledger, define_flow(ledger, definition), launcher)
    assert controller.claim()
    controller.turn()
    assert launcher.started == ["a"]
    first = ledger.tasks.require(steps_json(ledger, controller.flow.flow_id)[0]["task_id"])
    assert first.ended_at is not None

    controller.turn()  # the failure is collected; the retry waits 1 s after attempt 1 ended
    clock.advance(timedelta(milliseconds=999))
    controller.turn()
    assert launcher.started == ["a"]
    assert steps_json(ledger, controller.flow.flow_id)[0]["status"] == "pending"  # waiting out retry_delay
    clock.advance(timedelta(milliseconds=1))
    controller.turn()
    assert launcher.started == ["a", "a"]

    controller.turn()  # attempt 2 failed at once: the next waits 1 s × 2
    clock.advance(timedelta(milliseconds=1999))
    controller.turn()
    assert launcher.started == ["a", "a"]
    clock.advance(timedelta(milliseconds=1))
    controller.turn()
    assert launcher.started == ["a", "a", "a"]
    ended, _ = controller.turn()
    assert ended is not None and ended.status == FlowStatus.SUCCEEDED


# --- notices --------------------------------------------------------------------------------------------------


@pytest.fixture
def notify_ledger(database_url: str, state_dir: Path, clock: FrozenClock, httpserver: HTTPServer
                  ) -> Iterator[Ledger]:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (state_dir / "config.toml").write_text(f'[channels.webhook]\nurl = "{httpserver.url_for("/hook")}"\n')
    httpserver.expect_request("/hook", method="POST").respond_with_json({"ok": True})
    with Ledger.open(state_dir=state_dir, database_url=database_url, clock=clock) as opened:
        yield opened


def settled(ledger: Ledger, flow_id: str) -> list[outbox.Notice]:
    """Wait (bounded) until every notice of the flow left `pending`; the sender runs in a thread of its own."""
    hooks = delivery_hooks(ledger.tasks)
    assert hooks is not None
    deadline = time.monotonic() + 10
    while True:
        hooks.send_outbox()
        notices = outbox.for_subject(ledger.db, flow_id)
        if all(n.status != outbox.PENDING for n in notices) or time.monotonic() > deadline:
            return notices
        time.sleep(0.01)


def posted(httpserver: HTTPServer) -> list[dict[str, Any]]:
    return [json.loads(request.get_data()) for request, _ in httpserver.log]


ORIGIN = {"channel": "webhook", "to": "ops", "thread_id": "t-1"}


def test_done_only_announces_the_end_exactly_once(notify_ledger: Ledger, httpserver: HTTPServer) -> None:
    definition = FlowDefinition("Nightly", owner=OWNER, origin=ORIGIN, steps=(
        StepDefinition("a", run=("true",), retries=1), StepDefinition("b", run=("true",), needs=("a",))))
    flow = run_flow(notify_ledger, definition, Scripted(notify_ledger, {"a": ["failed", "succeeded"]}),
                    poll_interval=POLL)
    notices = settled(notify_ledger, flow.flow_id)
    assert [n.status for n in notices] == ["delivered"]
    [body] = posted(httpserver)
    assert body["text"] == f'Flow "Nightly" succeeded. (flow {flow.flow_id})'
    assert (body["to"], body["thread_id"], body["status"]) == ("ops", "t-1", "succeeded")
    assert body["idempotency_key"] == f"flow:{flow.flow_id}:run:1:end"
    assert all(t.delivery_status.value == "not_applicable" for t in notify_ledger.flows.linked_tasks(flow.flow_id))


def test_state_changes_announces_each_step_attempt_and_the_end(notify_ledger: Ledger,
                                                               httpserver: HTTPServer) -> None:
    definition = FlowDefinition("Nightly", owner=OWNER, origin=ORIGIN, notify=NotifyPolicy.STATE_CHANGES, steps=(
        StepDefinition("a", run=("true",), retries=1), StepDefinition("b", run=("true",), needs=("a",))))
    flow = run_flow(notify_ledger, definition, Scripted(notify_ledger, {"b": ["failed", "failed"]}),
                    poll_interval=POLL)
    assert flow.status == FlowStatus.FAILED
    settled(notify_ledger, flow.flow_id)
    texts = sorted(b["text"] for b in posted(httpserver))
    assert len(texts) == 3  # a#1, b#1 (b has no retries), the end
    assert f'Flow "Nightly": step a attempt 1 succeeded. (flow {flow.flow_id})' in texts
    assert any(t.startswith('Flow "Nightly": step b attempt 1 failed: exit code 1: b broke') for t in texts)
    assert any(t.startswith('Flow "Nightly" failed: Step b failed') for t in texts)


def test_silent_flows_say_nothing_and_retries_announce_their_own_end(notify_ledger: Ledger,
                                                                     httpserver: HTTPServer) -> None:
    quiet = FlowDefinition("Quiet", owner=OWNER, origin=ORIGIN, notify=NotifyPolicy.SILENT,
                           steps=(StepDefinition("a", run=("true",)),))
    silent = run_flow(notify_ledger, quiet, Scripted(notify_ledger), poll_interval=POLL)
    assert settled(notify_ledger, silent.flow_id) == []
    loud = FlowDefinition("Loud", owner=OWNER, origin=ORIGIN, steps=(StepDefinition("a", run=("true",)),))
    launcher = Scripted(notify_ledger, {"a": ["failed", "succeeded"]})
    failed = run_flow(notify_ledger, loud, launcher, poll_interval=POLL)
    GraphController(notify_ledger, retry_flow(notify_ledger, failed.flow_id).flow, launcher,
                    poll_interval=POLL).run()
    settled(notify_ledger, failed.flow_id)
    assert sorted(b["idempotency_key"].split(":")[-2] + b["status"] for b in posted(httpserver)) == [
        "1failed", "2succeeded"]  # once per run


def test_a_flow_without_origin_queues_its_end_to_the_owner_session(ledger: Ledger) -> None:
    flow = run_flow(ledger, chain(1), Scripted(ledger), poll_interval=POLL)
    [notice] = outbox.for_subject(ledger.db, flow.flow_id)
    assert notice.status == outbox.SESSION_QUEUED
    events = SessionEvents(ledger.db, ledger.clock).list(OWNER)
    assert [e.text for e in events] == [f'Flow "Chain" succeeded. (flow {flow.flow_id})']


# --- cancel from another terminal -----------------------------------------------------------------------------


def test_a_flow_cancelled_from_elsewhere_audits_clean(ledger: Ledger, clock: FrozenClock) -> None:
    controller = GraphController(ledger, define_flow(ledger, chain(2)), Scripted(ledger, {"s1": ["hang"]}))
    assert controller.claim()
    controller.turn()
    result = ledger.flows.cancel(controller.flow.flow_id)  # "another terminal": the driver is not involved
    assert result.cancelled
    clock.advance(timedelta(seconds=2))
    ended, _ = controller.turn()  # the driver notices and records its steps' final state
    assert ended is not None and ended.status == FlowStatus.CANCELLED
    flow = ledger.flows.require(ended.flow_id)
    assert flow.ended_at is not None and flow.ended_at >= flow.updated_at
    assert [s["status"] for s in steps_json(ledger, flow.flow_id)] == ["cancelled", "cancelled"]
    codes = [f.code for f in ledger.audit().findings if f.token == flow.flow_id]
    assert "inconsistent_timestamps" not in codes


def test_a_queued_flow_cancelled_before_any_driver_still_announces_its_end_once(ledger: Ledger) -> None:
    flow = define_flow(ledger, chain(1))
    ledger.flows.cancel(flow.flow_id)
    ledger.flows.cancel(flow.flow_id)  # refused: already cancelled; nothing more is announced
    [notice] = outbox.for_subject(ledger.db, flow.flow_id)
    assert notice.notice_key == f"flow:{flow.flow_id}:run:1:end" and notice.subject_status == "cancelled"
    assert notice.text == f'Flow "Chain" was cancelled. (flow {flow.flow_id})'


def test_a_cancelled_flow_says_who_cancelled_it(ledger: Ledger) -> None:
    flow = define_flow(ledger, chain(2))
    ledger.flows.cancel(flow.flow_id)
    cancelled = ledger.flows.require(flow.flow_id)
    views = step_views(cancelled, ledger.flows.linked_tasks(flow.flow_id))
    assert [v.status for v in views or []] == ["cancelled", "cancelled"]
    assert why_not_succeeded(cancelled, views) == "Cancelled by an operator (tasks flow cancel)."
