"""The pure rules of isolated cron delivery (tasks/runs/cron_followup.py): which texts are interim acknowledgements,
which promise a sub-agent follow-up, and which text becomes the run's result."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import DeliveryStatus, NotifyPolicy, Runtime, ScopeKind, TaskStatus
from flowledger.tasks.runs.cron_followup import descendant_reply, expects_followup, is_interim, settle

T0 = datetime(2026, 3, 30, 1, 0, tzinfo=UTC)


def sub(child: str, status: TaskStatus, summary: str | None = None, ended_s: int | None = None) -> Task:
    return Task(task_id=f"t-{child}-{ended_s}", runtime=Runtime.SUBAGENT, requester_session_key="k", owner_key="k",
                scope_kind=ScopeKind.SESSION, task="x", status=status, delivery_status=DeliveryStatus.PENDING,
                notify_policy=NotifyPolicy.DONE_ONLY, created_at=T0, child_session_key=child,
                ended_at=T0 + timedelta(seconds=ended_s) if ended_s is not None else None, terminal_summary=summary)


@pytest.mark.parametrize(("text", "interim"), [
    ("On it", True), ("", True), (None, True), ("  Working on it,   give me a few minutes ", True),
    ("Both subagents are running; I'll wait for them to report back.", True),
    ("Weather: sunny. " + "word " * 50 + "on it", False),  # more than 45 words is a result
    ("Weather: sunny, 21 C.", False),
])
def test_interim_acknowledgements(text: str | None, interim: bool) -> None:
    assert is_interim(text) is interim


def test_only_subagent_hints_promise_a_follow_up() -> None:
    assert expects_followup("Subagent spawned, it'll auto-announce when done")
    assert not expects_followup("On it")
    assert not expects_followup(None)


def test_descendant_reply_takes_each_childs_latest_result_oldest_first() -> None:
    replies = [sub("a", TaskStatus.SUCCEEDED, "old a", 1), sub("b", TaskStatus.SUCCEEDED, "b says", 2),
               sub("a", TaskStatus.SUCCEEDED, "new a", 3), sub("c", TaskStatus.SUCCEEDED, "NO_REPLY", 4),
               sub("d", TaskStatus.FAILED, "half", 5), sub("e", TaskStatus.RUNNING)]
    assert descendant_reply(replies) == "b says\n\nnew a"
    assert descendant_reply([sub(f"c{i}", TaskStatus.SUCCEEDED, f"r{i}", i) for i in range(6)]) == \
        "r2\n\nr3\n\nr4\n\nr5"
    assert descendant_reply([]) is None


def test_settle() -> None:
    done = [sub("a", TaskStatus.SUCCEEDED, "Result from a", 1)]
    running = [sub("a", TaskStatus.RUNNING)]
    failed = [sub("a", TaskStatus.FAILED, None, 1)]
    assert settle("On it", done, waited=True) == "Result from a"
    assert settle("On it", done, waited=False) == "Result from a"  # finished before the run ended
    assert settle("Here is the full report.", done, waited=True) == "Here is the full report."
    assert settle("On it", running, waited=True) is None  # no partial result, never the acknowledgement
    assert settle("Final report.", running, waited=True) == "Final report."
    assert settle("On it", failed, waited=True) is None
    assert settle("On it", [], waited=False) == "On it"  # nothing was spawned: the text is all there is
    assert settle("Plain result", [], waited=False) == "Plain result"
