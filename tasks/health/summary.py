"""Task pressure (REFERENCE §8): counts by status and runtime, active / terminal / failures.

`count_stored` reads the counts the database keeps in every writing transaction (tasks/core/counts.py): a few
dozen rows whatever the ledger's size, and exact as of the last commit; the projection then only moves the few
rows it reconciles (`shift`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import ACTIVE, FAILURES, Runtime, TaskStatus

if TYPE_CHECKING:  # Summary is shared with the lean SQLite door (tasks/health/sqlite_reads.py), which never
    from sqlalchemy import Connection  # loads SQLAlchemy


def _zero_status() -> dict[str, int]:
    return {s.value: 0 for s in TaskStatus}


def _zero_runtime() -> dict[str, int]:
    return {r.value: 0 for r in (Runtime.SUBAGENT, Runtime.ACP, Runtime.CLI, Runtime.CRON)}


@dataclass
class Summary:
    """CONTRACT §3 Summary: `total, active, terminal, failures, by_status, by_runtime`."""

    by_status: dict[str, int] = field(default_factory=_zero_status)
    by_runtime: dict[str, int] = field(default_factory=_zero_runtime)
    failures_offset: int = 0  # retained-lost findings the status view does not count as failures
    # (status, runtime) -> count: the cross-tabulation behind both dicts, for `/metrics` (not in the JSON).
    by_status_runtime: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def active(self) -> int:
        return sum(self.by_status[s.value] for s in ACTIVE)

    @property
    def terminal(self) -> int:
        return self.total - self.active

    @property
    def failures(self) -> int:
        return max(0, sum(self.by_status[s.value] for s in FAILURES) - self.failures_offset)

    @property
    def queued(self) -> int:
        return self.by_status[TaskStatus.QUEUED.value]

    @property
    def running(self) -> int:
        return self.by_status[TaskStatus.RUNNING.value]

    def add(self, task: Task, n: int = 1) -> None:
        self.by_status[task.status.value] += n
        self.by_runtime[task.runtime.value] = self.by_runtime.get(task.runtime.value, 0) + n
        self._count_pair(task.status.value, task.runtime.value, n)

    def shift(self, before: Task, after: Task) -> None:
        """Move one task from its stored status to its projected one."""
        if before.status != after.status:
            self.by_status[before.status.value] -= 1
            self.by_status[after.status.value] += 1
            self._count_pair(before.status.value, before.runtime.value, -1)
            self._count_pair(after.status.value, after.runtime.value, 1)

    def _count_pair(self, status: str, runtime: str, n: int) -> None:
        self.by_status_runtime[(status, runtime)] = self.by_status_runtime.get((status, runtime), 0) + n

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "active": self.active, "terminal": self.terminal, "failures": self.failures,
                "by_status": dict(self.by_status), "by_runtime": dict(self.by_runtime)}


def summarize_tasks(tasks: Iterable[Task]) -> Summary:
    summary = Summary()
    for task in tasks:
        summary.add(task)
    return summary


def count_stored(conn: Connection) -> Summary:
    """The stored records' summary from the kept counts (equal to a GROUP BY over every row, see counts.py)."""
    from flowledger.tasks.core import counts

    return from_counts(counts.read(conn))


def from_counts(rows: Iterable[tuple[str, str, int]]) -> Summary:
    """The summary of (status, runtime, count) rows, as `counts.read` gives them (either door)."""
    summary = Summary()
    for status, runtime, count in rows:
        summary.by_status[status] = summary.by_status.get(status, 0) + count
        summary.by_runtime[runtime] = summary.by_runtime.get(runtime, 0) + count
        summary._count_pair(status, runtime, count)
    return summary
