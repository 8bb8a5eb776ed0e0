"""How `flowledger status` prints its report: shared by the full CLI (cli/health_cmd.py) and the lean door
(cli/lean.py), which must print the same bytes and imports neither typer nor the storage layer."""

from __future__ import annotations

from flowledger.cli.render import emit_json, out, when
from flowledger.flows.status_report import StatusReport


def print_status(report: StatusReport, *, as_json: bool) -> None:
    if as_json:
        emit_json(report.to_json())
        return
    for line in status_lines(report):
        out(line)


def status_lines(report: StatusReport) -> list[str]:
    summary = report.tasks
    runtimes = " · ".join(f"{name} {count}" for name, count in summary.by_runtime.items())
    audit = report.audit
    lines = [report.line, f"By runtime: {runtimes}",
             f"Audit: {audit['errors']} errors · {audit['warnings']} warnings" if audit["total"] else "Audit: clean"]
    if report.retained_lost is not None:
        lines.append(f"Retained lost tasks: {report.retained_lost.count} retained until "
                     f"{when(report.retained_lost.next_cleanup_after)}.")
    if report.flows is not None:
        flows = report.flows
        lines.append(f"Flows: {flows['active']} active · {flows['blocked']} blocked · "
                     f"{flows['cancel_requested']} cancel-requested · {flows['total']} total")
    return lines
