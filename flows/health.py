"""Health of the whole ledger: the reconciled projection, maintenance, audit and summary.

Composes the task half (tasks.maintenance / tasks.audit) with the flow half (flows.maintenance /
flows.audit). Until those land, the projection is the stored record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flowledger.tasks.models import Task

if TYPE_CHECKING:
    from flowledger.flows.ledger import Ledger


def project_one(ledger: Ledger, task: Task) -> Task:
    """What maintenance would make of `task`, without writing."""
    _ = ledger
    return task


def project_list(ledger: Ledger, *, runtime: str | None = None, status: str | None = None) -> list[Task]:
    return ledger.tasks.list(runtime=runtime, status=status)


def run_maintenance(ledger: Ledger, *, apply: bool) -> Any:
    raise NotImplementedError


def run_audit(ledger: Ledger) -> Any:
    raise NotImplementedError


def summarize(ledger: Ledger) -> Any:
    raise NotImplementedError
