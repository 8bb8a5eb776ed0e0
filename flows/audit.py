"""Flow audit findings (REFERENCE §7.2): pure rules over flows and their linked tasks, read in one pass.

Findings share the task audit's shape (`tasks.findings.Finding`, kind "task_flow"), so the combined audit sorts
both with one comparator. Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from flowledger.flows.models import ABSENT, LINK_TERMINAL, Flow, FlowStatus, SyncMode
from flowledger.tasks.core.errors import InvalidPersistedValueError
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import ACTIVE
from flowledger.tasks.health.findings import Finding, Severity

if TYPE_CHECKING:  # the rules are shared with the lean SQLite door (flows/lean_status.py), which never loads
    from sqlalchemy import Connection  # SQLAlchemy; only `audit_flows` reads through the ORM store

# One keyset batch of flows with every flow's linked tasks (stored, not projected), in insertion order.
FlowBatch = tuple[Sequence[Flow], dict[str, list[Task]]]

STALE_AFTER = timedelta(minutes=30)
CANCEL_STUCK_AFTER = timedelta(minutes=5)
BATCH = 500
FLOW_CODES: tuple[str, ...] = ("restore_failed", "stale_running", "stale_waiting", "stale_blocked", "cancel_stuck",
                               "missing_linked_tasks", "blocked_task_missing", "inconsistent_timestamps")
_STALE = {
    FlowStatus.RUNNING: ("stale_running", Severity.ERROR, "running TaskFlow has not advanced recently"),
    FlowStatus.WAITING: ("stale_waiting", Severity.WARN, "waiting TaskFlow has not advanced recently"),
    FlowStatus.BLOCKED: ("stale_blocked", Severity.WARN, "blocked TaskFlow has not advanced recently"),
}


def _ms(delta: timedelta) -> int:
    return max(0, (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000)


def _finding(flow: Flow, severity: Severity, code: str, detail: str, age_ms: int | None) -> Finding:
    return Finding(kind="task_flow", severity=severity, code=code, detail=detail, age_ms=age_ms,
                   status=flow.status.value, token=flow.flow_id, created_at=flow.created_at, subject=flow)


def flow_findings(flow: Flow, linked: Sequence[Task], now: datetime) -> list[Finding]:
    """Every finding for one flow, given all its linked tasks."""
    out: list[Finding] = []
    age = _ms(now - (flow.updated_at or flow.created_at))
    stale_ms = _ms(STALE_AFTER)
    stale = _STALE.get(flow.status)
    if stale is not None and age >= stale_ms:
        out.append(_finding(flow, stale[1], stale[0], stale[2], age))
    active = sum(t.status in ACTIVE for t in linked)
    if flow.cancel_requested_at is not None and flow.status not in LINK_TERMINAL and active == 0:
        waited = _ms(now - flow.cancel_requested_at)
        if waited >= _ms(CANCEL_STUCK_AFTER):
            out.append(_finding(flow, Severity.WARN, "cancel_stuck",
                                "cancel-requested TaskFlow has no active child tasks but is still nonterminal", waited))
    has_wait = flow.wait is not ABSENT and flow.wait is not None
    if (flow.sync_mode == SyncMode.MANAGED and stale is not None and age >= stale_ms and not linked
            and not flow.blocked_task_id and not flow.blocked_summary and not has_wait):
        severity = Severity.ERROR if flow.status == FlowStatus.RUNNING else Severity.WARN
        out.append(_finding(flow, severity, "missing_linked_tasks",
                            "managed TaskFlow has no linked tasks or wait state", age))
    if flow.blocked_task_id and flow.blocked_task_id not in {t.task_id for t in linked}:
        out.append(_finding(flow, Severity.WARN, "blocked_task_missing",
                            f"blocked TaskFlow points at missing task {flow.blocked_task_id}", age))
    detail = timeline_violation(flow)
    if detail is not None:
        out.append(_finding(flow, Severity.WARN, "inconsistent_timestamps", detail, age))
    return out


def timeline_violation(flow: Flow) -> str | None:
    if flow.updated_at < flow.created_at:
        return "updatedAt is earlier than createdAt"
    if flow.ended_at is not None and flow.ended_at < flow.created_at:
        return "endedAt is earlier than createdAt"
    if flow.ended_at is not None and flow.ended_at < flow.updated_at:
        return "endedAt is earlier than updatedAt"
    return None


def audit_flows(conn: Connection, now: datetime) -> list[Finding]:
    """Every flow finding, sorted: errors first, then oldest first, then creation order."""
    return audit_flow_batches(_batches(conn), now)


def _batches(conn: Connection) -> Iterator[FlowBatch]:
    from flowledger.flows import store

    after = 0
    while True:
        batch = store.stream(conn, after_seq=after, batch=BATCH)
        if not batch:
            return
        after = batch[-1][0]
        flows = [flow for _, flow in batch]
        yield flows, store.linked_for(conn, [flow.flow_id for flow in flows])


def audit_flow_batches(batches: Iterable[FlowBatch], now: datetime) -> list[Finding]:
    """The findings over every flow, read batch by batch by either door; a stored value that cannot be
    restored is the one `restore_failed` finding."""
    out: list[Finding] = []
    try:
        for flows, linked in batches:
            for flow in flows:
                out.extend(flow_findings(flow, linked.get(flow.flow_id, []), now))
    except InvalidPersistedValueError as exc:
        return [Finding(kind="task_flow", severity=Severity.ERROR, code="restore_failed",
                        detail=f"task-flow registry restore failed: {exc.message}", age_ms=None, status="n/a",
                        token=None)]
    out.sort(key=Finding.sort_key)
    return out


def summarize_flow_findings(findings: Sequence[Finding]) -> dict[str, Any]:
    """`{"total", "warnings", "errors", "by_code": {8 flow codes}}` over the task_flow findings given."""
    flows = [f for f in findings if f.kind == "task_flow"]
    by_code = dict.fromkeys(FLOW_CODES, 0)
    for finding in flows:
        by_code[finding.code] = by_code.get(finding.code, 0) + 1
    errors = sum(f.severity == Severity.ERROR for f in flows)
    return {"total": len(flows), "warnings": len(flows) - errors, "errors": errors, "by_code": by_code}
