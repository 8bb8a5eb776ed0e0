"""The `/tasks` board of one session (REFERENCE §8): a cleanup-aware snapshot, up to five entries.

Stored records, not the projection: a task running for ten minutes is still shown running. When nothing
is linked to the session, only the agent's counts are shown, so no other session's details leak.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import ACTIVE, FAILURES, Runtime, TaskStatus, is_terminal

RECENT = timedelta(minutes=5)
MAX_ENTRIES = 5
TITLE_MAX = 80
DETAIL_MAX = 120

ICONS = {TaskStatus.QUEUED: "🟡", TaskStatus.RUNNING: "🟢", TaskStatus.SUCCEEDED: "✅", TaskStatus.FAILED: "🔴",
         TaskStatus.TIMED_OUT: "⏱️", TaskStatus.CANCELLED: "⚪️", TaskStatus.LOST: "⚠️"}
RUNTIME_LABELS = {Runtime.SUBAGENT: "Subagent", Runtime.ACP: "ACP", Runtime.CLI: "CLI", Runtime.CRON: "Cron"}


@dataclass(frozen=True, slots=True)
class Snapshot:
    visible: list[Task]
    active: list[Task]
    focus: Task | None


def _finished_at(task: Task) -> datetime:
    return task.ended_at or task.last_event_at or task.started_at or task.created_at


def snapshot(tasks: Sequence[Task], now: datetime) -> Snapshot:
    """Drop what cleanup is due for; active first, recent terminal (≤ 5 min) only alongside or instead."""
    kept = [t for t in tasks if t.cleanup_after is None or t.cleanup_after > now]
    active = [t for t in kept if t.status in ACTIVE]
    recent = [t for t in kept if is_terminal(t.status) and now - _finished_at(t) <= RECENT]
    visible = active + recent if active else recent
    failures = [t for t in recent if t.status in FAILURES]
    focus = active[0] if active else (failures[0] if failures else (recent[0] if recent else None))
    return Snapshot(visible, active, focus)


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def duration(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 24:
        return f"{hours}h {minutes % 60}m" if minutes % 60 else f"{hours}h"
    return f"{hours // 24}d {hours % 24}h" if hours % 24 else f"{hours // 24}d"


def timing(task: Task, now: datetime) -> str:
    if task.status == TaskStatus.RUNNING:
        return f"elapsed {duration(now - (task.started_at or task.created_at))}"
    if task.status == TaskStatus.QUEUED:
        return f"queued {duration(now - task.created_at)} ago"
    return f"finished {duration(now - _finished_at(task))} ago"


def detail(task: Task) -> str | None:
    if task.status in FAILURES or task.status == TaskStatus.CANCELLED:
        text = task.error or task.terminal_summary or task.progress_summary
    else:
        text = task.terminal_summary or task.progress_summary
    text = " ".join(text.split()) if text else None
    return truncate(text, DETAIL_MAX) if text else None


def render(tasks: Sequence[Task], now: datetime, *, agent_tasks: Sequence[Task] = ()) -> list[str]:
    """The board's lines; `agent_tasks` feeds only the counts of the fallback."""
    snap = snapshot(tasks, now)
    lines = ["📋 Tasks"]
    if not snap.visible:
        lines.append("All clear - nothing linked to this session right now.")
        kept = [t for t in agent_tasks if t.cleanup_after is None or t.cleanup_after > now]
        active = sum(t.status in ACTIVE for t in kept)
        lines.append(f"Agent-local: {active} active · {len(kept)} total")
        return lines
    lines.append(f"Current session: {len(snap.active)} active · {len(snap.visible)} total")
    for index, task in enumerate(snap.visible[:MAX_ENTRIES], start=1):
        title = truncate(" ".join((task.label or task.task).split()), TITLE_MAX)
        lines.append(f"{index}. {ICONS[task.status]} {title}")
        status = task.status.value.replace("_", " ")
        lines.append(f"   {RUNTIME_LABELS[task.runtime]} · {status} · {timing(task, now)}")
        text = detail(task)
        if text:
            lines.append(f"   {text}")
    more = len(snap.visible) - MAX_ENTRIES
    if more > 0:
        lines.append(f"+{more} more recent task{'s' if more != 1 else ''}")
    return lines
