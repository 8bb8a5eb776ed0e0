"""`flowledger tasks audit|maintenance|board` and `flowledger status`: parse, call flows.health, render."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from flowledger.cli.context import app_context
from flowledger.cli.options import wants_json
from flowledger.cli.render import emit_json, out, safe, when
from flowledger.cli.tables import Col, render, short_ids
from flowledger.tasks.core.errors import InvalidInputError
from flowledger.tasks.core.sessionkeys import parse_agent_id
from flowledger.tasks.health import board
from flowledger.tasks.health.findings import Finding, Severity

if TYPE_CHECKING:  # the health stack (SQLAlchemy, the schema) is imported by the commands that run it
    from flowledger.flows import health
    from flowledger.flows.ledger import Ledger
    from flowledger.tasks.core.models import Task
    from flowledger.tasks.health.summary import Summary

SeverityOpt = StrEnum("SeverityOpt", {s.value: s.value for s in Severity})  # type: ignore[misc]
JsonFlag = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]
LIMIT_MESSAGE = "--limit must be a positive integer, for example --limit 25."


def register(app: typer.Typer, tasks_app: typer.Typer) -> None:
    @tasks_app.command("audit")
    def audit_cmd(
        ctx: typer.Context,
        severity: Annotated[SeverityOpt | None, typer.Option("--severity", help="warn | error")] = None,
        code: Annotated[str | None, typer.Option("--code", metavar="CODE",
                                                 help="Only this finding code (stale_queued, lost, …).")] = None,
        limit: Annotated[str | None, typer.Option("--limit", metavar="N", help="Show at most N findings.")] = None,
        json_out: JsonFlag = False,
    ) -> None:
        """Task and flow findings: stale, lost, undelivered, uncleaned, inconsistent.

        Example: flowledger tasks audit --severity error --json
        """
        from flowledger.flows import health
        from flowledger.tasks.health.audit import TASK_CODES

        known = sorted(set(TASK_CODES) | set(health.FLOW_CODES))
        if code is not None and code.strip() not in known:
            raise InvalidInputError(f"Unknown --code {code!r}: expected one of {', '.join(known)}.")
        most = parse_limit(limit)  # usage errors before the ledger is opened
        report = health.run_audit(app_context(ctx).ledger(read_only=True),
                                  severity=severity.value if severity else None,
                                  code=code.strip() if code is not None else None, limit=most)
        if wants_json(ctx, json_out):
            emit_json(report.to_json())
            return
        for line in audit_lines(report):
            out(line)
        if report.findings:
            render_findings(report.findings)

    @tasks_app.command("maintenance")
    def maintenance_cmd(
        ctx: typer.Context,
        apply: Annotated[bool, typer.Option("--apply", help="Write the changes (default: preview only).")] = False,
        json_out: JsonFlag = False,
    ) -> None:
        """Reconcile lost tasks, recover cron runs, stamp and prune; a preview unless --apply.

        Example: flowledger tasks maintenance --apply
        """
        report = app_context(ctx).ledger().maintenance(apply=apply)
        if wants_json(ctx, json_out):
            emit_json(report.to_json())
            return
        for line in maintenance_lines(report):
            out(line)

    @tasks_app.command("board")
    def board_cmd(
        ctx: typer.Context,
        session: Annotated[str, typer.Option("--session", metavar="KEY",
                                             help="The session key whose board to show.")],
    ) -> None:
        """The /tasks board of one session; agent-local counts when nothing is linked to it.

        Example: flowledger tasks board --session agent:main:main
        """
        key = session.strip()
        if not key:
            raise InvalidInputError("--session must name a session key.")
        ledger = app_context(ctx).ledger(read_only=True)
        now = ledger.clock.now()
        tasks = ledger.tasks.list(related_session=key)
        agent_tasks: list[Task] = []
        if not board.snapshot(tasks, now).visible:
            agent = parse_agent_id(key)
            agent_tasks = ledger.tasks.list(agent_id=agent) if agent else []
        for line in board.render(tasks, now, agent_tasks=agent_tasks):
            out(safe(line))

    @app.command("status")
    def status_cmd(
        ctx: typer.Context,
        json_out: JsonFlag = False,
        session: Annotated[str | None, typer.Option("--session", metavar="KEY",
                                                    help="One session's status card instead.")] = None,
    ) -> None:
        """Task pressure: queued, running, issues, by runtime, audit counts; with --session, that session's card.

        Example: flowledger status --json
        """
        from flowledger.cli.status_views import print_status
        from flowledger.flows import health

        if session is not None:
            show_status_card(app_context(ctx).ledger(read_only=True), session, json_out=wants_json(ctx, json_out))
            return

        print_status(health.status(app_context(ctx).ledger(read_only=True)), as_json=wants_json(ctx, json_out))


def show_status_card(ledger: Ledger, session: str, *, json_out: bool) -> None:
    """`status --session KEY`: the one-line card (CONTRACT §7), `* ` for the pin where stdout cannot encode it."""
    from flowledger.tasks.health import status_card

    if not session.strip():
        raise InvalidInputError("--session must name a session key.")
    card = status_card.for_session(ledger.tasks, session)
    if json_out:
        emit_json(card.to_json())
    else:
        out(safe(card.line(sys.stdout.encoding)))


def parse_limit(raw: str | None) -> int | None:
    if raw is None:
        return None
    text = raw.strip()
    if not text.isdigit() or int(text) < 1:
        raise InvalidInputError(LIMIT_MESSAGE)
    return int(text)


def age_text(age_ms: int | None) -> str:
    if age_ms is None:
        return "n/a"
    if age_ms < 1000:
        return "fresh"
    seconds = age_ms // 1000
    days, hours, minutes = seconds // 86_400, (seconds // 3600) % 24, (seconds // 60) % 60
    if days:
        return f"{days}d{hours}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h{minutes}m"
    if seconds >= 60:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def audit_lines(report: health.AuditReport) -> list[str]:
    combined = report.summary.combined
    lines = [f"Tasks audit: {combined['total']} findings · {combined['errors']} errors · "
             f"{combined['warnings']} warnings"]
    filters = report.filters
    if filters["severity"] or filters["code"] or filters["limit"]:
        lines.append(f"Showing {report.displayed} matching findings.")
        if filters["severity"]:
            lines.append(f"Severity filter: {filters['severity']}")
        if filters["code"]:
            lines.append(f"Code filter: {safe(filters['code'])}")
        if filters["limit"]:
            lines.append(f"Limit: {filters['limit']}")
    lines.append(f"Task findings: {report.summary.tasks.total} · TaskFlow findings: {report.summary.task_flows.total}")
    if not report.findings:
        lines.append("No tasks audit findings.")
    return lines


def render_findings(findings: list[Finding]) -> None:
    short = short_ids([f.token for f in findings if f.token])
    columns = [Col("Scope"), Col("Severity"), Col("Code"), Col("Item"), Col("Status"), Col("Age"),
               Col("Detail", fixed=False)]
    rows = [["Task" if f.kind == "task" else "TaskFlow", f.severity.value, f.code,
             short.get(f.token, "n/a") if f.token else "n/a", f.status, age_text(f.age_ms), f.detail]
            for f in findings]
    render(columns, rows, status_column=4)


def _health(summary: Summary, audit: health.AuditSummary) -> str:
    combined = audit.combined
    return (f"{summary.queued} queued · {summary.running} running · {combined['errors']} audit errors · "
            f"{combined['warnings']} audit warnings")


def maintenance_lines(report: health.MaintenanceReport) -> list[str]:
    counts = report.maintenance
    t, f, s = counts.tasks, counts.task_flows, counts.sessions
    applied = report.mode == "apply"
    lines = [
        f"Tasks maintenance ({'applied' if applied else 'preview'}): tasks {t.reconciled} reconcile · "
        f"{t.recovered} recovered · {t.cleanup_stamped} cleanup stamp · {t.pruned} prune; "
        f"task-flows {f.reconciled} reconcile · {f.pruned} prune",
        f"Session registry: {s.pruned} prune · {s.running_cron_jobs} running cron jobs",
        f"Tasks health{' after apply' if applied else ''}: {_health(report.tasks, report.audit_after)}",
    ]
    retained = report.retained_lost
    if retained.count:
        lines.append(f"Retained lost tasks: {retained.count} retained until {when(retained.next_cleanup_after)}; "
                     "maintenance will prune after cleanupAfter.")
    if applied:
        lines.append(f"Tasks health before apply: {_health(report.tasks_before, report.audit_before)}")
    else:
        lines.append("Dry run only. Re-run with `flowledger tasks maintenance --apply` to write changes.")
    return lines
