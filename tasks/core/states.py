"""The task lifecycle as a pure module: statuses, the event mapping and the no-downgrade rule.

Nothing here touches storage or time. The store enforces `allowed_predecessors` with compare-and-set
updates, so the rule lives in one place (this file) and holds across processes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from flowledger.tasks.core.errors import InvalidInputError


class TaskStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    LOST = "lost"


class Runtime(StrEnum):
    ACP = "acp"
    SUBAGENT = "subagent"
    CRON = "cron"
    CLI = "cli"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    SESSION_QUEUED = "session_queued"
    FAILED = "failed"
    PARENT_MISSING = "parent_missing"
    NOT_APPLICABLE = "not_applicable"


class NotifyPolicy(StrEnum):
    DONE_ONLY = "done_only"
    STATE_CHANGES = "state_changes"
    SILENT = "silent"


class ScopeKind(StrEnum):
    SESSION = "session"
    SYSTEM = "system"


class TerminalOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    BLOCKED = "blocked"


ACTIVE: frozenset[TaskStatus] = frozenset({TaskStatus.QUEUED, TaskStatus.RUNNING})
TERMINAL: frozenset[TaskStatus] = frozenset(set(TaskStatus) - ACTIVE)
FAILURES: frozenset[TaskStatus] = frozenset({TaskStatus.FAILED, TaskStatus.TIMED_OUT, TaskStatus.LOST})
# Statuses an operator cancel or the runtime's own failure report may override (REFERENCE §3.3).
_OVERRIDABLE_SUCCESS = frozenset({TaskStatus.FAILED, TaskStatus.TIMED_OUT, TaskStatus.CANCELLED})


def is_active(status: TaskStatus) -> bool:
    return status in ACTIVE


def is_terminal(status: TaskStatus) -> bool:
    return status in TERMINAL


def should_apply(current: TaskStatus, nxt: TaskStatus) -> bool:
    """May a run-scoped producer update move `current` to `nxt`? (REFERENCE §3.3, no downgrade.)

    Same status: yes (a re-finalise may add detail). Active: anything. Terminal → active: never.
    succeeded → failed/timed_out/cancelled: yes (a later failure outranks success). Every other terminal is sticky.
    """
    if current == nxt or current in ACTIVE:
        return True
    if nxt in ACTIVE:
        return False
    return current == TaskStatus.SUCCEEDED and nxt in _OVERRIDABLE_SUCCESS


def allowed_predecessors(nxt: TaskStatus) -> frozenset[TaskStatus]:
    """Every status from which `nxt` may be applied: the compare-and-set guard of the store."""
    return frozenset(s for s in TaskStatus if should_apply(s, nxt))


def can_mark_lost(current: TaskStatus) -> bool:
    """Only maintenance marks lost, and only active work."""
    return current in ACTIVE


def can_cancel(current: TaskStatus) -> bool:
    """An operator cancel applies to active work only; a finished task is never rewritten as cancelled."""
    return current in ACTIVE


# --- lifecycle events ---------------------------------------------------------------------------------

HARD_TIMEOUT_PHASES = frozenset({"preflight", "provider", "post_turn"})


@dataclass(frozen=True, slots=True)
class LifecycleOutcome:
    """What a lifecycle end/error event means for a task."""

    reason: str
    status: TaskStatus
    default_error: str | None = None


def lifecycle_outcome(phase: str, data: Mapping[str, object]) -> LifecycleOutcome:
    """Map a lifecycle `end`/`error` event to a terminal status (REFERENCE §3.2, with CONTRACT §6.3).

    CONTRACT §6.3: an aborted run ends `timed_out`; only an operator/restart stop ends `cancelled`.
    """
    run_status = "error" if phase == "error" else ("timeout" if data.get("aborted") is True else "ok")
    stop_reason = data.get("stopReason", data.get("stop_reason"))
    timeout_phase = data.get("timeoutPhase", data.get("timeout_phase"))
    liveness = str(data.get("livenessState", data.get("liveness_state")) or "").strip().lower()
    provider_started = data.get("providerStarted", data.get("provider_started")) is True

    if timeout_phase in HARD_TIMEOUT_PHASES or (
        run_status == "timeout" and provider_started and stop_reason != "restart"
    ):
        return LifecycleOutcome("hard_timeout", TaskStatus.TIMED_OUT)
    if liveness == "blocked":
        return LifecycleOutcome("blocked", TaskStatus.FAILED, "agent run blocked")
    if stop_reason == "aborted":
        return LifecycleOutcome("aborted", TaskStatus.TIMED_OUT, "agent run aborted")
    if stop_reason == "restart" or (run_status != "ok" and stop_reason in {"rpc", "stop"}):
        return LifecycleOutcome("cancelled", TaskStatus.CANCELLED)
    if run_status == "timeout":
        return LifecycleOutcome("timed_out", TaskStatus.TIMED_OUT)
    if run_status == "error":
        return LifecycleOutcome("failed", TaskStatus.FAILED)
    return LifecycleOutcome("completed", TaskStatus.SUCCEEDED)


# --- parsing ------------------------------------------------------------------------------------------

E = TypeVar("E", bound=StrEnum)


def parse_enum(kind: type[E], value: object, what: str) -> E:
    """Strict parse with one clear message naming the accepted values."""
    if isinstance(value, kind):
        return value
    try:
        return kind(str(value).strip())
    except ValueError:
        choices = "|".join(m.value for m in kind)
        raise InvalidInputError(f"Invalid {what} {value!r}: expected one of {choices}.") from None
