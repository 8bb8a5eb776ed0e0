"""Transitions on both engines: run-scoped updates, lifecycle events, no downgrade, cancel, notify policy.

REFERENCE §11 scenarios 1, 2, 3, 12, 14, 17, 18 and 52 (12/17/18 also in test_lookup, 14 in test_create).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Connection

from flowledger import FrozenClock, Ledger
from flowledger.tasks.core.errors import InvalidInput, TaskNotFound
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import (
    ACTIVE,
    NotifyPolicy,
    Runtime,
    TaskStatus,
    TerminalOutcome,
    allowed_predecessors,
)

T0 = datetime(2026, 3, 30, 1, 0, tzinfo=UTC)
OWNER = "agent:main:main"
CHILD = "agent:main:acp:child"


def ms(n: int) -> datetime:
    return T0 + timedelta(milliseconds=n)


def events(ledger: Ledger, task: Task) -> list[tuple[str, str | None, str | None]]:
    return [(e.kind, e.previous_status, e.summary) for e in ledger.tasks.events(task.task_id)]


def test_lifecycle_end_succeeds_scenario_1(ledger: Ledger, clock: FrozenClock) -> None:
    t = ledger.tasks.create(runtime="acp", task="x", owner_key=OWNER, child_session_key=CHILD, run_id="run-1",
                            status="running", delivery_status="not_applicable", started_at=ms(100))
    clock.set(ms(200))
    [mid] = ledger.tasks.ingest("run-1", "assistant", {"text": "hi"}, ts=ms(150))
    assert (mid.status, mid.last_event_at) == (TaskStatus.RUNNING, ms(150))
    [done] = ledger.tasks.ingest("run-1", "lifecycle", {"phase": "end", "endedAt": ms(250)})
    assert (done.status, done.ended_at) == (TaskStatus.SUCCEEDED, ms(250))
    stored = ledger.tasks.get(t.task_id)
    assert stored is not None and stored.status == TaskStatus.SUCCEEDED
    assert done.terminal_outcome == TerminalOutcome.SUCCEEDED
    assert done.cleanup_after == done.ended_at + timedelta(days=7)  # type: ignore[operator]
    assert [k for k, _, _ in events(ledger, t)] == ["running", "succeeded"]


def test_lifecycle_end_with_ended_at_datetime(ledger: Ledger, clock: FrozenClock) -> None:
    ledger.tasks.create(runtime="acp", task="x", owner_key=OWNER, run_id="run-1", status="running",
                        started_at=ms(100))
    clock.set(ms(400))
    [done] = ledger.tasks.ingest("run-1", "lifecycle", {"phase": "end", "endedAt": ms(250)})
    assert (done.status, done.ended_at, done.last_event_at) == (TaskStatus.SUCCEEDED, ms(250), ms(400))


def test_lifecycle_start_error_and_error_stream(ledger: Ledger, clock: FrozenClock) -> None:
    t = ledger.tasks.create(runtime="subagent", task="x", owner_key=OWNER, child_session_key="agent:w:sub:1",
                            run_id="r")
    clock.advance(timedelta(seconds=1))
    [running] = ledger.tasks.ingest("r", "lifecycle", {"phase": "start"})
    assert (running.status, running.started_at) == (TaskStatus.RUNNING, T0 + timedelta(seconds=1))
    [errored] = ledger.tasks.ingest("r", "error", {"error": "tool exploded"})
    assert (errored.status, errored.error) == (TaskStatus.RUNNING, "tool exploded")
    [failed] = ledger.tasks.ingest("r", "lifecycle", {"phase": "error"})
    assert (failed.status, failed.error) == (TaskStatus.FAILED, "tool exploded")  # falls back to the old error
    assert events(ledger, t) == [("queued", None, None), ("running", "queued", None),
                                 ("failed", "running", "tool exploded")]


@pytest.mark.parametrize(("data", "status", "error"), [
    ({"phase": "end", "stopReason": "aborted"}, TaskStatus.TIMED_OUT, "agent run aborted"),  # CONTRACT §6.3
    ({"phase": "end", "aborted": True}, TaskStatus.TIMED_OUT, None),
    ({"phase": "error", "stopReason": "stop", "error": "stopped"}, TaskStatus.CANCELLED, "stopped"),
    ({"phase": "end", "livenessState": "blocked"}, TaskStatus.FAILED, "agent run blocked"),
])
def test_lifecycle_outcomes_reach_the_store(ledger: Ledger, data: dict[str, object], status: TaskStatus,
                                            error: str | None) -> None:
    ledger.tasks.create(runtime="acp", task="x", owner_key=OWNER, run_id="r", status="running")
    [done] = ledger.tasks.ingest("r", "lifecycle", data)
    assert (done.status, done.error) == (status, error)


def test_late_events_after_cancel_ignored_scenario_2(ledger: Ledger, clock: FrozenClock) -> None:
    t = ledger.tasks.create(runtime="cli", task="x", owner_key=OWNER, run_id="run-cancel-then-end",
                            status="running", started_at=ms(100))
    clock.set(ms(200))
    result = ledger.tasks.cancel(t.task_id)
    assert result.cancelled and result.task is not None
    cancelled = ledger.tasks.get(t.task_id)  # as stored after delivery ran
    assert cancelled is not None
    assert (cancelled.status, cancelled.ended_at, cancelled.last_event_at, cancelled.error) == (
        TaskStatus.CANCELLED, ms(200), ms(200), "Cancelled by operator.")
    clock.set(ms(1000))
    assert ledger.tasks.ingest("run-cancel-then-end", "lifecycle", {"phase": "end", "endedAt": ms(999)}) == []
    assert ledger.tasks.ingest("run-cancel-then-end", "error", {"error": "late error"}) == []
    assert ledger.tasks.complete("run-cancel-then-end", summary="late") == []
    assert ledger.tasks.get(t.task_id) == cancelled


def test_pressure_summary_scenario_3(ledger: Ledger) -> None:
    ledger.tasks.create(runtime="acp", task="q", owner_key=OWNER, delivery_status="pending")
    ledger.tasks.create(runtime="cron", task="c", owner_key="", status="running")
    ledger.tasks.create(runtime="subagent", task="s", owner_key=OWNER, status="timed_out")
    tasks = ledger.tasks.list()
    by_status = {s.value: sum(t.status == s for t in tasks) for s in TaskStatus}
    by_runtime = {r.value: sum(t.runtime == r for t in tasks) for r in Runtime}
    assert by_status == {"queued": 1, "running": 1, "succeeded": 0, "failed": 0, "timed_out": 1,
                         "cancelled": 0, "lost": 0}
    assert by_runtime == {"acp": 1, "subagent": 1, "cron": 1, "cli": 0}
    try:
        summary = ledger.summary()
    except NotImplementedError:  # flows.health.summarize lands with the maintenance issue
        return
    assert (summary.total, summary.active, summary.terminal, summary.failures) == (3, 2, 1, 1)
    assert summary.by_runtime["cli"] == 0 and summary.by_status["timed_out"] == 1


# --- run-scoped producer updates and no downgrade (scenario 52) ------------------------------------------


def test_start_progress_complete_events(ledger: Ledger, clock: FrozenClock) -> None:
    t = ledger.tasks.create(runtime="acp", task="x", owner_key=OWNER, run_id="r")
    clock.advance(timedelta(seconds=1))
    [s] = ledger.tasks.start("r")
    assert (s.status, s.started_at, s.last_event_at) == (TaskStatus.RUNNING, clock.now(), clock.now())
    clock.advance(timedelta(seconds=1))
    [p] = ledger.tasks.progress("r", "  half   way ")
    assert (p.progress_summary, p.last_event_at) == ("half way", clock.now())
    clock.advance(timedelta(seconds=1))
    [c] = ledger.tasks.complete("r", summary="done  well", outcome="blocked")
    assert (c.status, c.terminal_summary, c.terminal_outcome, c.ended_at) == (
        TaskStatus.SUCCEEDED, "done well", TerminalOutcome.BLOCKED, clock.now())
    assert events(ledger, t) == [("queued", None, None), ("running", "queued", None),
                                 ("progress", "running", "half way"), ("succeeded", "running", "done well")]
    times = [e.at for e in ledger.tasks.events(t.task_id)]
    assert times == [T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2), T0 + timedelta(seconds=3)]


def test_cancelled_ignores_complete_scenario_52(ledger: Ledger) -> None:
    t = ledger.tasks.create(runtime="acp", task="x", owner_key=OWNER, run_id="r", status="running")
    [c] = ledger.tasks.fail("r", status="cancelled", error="stop")
    assert c.status == TaskStatus.CANCELLED
    c = ledger.tasks.get(t.task_id)  # type: ignore[assignment]  # as stored after delivery ran
    assert ledger.tasks.complete("r") == []
    assert ledger.tasks.fail("r", status="failed") == []
    assert ledger.tasks.fail("r", status="timed_out") == []
    assert ledger.tasks.start("r") == []
    assert ledger.tasks.get(t.task_id) == c


def test_succeeded_accepts_failure_and_refinalise_scenario_52(ledger: Ledger, clock: FrozenClock) -> None:
    t = ledger.tasks.create(runtime="acp", task="x", owner_key=OWNER, run_id="r", status="running")
    [ok] = ledger.tasks.complete("r")
    assert ok.terminal_outcome == TerminalOutcome.SUCCEEDED
    [blocked] = ledger.tasks.complete("r", outcome="blocked", summary="Writable session required.")
    assert (blocked.status, blocked.terminal_outcome) == (TaskStatus.SUCCEEDED, TerminalOutcome.BLOCKED)
    assert ledger.tasks.start("r") == []  # never back to active
    clock.advance(timedelta(seconds=1))
    [failed] = ledger.tasks.fail("r", error="later failure")
    assert (failed.status, failed.error, failed.terminal_outcome) == (TaskStatus.FAILED, "later failure", None)
    assert ledger.tasks.complete("r") == []  # failure is sticky
    assert [k for k, _, _ in events(ledger, t)] == ["running", "succeeded", "failed"]


def test_succeeded_never_becomes_lost_scenario_52(ledger: Ledger) -> None:
    t = ledger.tasks.create(runtime="acp", task="x", owner_key=OWNER, run_id="r", status="succeeded")

    def mark_lost(conn: Connection, now: datetime) -> list[object]:
        current = ledger.tasks.get(t.task_id)
        assert current is not None
        new = current.replace(status=TaskStatus.LOST, ended_at=now, error="backing session missing")
        change = ledger.tasks.apply(conn, current, new, expected=allowed_predecessors(TaskStatus.LOST), now=now)
        return [change] if change else []

    assert ledger.tasks.run_unit(mark_lost) == []  # type: ignore[arg-type]
    assert ledger.tasks.get(t.task_id).status == TaskStatus.SUCCEEDED  # type: ignore[union-attr]


def test_maintenance_lost_only_from_active(ledger: Ledger, clock: FrozenClock) -> None:
    t = ledger.tasks.create(runtime="acp", task="x", owner_key=OWNER, run_id="r", status="running")
    clock.advance(timedelta(minutes=5))

    def mark_lost(conn: Connection, now: datetime) -> list[object]:
        current = ledger.tasks.get(t.task_id)
        assert current is not None
        new = current.replace(status=TaskStatus.LOST, ended_at=now, last_event_at=now, error="gone")
        change = ledger.tasks.apply(conn, current, new, expected=ACTIVE, now=now)
        return [change] if change else []

    [_change] = ledger.tasks.run_unit(mark_lost)  # type: ignore[arg-type]
    lost = ledger.tasks.get(t.task_id)
    assert lost is not None and lost.status == TaskStatus.LOST
    assert lost.cleanup_after == clock.now() + timedelta(days=7)
    assert ledger.tasks.complete("r") == []  # a late success never downgrades lost
    assert ledger.tasks.run_unit(mark_lost) == []  # type: ignore[arg-type]


def test_progress_applies_to_terminal_tasks_without_status_change(ledger: Ledger) -> None:
    t = ledger.tasks.create(runtime="cli", task="x", owner_key=OWNER, run_id="r", status="failed")
    [p] = ledger.tasks.progress("r", "late note")
    assert (p.status, p.progress_summary) == (TaskStatus.FAILED, "late note")
    assert [k for k, _, _ in events(ledger, t)] == ["failed", "progress"]


def test_fail_validates_status_and_run_id(ledger: Ledger) -> None:
    with pytest.raises(InvalidInput, match=r"expected one of failed\|timed_out\|cancelled"):
        ledger.tasks.fail("r", status="succeeded")
    with pytest.raises(InvalidInput, match="Invalid status"):
        ledger.tasks.fail("r", status="bogus")
    with pytest.raises(InvalidInput, match="run_id is required"):
        ledger.tasks.start("  ")
    assert ledger.tasks.complete("no-such-run") == []


def test_fail_timed_out_keeps_error(ledger: Ledger) -> None:
    ledger.tasks.create(runtime="cron", task="x", run_id="cron:j:1", status="running")
    [t] = ledger.tasks.fail("cron:j:1", error="cron: job execution timed out", status="timed_out")
    assert (t.status, t.error) == (TaskStatus.TIMED_OUT, "cron: job execution timed out")


# --- cancel per runtime (REFERENCE §3.6) ---------------------------------------------------------------


@pytest.mark.parametrize("child", [None, "agent:main:cli:child"])
def test_cli_cancel_is_registry_only(ledger: Ledger, clock: FrozenClock, child: str | None) -> None:
    t = ledger.tasks.create(runtime="cli", task="x", owner_key=OWNER, run_id="r", child_session_key=child,
                            status="running")
    clock.advance(timedelta(seconds=3))
    result = ledger.tasks.cancel("r")
    assert (result.found, result.cancelled, result.reason) == (True, True, None)
    assert result.task is not None
    assert (result.task.status, result.task.error, result.task.ended_at) == (
        TaskStatus.CANCELLED, "Cancelled by operator.", clock.now())
    assert events(ledger, t)[-1] == ("cancelled", "running", None)


def test_cancel_reason_recorded(ledger: Ledger) -> None:
    ledger.tasks.create(runtime="cron", task="x", run_id="cron:j:1", status="queued")
    result = ledger.tasks.cancel("cron:j:1", reason="operator said so")
    assert result.cancelled and result.task is not None and result.task.error == "operator said so"


@pytest.mark.parametrize("runtime", ["acp", "subagent"])
def test_childless_acp_and_subagent_refused(ledger: Ledger, runtime: str) -> None:
    t = ledger.tasks.create(runtime=runtime, task="x", owner_key=OWNER, status="running")
    result = ledger.tasks.cancel(t.task_id)
    assert (result.found, result.cancelled, result.reason) == (True, False, "Task has no cancellable child session.")
    assert ledger.tasks.get(t.task_id).status == TaskStatus.RUNNING  # type: ignore[union-attr]


def test_childless_codex_native_subagent_can_cancel(ledger: Ledger) -> None:
    t = ledger.tasks.create(runtime="subagent", task="x", owner_key=OWNER, task_kind="codex-native",
                            run_id="codex-thread:abc", status="running")
    assert ledger.tasks.cancel(t.task_id).cancelled


def test_terminal_and_missing_cancel(ledger: Ledger) -> None:
    t = ledger.tasks.create(runtime="cli", task="x", owner_key=OWNER, status="succeeded")
    result = ledger.tasks.cancel(t.task_id)
    assert (result.found, result.cancelled, result.reason) == (True, False, "Task is already terminal.")
    missing = ledger.tasks.cancel("nope")
    assert (missing.found, missing.cancelled, missing.reason) == (False, False, "Task not found.")


class RefusingAdapter:
    def __init__(self, refusal: str | None) -> None:
        self.refusal = refusal
        self.calls: list[tuple[str, str | None]] = []

    def cancel(self, task: Task, reason: str | None) -> str | None:
        self.calls.append((task.task_id, reason))
        return self.refusal


def test_adapter_stops_the_work_or_refuses(ledger: Ledger) -> None:
    adapter = RefusingAdapter("Subagent was not running.")
    ledger.tasks.cancel_adapters[Runtime.SUBAGENT] = adapter
    t = ledger.tasks.create(runtime="subagent", task="x", owner_key=OWNER, child_session_key="agent:w:sub:1",
                            status="running")
    refused = ledger.tasks.cancel(t.task_id, reason="why")
    assert (refused.cancelled, refused.reason) == (False, "Subagent was not running.")
    assert adapter.calls == [(t.task_id, "why")]
    adapter.refusal = None
    assert ledger.tasks.cancel(t.task_id).cancelled
    assert ledger.tasks.get(t.task_id).status == TaskStatus.CANCELLED  # type: ignore[union-attr]


def test_acp_with_child_and_no_adapter_cancels_in_registry(ledger: Ledger) -> None:
    t = ledger.tasks.create(runtime="acp", task="x", owner_key=OWNER, child_session_key=CHILD, status="queued")
    assert ledger.tasks.cancel(CHILD).cancelled
    assert ledger.tasks.get(t.task_id).status == TaskStatus.CANCELLED  # type: ignore[union-attr]


# --- notify policy -----------------------------------------------------------------------------------


def test_set_notify_policy(ledger: Ledger, clock: FrozenClock) -> None:
    t = ledger.tasks.create(runtime="acp", task="x", owner_key=OWNER, run_id="r", status="running")
    clock.advance(timedelta(minutes=1))
    updated = ledger.tasks.set_notify_policy("r", "state_changes")
    assert (updated.notify_policy, updated.last_event_at) == (NotifyPolicy.STATE_CHANGES, clock.now())
    assert ledger.tasks.get(t.task_id) == updated
    assert [k for k, _, _ in events(ledger, t)] == ["running"]  # not a status change, no history row
    done = ledger.tasks.create(runtime="cli", task="y", owner_key=OWNER, status="succeeded")
    assert ledger.tasks.set_notify_policy(done.task_id, NotifyPolicy.SILENT).notify_policy == NotifyPolicy.SILENT


def test_set_notify_policy_rejects_bad_input(ledger: Ledger) -> None:
    t = ledger.tasks.create(runtime="acp", task="x", owner_key=OWNER)
    with pytest.raises(InvalidInput, match=r"Invalid notify policy 'loud': expected one of done_only\|"):
        ledger.tasks.set_notify_policy(t.task_id, "loud")
    with pytest.raises(TaskNotFound, match=r"^Task not found: nope\.$"):
        ledger.tasks.set_notify_policy("nope", "silent")
    assert ledger.tasks.get(t.task_id) == t
