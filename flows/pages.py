"""The values a listing answers with (CONTRACT §7): the paging asked for, and a page of tasks or flows with the
counts over everything that matches. Plain values, no storage: flows/listing.py fills them through the ORM
store, tasks/health/sqlite_reads.py through the lean SQLite door, and the CLI and the web board render them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flowledger.flows.models import LINK_TERMINAL, Flow, FlowStatus
from flowledger.tasks.core import limits
from flowledger.tasks.core.errors import InvalidInputError
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import FAILURES, TaskStatus

DEFAULT_LIMIT = 100


@dataclass(frozen=True, slots=True)
class Paging:
    limit: int | None = DEFAULT_LIMIT  # None = all
    offset: int = 0

    @classmethod
    def parse(cls, limit: int, offset: int) -> Paging:
        """`--limit N` (0 = all) and `--offset N`; negative values are usage errors."""
        if limit < 0:
            raise InvalidInputError(f"--limit must be 0 (all) or a positive integer, not {limit}.")
        if offset < 0:
            raise InvalidInputError(f"--offset must be 0 or a positive integer, not {offset}.")
        for name, value in (("--limit", limit), ("--offset", offset)):
            if value > limits.MAX_COUNT:  # a database integer holds it; 10^12 rows is beyond any ledger
                raise InvalidInputError(f"{name} must be at most {limits.MAX_COUNT}, not {value}.")
        return cls(limit=limit or None, offset=offset)


@dataclass
class TaskPage:
    tasks: list[Task]
    total: int  # every task matching the filters
    counts: dict[str, int]  # projected status -> count over every task matching the filters
    filters: dict[str, Any] = field(default_factory=dict)

    @property
    def pressure(self) -> tuple[int, int, int]:
        counts = self.counts
        return (counts[TaskStatus.QUEUED.value], counts[TaskStatus.RUNNING.value],
                sum(counts[s.value] for s in FAILURES))


@dataclass
class FlowPage:
    flows: list[Flow]
    linked: dict[str, list[Task]]
    total: int
    counts: dict[str, tuple[int, int]]  # status -> (flows, cancel requests)
    filters: dict[str, Any] = field(default_factory=dict)

    @property
    def pressure(self) -> tuple[int, int, int]:
        """(active, blocked, cancel-requested) over every flow matching the filters."""
        active = sum(self.counts.get(s.value, (0, 0))[0] for s in (FlowStatus.QUEUED, FlowStatus.RUNNING))
        blocked = self.counts.get(FlowStatus.BLOCKED.value, (0, 0))[0]
        # Only outstanding intent counts (reference-bugs 117713): requested and not yet terminal.
        cancelling = sum(n for status, (_, n) in self.counts.items() if FlowStatus(status) not in LINK_TERMINAL)
        return active, blocked, cancelling
