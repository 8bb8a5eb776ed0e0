"""Task audit on both engines: thresholds at their exact boundaries, severities, details, order, summaries,
retained vs actionable lost (REFERENCE §11 scenarios 25, 31–34), and the reconciled status view."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ledger_helpers import at, set_columns

from flowledger import FrozenClock, Ledger
from flowledger.flows import health
from flowledger.tasks.health.audit import TASK_CODES
from flowledger.tasks.runs import liveness

MS = timedelta(milliseconds=1)




def codes(ledger: Ledger) -> list[tuple[str, str]]:
    return [(f.code, f.severity.value) for f in task_findings(ledger)]


def task_findings(ledger: Ledger, **filters: Any) -> list[Any]:
    """Task findings only: acp/subagent tasks get one-task mirrored flows, which have findings of their own."""
    return [f for f in health.run_audit(ledger, **filters).findings if f.kind == "task"]


def test_stale_queued_at_ten_minutes(ledger: Ledger, clock: FrozenClock) -> None:
    ledger.tasks.create(runtime="acp", task="q", owner_key="agent:main:main")
    clock.advance(timedelta(minutes=10) - MS)
    assert codes(ledger) == []
    clock.advance(MS)
    [finding] = task_findings(ledger)
    assert (finding.code, finding.severity.value, finding.detail) == (
        "stale_queued", "warn", "queued task has not advanced recently")
    assert finding.age_ms == 600_000 and finding.status == "queued" and finding.kind == "task"


def test_scenario_25_stale_running_at_thirty_minutes(ledger: Ledger, clock: FrozenClock) -> None:
    now = clock.now()
    at(clock, now - timedelta(minutes=50), lambda: ledger.tasks.create(
        runtime="acp", task="hung", owner_key="agent:main:main", child_session_key="agent:main:acp:h",
        run_id="run-h", status="running", last_event_at=now - timedelta(minutes=40)))
    report = ledger.audit()
    assert report.summary.to_json()["total"] == 1  # the task summary; flows are counted apart
    assert (report.summary.warnings, report.summary.errors) == (0, 1)
    assert report.summary.by_code["stale_running"] == 1
    assert task_findings(ledger)[0].detail == "running task appears stuck"


def test_stale_running_boundary(ledger: Ledger, clock: FrozenClock) -> None:
    ledger.tasks.create(runtime="acp", task="r", owner_key="agent:main:main", child_session_key="agent:main:acp:r",
                        status="running", started_at=clock.now())
    clock.advance(timedelta(minutes=30) - MS)
    assert codes(ledger) == []
    clock.advance(MS)
    assert codes(ledger) == [("stale_running", "error")]


def test_audit_reads_the_reconciled_view(ledger: Ledger, clock: FrozenClock) -> None:
    task = ledger.tasks.create(runtime="cli", task="c", owner_key="agent:main:main", run_id="run-c",
                               status="running", started_at=clock.now())
    clock.advance(timedelta(minutes=40))
    [finding] = task_findings(ledger)
    # The projected lost record carries its cleanup stamp, so it is retained: a warning until cleanupAfter.
    assert (finding.code, finding.severity.value, finding.status) == ("lost", "warn", "lost")
    assert finding.detail == "backing session missing"
    assert ledger.tasks.require(task.task_id).status.value == "running"  # nothing was written


def test_scenario_31_order(ledger: Ledger, clock: FrozenClock) -> None:
    now = clock.now()
    at(clock, now - timedelta(hours=2), lambda: ledger.tasks.create(
        runtime="acp", task="running", owner_key="agent:main:main", child_session_key="agent:main:acp:a",
        status="running", last_event_at=now - timedelta(minutes=40)))
    lost = at(clock, now - timedelta(hours=2), lambda: ledger.tasks.create(
        runtime="subagent", task="lost", owner_key="agent:main:main", status="lost"))
    set_columns(ledger, lost.task_id, cleanup_after=None, ended_at=now - timedelta(minutes=5))
    failed = at(clock, now - timedelta(minutes=1), lambda: ledger.tasks.create(
        runtime="cron", task="failed", status="failed"))
    set_columns(ledger, failed.task_id, cleanup_after=None)
    assert codes(ledger) == [("lost", "error"), ("stale_running", "error"), ("missing_cleanup", "warn")]


def test_scenario_32_retained_lost(ledger: Ledger, clock: FrozenClock) -> None:
    now = clock.now()
    retained = ledger.tasks.create(runtime="subagent", task="retained", owner_key="agent:main:main", status="lost")
    expired = ledger.tasks.create(runtime="subagent", task="expired", owner_key="agent:main:main", status="lost")
    set_columns(ledger, retained.task_id, cleanup_after=now + timedelta(seconds=60))
    set_columns(ledger, expired.task_id, cleanup_after=now - MS)
    findings = task_findings(ledger)
    assert [(f.token, f.severity.value) for f in findings] == [(expired.task_id, "error"),
                                                              (retained.task_id, "warn")]
    assert findings[1].detail == "task lost its backing session and is retained until cleanupAfter"
    assert findings[0].detail == "task lost its backing session"
    status = health.status(ledger)
    assert status.audit == {"total": 1, "warnings": 0, "errors": 1}
    assert status.retained_lost is not None
    assert status.retained_lost.to_json() == {"count": 1, "next_cleanup_after": "2026-03-30T01:01:00.000Z"}
    assert status.tasks.failures == 1  # the retained one is not an issue yet


def test_scenario_33_long_legacy_stamp_on_lost_is_capped(ledger: Ledger, clock: FrozenClock) -> None:
    now = clock.now()
    ended = now - timedelta(days=7) - MS
    task = ledger.tasks.create(runtime="subagent", task="legacy", owner_key="agent:main:main", status="lost")
    set_columns(ledger, task.task_id, ended_at=ended, cleanup_after=ended + timedelta(days=30))
    assert codes(ledger) == [("lost", "error")]
    assert health.status(ledger).retained_lost is None


def test_scenario_34_lost_is_not_double_reported(ledger: Ledger, clock: FrozenClock) -> None:
    task = ledger.tasks.create(runtime="subagent", task="l", owner_key="agent:main:main", status="lost")
    set_columns(ledger, task.task_id, cleanup_after=None)
    assert [c for c, _ in codes(ledger)] == ["lost"]


def test_delivery_failed_unless_silent(ledger: Ledger, clock: FrozenClock) -> None:
    loud = ledger.tasks.create(runtime="acp", task="loud", owner_key="agent:main:main", status="succeeded",
                               delivery_status="failed", notify_policy="done_only")
    ledger.tasks.create(runtime="acp", task="quiet", owner_key="agent:main:main", status="succeeded",
                        delivery_status="failed", notify_policy="silent")
    [finding] = task_findings(ledger)
    assert (finding.code, finding.severity.value, finding.token) == ("delivery_failed", "warn", loud.task_id)
    assert finding.detail == "terminal update delivery failed"


def test_inconsistent_timestamps_first_match_only(ledger: Ledger, clock: FrozenClock) -> None:
    now = clock.now()
    a = ledger.tasks.create(runtime="cli", task="a", owner_key="agent:main:main", status="succeeded")
    set_columns(ledger, a.task_id, created_at=now - timedelta(hours=1), started_at=now - timedelta(minutes=1),
                ended_at=now - timedelta(minutes=2))
    b = ledger.tasks.create(runtime="cli", task="b", owner_key="agent:main:main", status="succeeded")
    set_columns(ledger, b.task_id, started_at=now - MS, created_at=now, ended_at=now - timedelta(minutes=2))
    c = ledger.tasks.create(runtime="acp", task="c", owner_key="agent:main:main")
    set_columns(ledger, c.task_id, ended_at=now)
    details = {f.token: f.detail for f in task_findings(ledger) if f.code == "inconsistent_timestamps"}
    assert details == {a.task_id: "endedAt is earlier than startedAt", b.task_id: "startedAt is earlier than createdAt",
                       c.task_id: "queued task should not already have endedAt"}


def test_audit_report_shape_filters_and_limit(ledger: Ledger, clock: FrozenClock) -> None:
    ledger.tasks.create(runtime="cli", task="q", owner_key="agent:main:main")
    ledger.tasks.create(runtime="cli", task="r", owner_key="agent:main:main", child_session_key="agent:main:main",
                        status="running", started_at=clock.now())
    with ledger.db.write() as conn:
        liveness.upsert_session(conn, "agent:main:main", clock.now(), kind="session")
    clock.advance(timedelta(minutes=45))
    document = ledger.audit().to_json()
    assert set(document) == {"count", "filtered_count", "displayed", "filters", "summary", "findings"}
    assert set(document["summary"]["by_code"]) == set(TASK_CODES)
    assert set(document["summary"]) >= {"total", "warnings", "errors", "by_code", "task_flows", "combined"}
    assert document["count"] == 2
    assert [f["code"] for f in document["findings"]] == ["stale_running", "stale_queued"]
    assert set(document["findings"][0]) == {"kind", "severity", "code", "detail", "age_ms", "status", "token"}
    warn_only = health.run_audit(ledger, severity="warn")
    assert (warn_only.count, warn_only.filtered_count, warn_only.displayed) == (2, 1, 1)
    limited = health.run_audit(ledger, limit=1)
    assert [f.code for f in limited.findings] == ["stale_running"]
    assert limited.filters == {"severity": None, "code": None, "limit": 1}
    by_code = health.run_audit(ledger, code="stale_queued")
    assert [f.code for f in by_code.findings] == ["stale_queued"]


def test_summary_is_reconciled(ledger: Ledger, clock: FrozenClock) -> None:
    ledger.tasks.create(runtime="acp", task="q", owner_key="agent:main:main")
    ledger.tasks.create(runtime="cron", task="c", status="running", started_at=clock.now())
    ledger.tasks.create(runtime="subagent", task="t", owner_key="agent:main:main", status="timed_out")
    ledger.tasks.create(runtime="cli", task="gone", owner_key="agent:main:main", run_id="run-x", status="running",
                        started_at=clock.now())
    clock.advance(timedelta(minutes=5))
    summary = ledger.summary()
    assert summary.to_json() == {
        "total": 4, "active": 2, "terminal": 2, "failures": 2,
        "by_status": {"queued": 1, "running": 1, "succeeded": 0, "failed": 0, "timed_out": 1, "cancelled": 0,
                      "lost": 1},
        "by_runtime": {"subagent": 1, "acp": 1, "cli": 1, "cron": 1},
    }
    # status leaves the freshly lost task out of the issues while it is retained (REFERENCE §8).
    assert health.status(ledger).line == "Tasks: 1 queued · 1 running · 1 issues"
