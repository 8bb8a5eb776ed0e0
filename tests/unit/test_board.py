"""The /tasks board, pure (REFERENCE §8, scenario 50)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import DeliveryStatus, NotifyPolicy, Runtime, ScopeKind, TaskStatus
from flowledger.tasks.health import board

NOW = datetime(2026, 3, 30, 1, 0, tzinfo=UTC)


def task(n: int, status: TaskStatus, *, age: timedelta = timedelta(minutes=1), **kw: Any) -> Task:
    fields: dict[str, Any] = {
        "task_id": f"t{n}", "runtime": Runtime.SUBAGENT, "requester_session_key": "agent:main:main",
        "owner_key": "agent:main:main", "scope_kind": ScopeKind.SESSION, "task": f"task {n}", "status": status,
        "delivery_status": DeliveryStatus.PENDING, "notify_policy": NotifyPolicy.DONE_ONLY,
        "created_at": NOW - age, "started_at": NOW - age,
    }
    if status not in (TaskStatus.QUEUED, TaskStatus.RUNNING):
        fields["ended_at"] = NOW - age
        fields["cleanup_after"] = NOW - age + timedelta(days=7)
    fields.update(kw)
    return Task(**fields)


def test_running_task_aged_ten_minutes_is_still_active() -> None:
    lines = board.render([task(1, TaskStatus.RUNNING, age=timedelta(minutes=10))], NOW)
    assert lines == ["📋 Tasks", "Current session: 1 active · 1 total", "1. 🟢 task 1",
                     "   Subagent · running · elapsed 10m"]


def test_succeeded_task_past_cleanup_is_hidden() -> None:
    done = task(1, TaskStatus.SUCCEEDED, cleanup_after=NOW - timedelta(milliseconds=1))
    snap = board.snapshot([done], NOW)
    assert snap.visible == []
    assert board.render([done], NOW)[1] == "All clear - nothing linked to this session right now."


def test_titles_and_details_are_truncated() -> None:
    long = task(1, TaskStatus.FAILED, label="L" * 100, error="E" * 200)
    lines = board.render([long], NOW)
    assert lines[2] == "1. 🔴 " + "L" * 79 + "…"
    assert lines[3] == "   Subagent · failed · finished 1m ago"
    assert lines[4] == "   " + "E" * 119 + "…"


def test_recent_terminal_window_is_five_minutes() -> None:
    recent = task(1, TaskStatus.TIMED_OUT, age=timedelta(minutes=5))
    stale = task(2, TaskStatus.SUCCEEDED, age=timedelta(minutes=5, milliseconds=1))
    snap = board.snapshot([recent, stale], NOW)
    assert snap.visible == [recent] and snap.focus == recent


def test_five_entries_then_more_and_active_first() -> None:
    tasks = [task(i, TaskStatus.SUCCEEDED) for i in range(4)]
    tasks += [task(10, TaskStatus.QUEUED, runtime=Runtime.ACP), task(11, TaskStatus.RUNNING, runtime=Runtime.CRON),
              task(12, TaskStatus.LOST, runtime=Runtime.CLI)]
    lines = board.render(tasks, NOW)
    assert lines[1] == "Current session: 2 active · 7 total"
    assert lines[2] == "1. 🟡 task 10" and lines[3] == "   ACP · queued · queued 1m ago"
    assert lines[4] == "2. 🟢 task 11" and lines[5] == "   Cron · running · elapsed 1m"
    assert lines[-1] == "+2 more recent tasks"
    assert sum(line[:1].isdigit() for line in lines) == 5


def test_icons_and_timed_out_label() -> None:
    assert board.ICONS[TaskStatus.TIMED_OUT] == "⏱️" and board.ICONS[TaskStatus.CANCELLED] == "⚪️"
    lines = board.render([task(1, TaskStatus.TIMED_OUT)], NOW)
    assert lines[2] == "1. ⏱️ task 1" and lines[3] == "   Subagent · timed out · finished 1m ago"


def test_agent_local_fallback_shows_counts_only() -> None:
    others = [task(1, TaskStatus.RUNNING, owner_key="agent:main:secret", task="secret plan"),
              task(2, TaskStatus.SUCCEEDED, age=timedelta(hours=1), owner_key="agent:main:secret")]
    lines = board.render([], NOW, agent_tasks=others)
    assert lines == ["📋 Tasks", "All clear - nothing linked to this session right now.",
                     "Agent-local: 1 active · 2 total"]
    assert not any("secret" in line for line in lines)


def test_focus_prefers_active_then_recent_failure() -> None:
    ok, bad = task(1, TaskStatus.SUCCEEDED), task(2, TaskStatus.FAILED)
    assert board.snapshot([ok, bad], NOW).focus == bad
    run = task(3, TaskStatus.RUNNING)
    assert board.snapshot([ok, bad, run], NOW).focus == run
