"""Message texts and idempotency keys, exactly as REFERENCE §4.4–4.5."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import DeliveryStatus, NotifyPolicy, Runtime, ScopeKind, TaskStatus, TerminalOutcome
from flowledger.tasks.delivery import messages

T0 = datetime(2026, 3, 30, 1, 0, tzinfo=UTC)


def make(**changes: object) -> Task:
    base = Task(task_id="task-1", runtime=Runtime.ACP, requester_session_key="agent:main:main",
                owner_key="agent:main:main", scope_kind=ScopeKind.SESSION, task="Summarise PR 12",
                status=TaskStatus.SUCCEEDED, delivery_status=DeliveryStatus.PENDING,
                notify_policy=NotifyPolicy.DONE_ONLY, created_at=T0, terminal_outcome=TerminalOutcome.SUCCEEDED)
    return base.replace(**changes)


@pytest.mark.parametrize(("changes", "expected"), [
    ({"label": "Nightly export"}, "Nightly export"),
    ({}, "ACP background task"),
    ({"runtime": Runtime.SUBAGENT}, "Subagent task"),
    ({"runtime": Runtime.CLI}, "Summarise PR 12"),
    ({"runtime": Runtime.CRON, "task": " \x1b[31m\t "}, "Background task"),
    ({"label": "  \x1b[1mBold\x1b[0m\nlabel\twith \x07 bell  "}, "Bold label with bell"),
])
def test_title_choice_and_sanitising(changes: dict[str, object], expected: str) -> None:
    assert messages.title(make(**changes)) == expected


def test_title_is_cut_to_80_characters_with_an_ellipsis() -> None:
    assert messages.title(make(label="x" * 80)) == "x" * 80
    cut = messages.title(make(label="y" * 81))
    assert len(cut) == 80
    assert cut == "y" * 79 + "…"


def test_run_label_uses_the_first_eight_characters() -> None:
    assert messages.run_label(make(run_id="run-blocked-123")) == " (run run-bloc)"
    assert messages.run_label(make(run_id=None)) == ""


def test_terminal_texts() -> None:
    ok = make(run_id="run-succ", terminal_summary="Created /tmp/file.txt and verified contents.")
    assert messages.terminal_message(ok) == (
        "Background task done: ACP background task (run run-succ). Created /tmp/file.txt and verified contents.")
    # Progress is never leaked into the terminal message (scenario 11).
    assert messages.terminal_message(make(run_id="run-detail", progress_summary="50% done")) == (
        "Background task done: ACP background task (run run-deta).")
    blocked = make(run_id="run-blocked", terminal_outcome=TerminalOutcome.BLOCKED,
                   terminal_summary="Writable session or apply_patch authorization required.")
    assert messages.terminal_message(blocked) == (
        "Background task blocked: ACP background task (run run-bloc). "
        "Writable session or apply_patch authorization required.")
    assert messages.blocked_followup(blocked) == (
        "Task needs follow-up: ACP background task (run run-bloc). "
        "Writable session or apply_patch authorization required.")
    assert messages.blocked_followup(blocked.replace(terminal_summary=None)) == (
        "Task needs follow-up: ACP background task (run run-bloc). Task is blocked and needs follow-up.")
    assert messages.terminal_message(make(status=TaskStatus.TIMED_OUT, error="x")) == (
        "Background task timed out: ACP background task.")
    assert messages.terminal_message(make(status=TaskStatus.CANCELLED, error="x")) == (
        "Background task cancelled: ACP background task.")
    assert messages.terminal_message(make(status=TaskStatus.LOST)) == (
        "Background task lost: ACP background task. Backing session disappeared.")
    assert messages.terminal_message(make(status=TaskStatus.LOST, error="backing session missing")) == (
        "Background task lost: ACP background task. backing session missing")
    assert messages.terminal_message(make(status=TaskStatus.FAILED, error="Permission\n denied")) == (
        "Background task failed: ACP background task. Permission denied")
    assert messages.terminal_message(make(status=TaskStatus.FAILED, terminal_summary="It broke.")) == (
        "Background task failed: ACP background task. It broke.")
    assert messages.terminal_message(make(status=TaskStatus.FAILED)) == "Background task failed: ACP background task."


def test_parent_review_variant() -> None:
    task = make(run_id="run-review", terminal_summary="Patched 3 files.")
    assert messages.review_message(task) == (
        "Background task ready for review: ACP background task (run run-revi). Patched 3 files. "
        "Next: parent will review/verify before calling it done.")
    assert messages.review_message(task.replace(terminal_summary=None)) == (
        "Background task ready for review: ACP background task (run run-revi). "
        "Next: parent will review/verify before calling it done.")


def test_state_change_texts() -> None:
    task = make(status=TaskStatus.RUNNING)
    assert messages.state_change_message(task, "running", "Started.") == "Background task started: ACP background task."
    assert messages.state_change_message(task, "progress", "No output for 60s. It may be waiting for input.") == (
        "Background task update: ACP background task. No output for 60s. It may be waiting for input.")
    assert messages.state_change_message(task, "progress", "   ") is None
    assert messages.state_change_message(task, "queued", None) is None


def test_summaries_lose_runtime_context_and_exec_denials() -> None:
    task = make(terminal_summary="Done.<runtime-context>secret plan</runtime-context> Bye.")
    assert messages.terminal_message(task) == "Background task done: ACP background task. Done. Bye."
    failed = make(status=TaskStatus.FAILED, error="Exec denied: rm -rf / --no-preserve-root")
    assert messages.terminal_message(failed) == (
        "Background task failed: ACP background task. exec denied (details redacted)")


def test_idempotency_keys() -> None:
    blocked = make(terminal_outcome=TerminalOutcome.BLOCKED)
    assert messages.terminal_key(blocked) == "task-terminal:task-1:succeeded:blocked"
    assert messages.terminal_key(make(status=TaskStatus.FAILED, terminal_outcome=None)) == (
        "task-terminal:task-1:failed:default")
    assert messages.terminal_key(blocked, "flow-9") == "flow-terminal:flow-9:task-1:succeeded:blocked"
    at = datetime(1970, 1, 1, 0, 0, 1, 500_000, tzinfo=UTC)
    assert messages.state_change_key(blocked, at, "progress") == "task-event:task-1:1500:progress"
    assert messages.state_change_key(blocked, at, "running", "flow-9") == "flow-event:flow-9:task-1:1500:running"
    assert messages.session_context_key("t") == "task:t"
    assert messages.followup_context_key("t") == "task:t:blocked-followup"
