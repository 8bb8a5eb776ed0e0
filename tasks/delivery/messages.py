"""What the owner reads when work ends or moves (REFERENCE §4.5), and the idempotency keys of §4.4.

Pure: text in, text out. Every piece of task-supplied text is sanitised before it reaches a channel, so a
label or an error cannot drive a terminal, smuggle a runtime-context block, or echo a raw exec denial.
"""

from __future__ import annotations

import re
from datetime import datetime

from flowledger.tasks.core.clock import to_ms
from flowledger.tasks.core.errors import InvalidInputError
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import Runtime, TaskStatus, TerminalOutcome

TITLE_MAX = 80
ELLIPSIS = "…"

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Runtime-context blocks are injected into agent transcripts for the model, never meant for people.
_RUNTIME_CONTEXT = re.compile(r"<(runtime[-_]context|system-reminder)\b[^>]*>.*?</\1>", re.IGNORECASE | re.DOTALL)
# A raw exec denial quotes the refused command line; the owner only needs to know it was denied.
_EXEC_DENIAL = re.compile(r"\bexec(?:ution)? denied\b.*", re.IGNORECASE | re.DOTALL)
EXEC_DENIED = "exec denied (details redacted)"

DONE = "Background task done"
BLOCKED = "Background task blocked"
REVIEW = "Background task ready for review"
TIMED_OUT = "Background task timed out"
CANCELLED = "Background task cancelled"
LOST = "Background task lost"
FAILED = "Background task failed"
LOST_DEFAULT = "Backing session disappeared."
FOLLOWUP_DEFAULT = "Task is blocked and needs follow-up."
REVIEW_NEXT = "Next: parent will review/verify before calling it done."


def sanitize(value: str | None) -> str:
    """Strip ANSI and runtime-context blocks, redact exec denials, turn controls into spaces, collapse runs."""
    if not value:
        return ""
    text = _ANSI.sub("", str(value))
    text = _RUNTIME_CONTEXT.sub(" ", text)
    text = _EXEC_DENIAL.sub(EXEC_DENIED, text)
    text = _CONTROL.sub(" ", text)
    return " ".join(text.split())


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + ELLIPSIS


def title(task: Task) -> str:
    label = sanitize(task.label)
    if label:
        chosen = label
    elif task.runtime == Runtime.ACP:
        chosen = "ACP background task"
    elif task.runtime == Runtime.SUBAGENT:
        chosen = "Subagent task"
    else:
        chosen = sanitize(task.task) or "Background task"
    return truncate(chosen, TITLE_MAX)


def run_label(task: Task) -> str:
    run = (task.run_id or "").strip()
    return f" (run {run[:8]})" if run else ""


def is_blocked(task: Task) -> bool:
    return task.status == TaskStatus.SUCCEEDED and task.terminal_outcome == TerminalOutcome.BLOCKED


def _head(prefix: str, task: Task) -> str:
    return f"{prefix}: {title(task)}{run_label(task)}."


def _with(head: str, detail: str | None) -> str:
    text = sanitize(detail)
    return f"{head} {text}" if text else head


def terminal_message(task: Task) -> str:
    """The message for a terminal task on a direct channel (and the session copy outside parent review)."""
    status = task.status
    if status == TaskStatus.SUCCEEDED:
        # Progress summaries never reach the terminal message: only the final summary does.
        return _with(_head(BLOCKED if is_blocked(task) else DONE, task), task.terminal_summary)
    if status == TaskStatus.TIMED_OUT:
        return _head(TIMED_OUT, task)
    if status == TaskStatus.CANCELLED:
        return _head(CANCELLED, task)
    if status == TaskStatus.LOST:
        return f"{_head(LOST, task)} {sanitize(task.error) or sanitize(task.terminal_summary) or LOST_DEFAULT}"
    if status == TaskStatus.FAILED:
        return _with(_head(FAILED, task), task.error or task.terminal_summary)
    raise InvalidInputError(f"Task {task.task_id} is not terminal ({status.value}): it has no end message yet.")


def review_message(task: Task) -> str:
    """The session copy when the parent must review an ACP result before calling it done."""
    summary = sanitize(task.terminal_summary)
    middle = f"{summary} " if summary else ""
    return f"{_head(REVIEW, task)} {middle}{REVIEW_NEXT}"


def blocked_followup(task: Task) -> str:
    detail = sanitize(task.terminal_summary) or FOLLOWUP_DEFAULT
    return f"Task needs follow-up: {title(task)}{run_label(task)}. {detail}"


def state_change_message(task: Task, kind: str, summary: str | None) -> str | None:
    """Only `running` and a `progress` report with a summary produce text; every other event is silent."""
    if kind == TaskStatus.RUNNING.value:
        return f"Background task started: {title(task)}."
    text = sanitize(summary)
    if kind == "progress" and text:
        return f"Background task update: {title(task)}. {text}"
    return None


def _outcome(task: Task) -> str:
    if task.status == TaskStatus.SUCCEEDED and task.terminal_outcome is not None:
        return task.terminal_outcome.value
    return "default"


def terminal_key(task: Task, flow_id: str | None = None) -> str:
    tail = f"{task.task_id}:{task.status.value}:{_outcome(task)}"
    return f"flow-terminal:{flow_id}:{tail}" if flow_id else f"task-terminal:{tail}"


def state_change_key(task: Task, at: datetime, kind: str, flow_id: str | None = None) -> str:
    tail = f"{task.task_id}:{to_ms(at)}:{kind}"
    return f"flow-event:{flow_id}:{tail}" if flow_id else f"task-event:{tail}"


def session_context_key(task_id: str) -> str:
    return f"task:{task_id}"


def followup_context_key(task_id: str) -> str:
    return f"task:{task_id}:blocked-followup"


def state_change_context_key(task_id: str, at: datetime, kind: str) -> str:
    # Distinct from the terminal key: a queued progress notice must never shadow the final one.
    return f"task:{task_id}:event:{to_ms(at)}:{kind}"
