"""Isolated cron delivery and the sub-agents a run spawned (SPEC §5, REFERENCE §4 cron notes).

An isolated cron run's work may hand its job to sub-agents and end with an interim acknowledgement ("on it,
spawned a subagent, it will auto-announce when done"). Recording that text as the run's result would announce a
stale acknowledgement after (or instead of) the real result. So, before the run's completion is summarised, the
cron runtime waits for the run's descendant sub-agents to end and takes their follow-up as the result, and an
acknowledgement is never kept as the result once the descendants have answered. The hint lists and the
"at most 45 words" rule follow the reference's `isLikelyInterimCronMessage` / `expectsSubagentFollowup`.

Descendants are the `subagent` tasks whose requester is the run's session, and theirs in turn (their child
sessions), created at or after the run started.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection

from flowledger.tasks.core import store
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import ACTIVE, Runtime, TaskStatus
from flowledger.tasks.core.tables import task_runs

SUBAGENT_FOLLOWUP_HINTS = (
    "subagent spawned", "spawned a subagent", "auto-announce when done", "both subagents are running",
    "wait for them to report back",
)
INTERIM_HINTS = (
    "on it", "pulling everything together", "give me a few", "give me a few min", "few minutes", "let me compile",
    "i'll gather", "i will gather", "working on it", "retrying now", "should be about", "should have your summary",
    "it'll auto-announce when done", "it will auto-announce when done", *SUBAGENT_FOLLOWUP_HINTS,
)
INTERIM_MAX_WORDS = 45
SILENT_REPLY = "NO_REPLY"  # a child that chose to say nothing
MAX_REPLIES = 4  # the latest few children's results make the run's result
MAX_DEPTH = 5  # sub-agents of sub-agents: a bound, not a limit anyone should reach


def _normal(text: str | None) -> str:
    return " ".join((text or "").lower().split())


def is_interim(text: str | None) -> bool:
    """A short acknowledgement rather than a result (empty counts as interim)."""
    normal = _normal(text)
    if not normal:
        return True
    return len(normal.split(" ")) <= INTERIM_MAX_WORDS and any(hint in normal for hint in INTERIM_HINTS)


def expects_followup(text: str | None) -> bool:
    """The text says sub-agents will report back."""
    normal = _normal(text)
    return bool(normal) and any(hint in normal for hint in SUBAGENT_FOLLOWUP_HINTS)


def descendants(conn: Connection, session_key: str, since: datetime) -> list[Task]:
    """Sub-agent tasks requested by `session_key` (and by their child sessions), created at or after `since`."""
    found: list[Task] = []
    keys, seen = {session_key}, {session_key}
    for _ in range(MAX_DEPTH):
        if not keys:
            break
        stmt = store.task_select().where(task_runs.c.owner_key.in_(sorted(keys)),
                                         task_runs.c.runtime == Runtime.SUBAGENT.value,
                                         task_runs.c.created_at >= since)
        batch = [store.row_to_task(r) for r in conn.execute(stmt.order_by(task_runs.c.created_at, task_runs.c.seq))]
        found.extend(batch)
        keys = {t.child_session_key for t in batch if t.child_session_key} - seen
        seen |= keys
    return found


def active_count(tasks: Sequence[Task]) -> int:
    return sum(t.status in ACTIVE for t in tasks)


def descendant_reply(tasks: Sequence[Task]) -> str | None:
    """The follow-up of the run's ended descendants: each child's latest result, the latest few, oldest first."""
    latest: dict[str, Task] = {}
    for task in tasks:
        if task.status in ACTIVE or task.ended_at is None:
            continue
        child = (task.child_session_key or task.task_id).strip()
        if child not in latest or task.ended_at >= (latest[child].ended_at or task.ended_at):
            latest[child] = task
    ordered = sorted(latest.values(), key=lambda t: t.ended_at or t.created_at)[-MAX_REPLIES:]
    replies = [t.terminal_summary.strip() for t in ordered
               if t.status == TaskStatus.SUCCEEDED and t.terminal_summary and t.terminal_summary.strip()
               and t.terminal_summary.strip().upper() != SILENT_REPLY]
    return "\n\n".join(replies) if replies else None


def settle(initial: str | None, tasks: Sequence[Task], *, waited: bool) -> str | None:
    """The run's result once the wait (if any) is over: the parent's own text unless it is a stale acknowledgement,
    else its descendants' follow-up; while descendants still run, never the acknowledgement (no partial result)."""
    still_running = active_count(tasks) > 0
    own = initial if initial and not is_interim(initial) else None
    if still_running:
        return own
    if waited or is_interim(initial):
        return own or descendant_reply(tasks) or (None if is_interim(initial) and tasks else initial)
    return initial
