"""Health of the whole ledger: the reconciled projection, maintenance, audit, summary and status.

Composes the task half (tasks.projection / maintenance / audit / summary) with the flow half
(flows.audit.audit_flows, flows.maintenance.plan_flows / apply_flows). Every function takes the parts of a
ledger it reads (flows/parts.py: db, clock, task service, authoritative); callers pass their `Ledger`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flowledger.flows import status_report
from flowledger.flows import store as flow_store
from flowledger.flows.audit import audit_flows
from flowledger.flows.maintenance import apply_flows, plan_flows
from flowledger.flows.parts import HealthParts
from flowledger.flows.status_report import StatusReport as StatusReport  # noqa: PLC0414 (re-exported)
from flowledger.flows.status_report import compose, flow_code_summary, tally
from flowledger.tasks.core.errors import InvalidInputError
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import Runtime, TaskStatus, parse_enum
from flowledger.tasks.health import backing, maintenance
from flowledger.tasks.health.audit import CodeSummary, RetainedLost, TaskAudit, sort_findings
from flowledger.tasks.health.findings import Finding, Severity
from flowledger.tasks.health.projection import project_all, project_batch, stream_newest, stream_projected
from flowledger.tasks.health.summary import Summary, count_stored
from flowledger.tasks.sessions import sweep as session_sweep

LIST_PAGE = 200

FLOW_CODES = ("restore_failed", "stale_running", "stale_waiting", "stale_blocked", "cancel_stuck",
              "missing_linked_tasks", "blocked_task_missing", "inconsistent_timestamps")


# --- result types (attributes named like the CLI JSON keys, CONTRACT §4) ------------------------------


@dataclass
class AuditSummary:
    """Task summary (six codes), the flow summary (eight codes) and the combined counts."""

    tasks: CodeSummary
    task_flows: CodeSummary

    @property
    def total(self) -> int:
        return self.tasks.total

    @property
    def warnings(self) -> int:
        return self.tasks.warnings

    @property
    def errors(self) -> int:
        return self.tasks.errors

    @property
    def by_code(self) -> dict[str, int]:
        return self.tasks.by_code

    @property
    def combined(self) -> dict[str, int]:
        return {"total": self.tasks.total + self.task_flows.total,
                "warnings": self.tasks.warnings + self.task_flows.warnings,
                "errors": self.tasks.errors + self.task_flows.errors}

    def to_json(self) -> dict[str, Any]:
        flows = self.task_flows.to_json()
        return {**self.tasks.to_json(), "task_flows": flows, "combined": self.combined}


@dataclass
class AuditReport:
    count: int
    filtered_count: int
    displayed: int
    filters: dict[str, Any]
    summary: AuditSummary
    findings: list[Finding]

    @property
    def task_count(self) -> int:
        return sum(f.kind == "task" for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "filtered_count": self.filtered_count, "displayed": self.displayed,
                "filters": dict(self.filters), "summary": self.summary.to_json(),
                "findings": [f.to_json() for f in self.findings]}


@dataclass
class FlowCounts:
    reconciled: int = 0
    pruned: int = 0

    def to_json(self) -> dict[str, int]:
        return {"reconciled": self.reconciled, "pruned": self.pruned}


@dataclass
class MaintenanceCounts:
    tasks: maintenance.TaskCounts
    task_flows: FlowCounts
    sessions: session_sweep.SessionPruneCounts

    def to_json(self) -> dict[str, Any]:
        return {"tasks": self.tasks.to_json(), "task_flows": self.task_flows.to_json(),
                "sessions": self.sessions.to_json()}


@dataclass
class MaintenanceReport:
    mode: str  # "preview" | "apply"
    maintenance: MaintenanceCounts
    tasks: Summary
    audit_before: AuditSummary
    audit_after: AuditSummary
    diagnostics: dict[str, Any] = field(default_factory=dict)
    retained_lost: RetainedLost = field(default_factory=RetainedLost)
    tasks_before: Summary = field(default_factory=Summary)

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "maintenance": self.maintenance.to_json(), "tasks": self.tasks.to_json(),
                "audit_before": self.audit_before.to_json(), "audit_after": self.audit_after.to_json(),
                "diagnostics": self.diagnostics}


# --- projection ------------------------------------------------------------------------------------


def project_one(ledger: HealthParts, task: Task) -> Task:
    """What maintenance would make of `task`, without writing."""
    with ledger.db.read() as conn:
        return project_batch(conn, [task], ledger.clock.now(), authoritative=ledger.authoritative,
                             retention=ledger.tasks.retention)[0]


def project_list(ledger: HealthParts, *, runtime: str | None = None, status: str | None = None,
                 limit: int | None = None) -> list[Task]:
    """Newest first, reconciled; the status filter applies to the projected status, then the limit.

    With a limit the rows are read newest first in pages and projected page by page until enough match, so a
    million-row ledger costs a page or two, not a projection of every row.
    """
    wanted = parse_enum(TaskStatus, status, "status") if status is not None else None
    rt = parse_enum(Runtime, runtime, "runtime") if runtime is not None else None
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidInputError("--limit must be a positive integer, for example --limit 25.")
    now = ledger.clock.now()
    if limit is None:
        tasks = ledger.tasks.list(runtime=rt)
        with ledger.db.read() as conn:
            projected = project_all(conn, tasks, now, authoritative=ledger.authoritative,
                                    retention=ledger.tasks.retention)
        return [t for t in projected if wanted is None or t.status == wanted]
    out: list[Task] = []
    for page in stream_newest(ledger.db, now, runtime=rt, authoritative=ledger.authoritative,
                              retention=ledger.tasks.retention, batch=max(limit, LIST_PAGE)):
        out.extend(t for t in page if wanted is None or t.status == wanted)
        if len(out) >= limit:
            break
    return out[:limit]


# --- inspection: one streamed pass for summary + audit ---------------------------------------------


@dataclass
class Inspection:
    summary: Summary
    tasks: TaskAudit
    flow_findings: list[Finding]

    def audit_summary(self) -> AuditSummary:
        return AuditSummary(self.tasks.summary, flow_code_summary(self.flow_findings))


def inspect(ledger: HealthParts, now: datetime, *, keep: bool) -> Inspection:
    """Reconciled summary and audit; with keep=False only counts are held, so memory stays flat."""
    with ledger.db.read() as conn:
        summary = count_stored(conn)
    audit = tally(summary, now, ledger.tasks.retention,
                  stream_projected(ledger.db, now, authoritative=ledger.authoritative,
                                   retention=ledger.tasks.retention), keep=keep)
    return Inspection(summary, audit, flow_findings(ledger, now))


def flow_findings(ledger: HealthParts, now: datetime) -> list[Finding]:
    with ledger.db.read() as conn:
        return audit_flows(conn, now)


def flow_maintenance(ledger: HealthParts, now: datetime, *, apply: bool) -> FlowCounts:
    """The preview counts the plan's own actions; apply re-checks each flow and counts what it did."""
    with ledger.db.read() as conn:
        plan = plan_flows(conn, now)
    if not apply:
        return FlowCounts(plan.reconciled, plan.pruned)
    reconciled, pruned = apply_flows(ledger, plan, now)
    return FlowCounts(reconciled, pruned)


# --- the entry points the façade delegates to --------------------------------------------------------


def run_maintenance(ledger: HealthParts, *, apply: bool) -> MaintenanceReport:
    """Audit before → task sweep (+ diagnostics, ACP repair) → flows → session registry → summary, audit after."""
    now = ledger.clock.now()
    before = inspect(ledger, now, keep=False)
    swept = maintenance.sweep(ledger.tasks, now, apply=apply, authoritative=ledger.authoritative)
    acp = session_sweep.repair_acp_sessions(ledger.db, apply=apply)
    flows = flow_maintenance(ledger, now, apply=apply)
    with ledger.db.read() as conn:
        running = backing.running_cron_jobs(conn)
    sessions = session_sweep.prune_cron_run_sessions(ledger.db, now, running, apply=apply)
    after = inspect(ledger, now, keep=False) if apply else before
    diagnostics = {"stale_running_tasks": swept.stale_running, "stale_running_total": swept.stale_running_total,
                   "acp_sessions": acp.to_json()}
    return MaintenanceReport(
        mode="apply" if apply else "preview",
        maintenance=MaintenanceCounts(swept.counts, flows, sessions),
        tasks=after.summary, audit_before=before.audit_summary(), audit_after=after.audit_summary(),
        diagnostics=diagnostics, retained_lost=after.tasks.retained, tasks_before=before.summary,
    )


def run_audit(ledger: HealthParts, *, severity: str | None = None, code: str | None = None,
              limit: int | None = None) -> AuditReport:
    """Task and flow findings over the reconciled view; filters first, then the limit (REFERENCE §7.3)."""
    sev = parse_enum(Severity, severity, "severity") if severity is not None else None
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidInputError("--limit must be a positive integer, for example --limit 25.")
    now = ledger.clock.now()
    found = inspect(ledger, now, keep=True)
    combined = sort_findings([*found.tasks.findings, *found.flow_findings])
    matching = [f for f in combined if (sev is None or f.severity == sev) and (code is None or f.code == code)]
    shown = matching[:limit] if limit is not None else matching
    return AuditReport(count=len(combined), filtered_count=len(matching), displayed=len(shown),
                       filters={"severity": sev.value if sev else None, "code": code, "limit": limit},
                       summary=found.audit_summary(), findings=shown)


def summarize(ledger: HealthParts) -> Summary:
    return inspect(ledger, ledger.clock.now(), keep=False).summary


def status(ledger: HealthParts) -> StatusReport:
    """Task pressure: failures exclude retained lost tasks; audit counts are the actionable ones."""
    found = inspect(ledger, ledger.clock.now(), keep=False)
    return compose(found.summary, found.tasks, found.flow_findings, flow_pressure(ledger))


def flow_pressure(ledger: HealthParts) -> dict[str, Any]:
    """The `TaskFlow pressure` of `tasks flow list`, over every flow (status_report.flow_pressure)."""
    with ledger.db.read() as conn:
        by_status, cancelling = flow_store.pressure_counts(conn)
    return status_report.flow_pressure(by_status, cancelling)
