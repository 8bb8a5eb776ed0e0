"""`flowledger status` assembled from what either door read (CONTRACT §4 StatusReport): the stored counts, the
(stored, projected) pairs of the noteworthy tasks, the flow findings and the flow counts.

Pure and free of SQLAlchemy: flows/health.py `status` (the ORM path) and flows/lean_status.py (the lean SQLite
door, docs/performance.md "Round two") both build their report here, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flowledger.flows.audit import FLOW_CODES
from flowledger.flows.models import LINK_TERMINAL, FlowStatus
from flowledger.tasks.core.models import Task
from flowledger.tasks.health.audit import CodeSummary, RetainedLost, TaskAudit
from flowledger.tasks.health.findings import Finding
from flowledger.tasks.health.summary import Summary


@dataclass
class StatusReport:
    line: str
    tasks: Summary
    audit: dict[str, int]
    retained_lost: RetainedLost | None
    flows: dict[str, Any] | None = None  # flow pressure: active, blocked, cancel_requested, total, by_status

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "tasks": self.tasks.to_json(), "audit": dict(self.audit),
                "retained_lost": self.retained_lost.to_json() if self.retained_lost else None,
                "flows": dict(self.flows) if self.flows is not None else None}


def tally(summary: Summary, now: datetime, retention: timedelta, pairs: Iterable[tuple[Task, Task]],
          *, keep: bool) -> TaskAudit:
    """Move each noteworthy task from its stored status to its projected one and audit the projection."""
    audit = TaskAudit(now, retention, keep=keep)
    for stored, projected in pairs:
        summary.shift(stored, projected)
        audit.add_tasks([projected])
    return audit


def flow_code_summary(findings: Iterable[Finding]) -> CodeSummary:
    flows = CodeSummary(FLOW_CODES)
    for finding in findings:
        flows.add(finding)
    return flows


def pressure_counts(rows: Iterable[tuple[str, int, int]]) -> tuple[dict[str, int], int]:
    """(status, flows, flows with a cancel request) rows → flows per status, and how many carry an outstanding
    cancel intent (requested, not yet terminal)."""
    by_status = {s.value: 0 for s in FlowStatus}
    cancelling = 0
    for status, count, requested in rows:
        by_status[status] = count
        if status not in {s.value for s in LINK_TERMINAL}:
            cancelling += requested
    return by_status, cancelling


def flow_pressure(by_status: dict[str, int], cancelling: int) -> dict[str, Any]:
    """The `TaskFlow pressure` of `tasks flow list`, over every flow: active (queued or running), blocked,
    outstanding cancel requests, total, and the count per status."""
    return {"active": by_status["queued"] + by_status["running"], "blocked": by_status["blocked"],
            "cancel_requested": cancelling, "total": sum(by_status.values()), "by_status": by_status}


def compose(summary: Summary, audit: TaskAudit, flow_findings: Iterable[Finding],
            flows: dict[str, Any]) -> StatusReport:
    """Task pressure: failures exclude retained lost tasks; audit counts are the actionable ones."""
    retained = audit.retained
    summary.failures_offset = retained.count
    flow_codes = flow_code_summary(flow_findings)
    actionable = audit.actionable
    counted = {"total": actionable.total + flow_codes.total, "warnings": actionable.warnings + flow_codes.warnings,
               "errors": actionable.errors + flow_codes.errors}
    line = f"Tasks: {summary.queued} queued · {summary.running} running · {summary.failures} issues"
    return StatusReport(line=line, tasks=summary, audit=counted,
                        retained_lost=retained if retained.count else None, flows=flows)
