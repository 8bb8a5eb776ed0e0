"""`rules.prepare_write` makes at most one copy of a task, and gives what the two rules it joins give one after the
other (timestamp normalisation, then the cleanup stamp), for every status and any order of the four times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from flowledger.tasks.core import rules
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import (
    DeliveryStatus,
    NotifyPolicy,
    Runtime,
    ScopeKind,
    TaskStatus,
    TerminalOutcome,
)

BASE = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
offsets = st.none() | st.integers(min_value=-3_600, max_value=3_600).map(lambda s: BASE + timedelta(seconds=s))


@given(status=st.sampled_from(TaskStatus), started=offsets, last_event=offsets, ended=offsets, cleanup=offsets,
       outcome=st.none() | st.sampled_from(TerminalOutcome),
       retention=st.integers(min_value=0, max_value=30).map(lambda d: timedelta(days=d)))
def test_prepare_write_is_normalise_then_stamp(status: TaskStatus, started: datetime | None,
                                               last_event: datetime | None, ended: datetime | None,
                                               cleanup: datetime | None, outcome: TerminalOutcome | None,
                                               retention: timedelta) -> None:
    task = Task(task_id="t", runtime=Runtime.CLI, requester_session_key="agent:main:main", owner_key="agent:main:main",
                scope_kind=ScopeKind.SESSION, task="work", status=status, delivery_status=DeliveryStatus.PENDING,
                notify_policy=NotifyPolicy.SILENT, created_at=BASE, started_at=started, last_event_at=last_event,
                ended_at=ended, cleanup_after=cleanup, terminal_outcome=outcome)
    assert rules.prepare_write(task, retention) == rules.with_cleanup_stamp(rules.normalize_timestamps(task), retention)
