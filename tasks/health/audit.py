"""Task audit findings (REFERENCE §7.1): six codes with exact triggers, severities and details (pure).

Findings are computed over the reconciled projection, so text and JSON agree (CONTRACT §6.6). A lost task
still inside its retention is a *retained* finding (warn); it is kept out of the actionable summary.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flowledger.tasks.core.clock import iso_z, to_ms
from flowledger.tasks.core.models import DEFAULT_RETENTION, Task
from flowledger.tasks.core.rules import effective_cleanup_after
from flowledger.tasks.core.states import ACTIVE, TaskStatus, is_terminal
from flowledger.tasks.health.findings import Finding, Severity

STALE_QUEUED = timedelta(minutes=10)
STALE_RUNNING = timedelta(minutes=30)

TASK_CODES = ("stale_queued", "stale_running", "lost", "delivery_failed", "missing_cleanup",
              "inconsistent_timestamps")


def age_ms(task: Task, now: datetime) -> int:
    return max(0, to_ms(now) - to_ms(task.last_activity_at))


def _finding(task: Task, severity: Severity, code: str, detail: str, age: int) -> Finding:
    return Finding(kind="task", severity=severity, code=code, detail=detail, age_ms=age, status=task.status.value,
                   token=task.task_id, created_at=task.created_at)


def is_retained_lost(task: Task, now: datetime, retention: timedelta = DEFAULT_RETENTION) -> bool:
    return retained_until(task, now, retention) is not None


def retained_until(task: Task, now: datetime, retention: timedelta = DEFAULT_RETENTION) -> datetime | None:
    """The cleanup time of a retained lost task (lost, stamped, not yet due); None for any other task."""
    if task.status != TaskStatus.LOST or task.cleanup_after is None:
        return None
    until = effective_cleanup_after(task, retention)
    return until if until > now else None


def task_findings(task: Task, now: datetime, retention: timedelta = DEFAULT_RETENTION, *,
                  retained: bool | None = None) -> list[Finding]:
    """Every finding one task produces, in code order (`retained`: `is_retained_lost`, when the caller knows)."""
    age = age_ms(task, now)
    found: list[Finding] = []
    if task.status == TaskStatus.QUEUED and age >= to_ms_delta(STALE_QUEUED):
        found.append(_finding(task, Severity.WARN, "stale_queued", "queued task has not advanced recently", age))
    if task.status == TaskStatus.RUNNING and age >= to_ms_delta(STALE_RUNNING):
        found.append(_finding(task, Severity.ERROR, "stale_running", "running task appears stuck", age))
    if task.status == TaskStatus.LOST:
        if retained if retained is not None else is_retained_lost(task, now, retention):
            detail = task.error or "task lost its backing session and is retained until cleanupAfter"
            found.append(_finding(task, Severity.WARN, "lost", detail, age))
        else:
            found.append(_finding(task, Severity.ERROR, "lost", task.error or "task lost its backing session", age))
    if task.delivery_status.value == "failed" and task.notify_policy.value != "silent":
        found.append(_finding(task, Severity.WARN, "delivery_failed", "terminal update delivery failed", age))
    if is_terminal(task.status) and task.status != TaskStatus.LOST and task.cleanup_after is None:
        found.append(_finding(task, Severity.WARN, "missing_cleanup", "terminal task is missing cleanupAfter", age))
    timeline = _timeline_problem(task)
    if timeline is not None:
        found.append(_finding(task, Severity.WARN, "inconsistent_timestamps", timeline, age))
    return found


def _timeline_problem(task: Task) -> str | None:
    if task.started_at is not None and task.started_at < task.created_at:
        return "startedAt is earlier than createdAt"
    if task.ended_at is not None and task.started_at is not None and task.ended_at < task.started_at:
        return "endedAt is earlier than startedAt"
    if task.status in ACTIVE and task.ended_at is not None:
        return f"{task.status.value} task should not already have endedAt"
    return None


def to_ms_delta(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)


def sort_findings(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=Finding.sort_key)


@dataclass
class CodeSummary:
    """`{total, warnings, errors, by_code}` over a fixed set of codes."""

    codes: tuple[str, ...]
    total: int = 0
    warnings: int = 0
    errors: int = 0
    by_code: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for code in self.codes:
            self.by_code.setdefault(code, 0)

    def add(self, finding: Finding) -> None:
        self.total += 1
        if finding.severity == Severity.ERROR:
            self.errors += 1
        else:
            self.warnings += 1
        self.by_code[finding.code] = self.by_code.get(finding.code, 0) + 1

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "warnings": self.warnings, "errors": self.errors, "by_code": dict(self.by_code)}


@dataclass
class RetainedLost:
    count: int = 0
    next_cleanup_after: datetime | None = None

    def add(self, when: datetime) -> None:
        self.count += 1
        if self.next_cleanup_after is None or when < self.next_cleanup_after:
            self.next_cleanup_after = when

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "next_cleanup_after": iso_z(self.next_cleanup_after)}


@dataclass
class TaskAudit:
    """An accumulating task audit: every finding, the full and actionable summaries, the retained lost."""

    now: datetime
    retention: timedelta = DEFAULT_RETENTION
    keep: bool = True  # False: count only (status), so memory stays flat over huge ledgers
    findings: list[Finding] = field(default_factory=list)
    summary: CodeSummary = field(default_factory=lambda: CodeSummary(TASK_CODES))
    actionable: CodeSummary = field(default_factory=lambda: CodeSummary(TASK_CODES))
    retained: RetainedLost = field(default_factory=RetainedLost)

    def add_tasks(self, tasks: Iterable[Task]) -> None:
        for task in tasks:
            until = retained_until(task, self.now, self.retention)  # once per task: status reads 10,000s
            retained = until is not None
            if until is not None:
                self.retained.add(until)
            for finding in task_findings(task, self.now, self.retention, retained=retained):
                self.summary.add(finding)
                if not (retained and finding.code == "lost"):
                    self.actionable.add(finding)
                if self.keep:
                    self.findings.append(finding)


def audit_tasks(tasks: Iterable[Task], now: datetime, retention: timedelta = DEFAULT_RETENTION) -> list[Finding]:
    """Sorted findings over `tasks` (REFERENCE §7.1 order)."""
    audit = TaskAudit(now, retention)
    audit.add_tasks(tasks)
    return sort_findings(audit.findings)
