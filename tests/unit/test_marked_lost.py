"""`projection.marked_lost` builds the lost record in one `replace`: it must be exactly what `rules.prepare_write`
makes of the lost changes (ended now unless ended, last event now, error kept), on every shape of record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from flowledger.tasks.core import rules
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import DeliveryStatus, NotifyPolicy, Runtime, ScopeKind, TaskStatus, TerminalOutcome
from flowledger.tasks.health.backing import Verdict
from flowledger.tasks.health.projection import marked_lost

T0 = datetime(2026, 12, 3, tzinfo=UTC)
times = st.integers(-10**6, 10**6).map(lambda ms: T0 + timedelta(milliseconds=ms))
maybe = st.none() | times


def _by_the_rules(task: Task, verdict: Verdict, now: datetime, retention: timedelta) -> Task:
    lost = task.replace(status=TaskStatus.LOST, ended_at=task.ended_at or now, last_event_at=now,
                        error=task.error or verdict.lost_error)
    return rules.prepare_write(lost, retention)


@settings(max_examples=500)
@given(times, maybe, maybe, maybe, maybe, times, st.sampled_from(list(TaskStatus)),
       st.none() | st.sampled_from(list(TerminalOutcome)), st.none() | st.just("exit 2"))
def test_marked_lost_is_prepare_write_of_the_lost_changes(
        created: datetime, started: datetime | None, last: datetime | None, ended: datetime | None,
        cleanup: datetime | None, now: datetime, status: TaskStatus, outcome: TerminalOutcome | None,
        error: str | None) -> None:
    task = Task(task_id="t-1", runtime=Runtime.CLI, requester_session_key="", owner_key="agent:main:main",
                scope_kind=ScopeKind.SYSTEM, task="t", status=status, delivery_status=DeliveryStatus.NOT_APPLICABLE,
                notify_policy=NotifyPolicy.SILENT, created_at=created, started_at=started, last_event_at=last,
                ended_at=ended, cleanup_after=cleanup, terminal_outcome=outcome, error=error)
    verdict = Verdict(False, "backing_session_missing")
    retention = timedelta(days=7)
    assert marked_lost(task, verdict, now, retention) == _by_the_rules(task, verdict, now, retention)
