"""The task and flow listings of the operator's surface (CONTRACT §7): filters, a page, and the counts over
everything that matches — what `tasks list`, `tasks flow list` and the web board's `/api/tasks` and
`/api/flows` show. The SQL lives in tasks.listing and flows.store; this module composes them with lookups.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flowledger.flows import store
from flowledger.flows.models import LINK_TERMINAL, Flow, FlowStatus
from flowledger.tasks.core import limits
from flowledger.tasks.core.clock import iso_z
from flowledger.tasks.core.errors import FlowNotFound, InvalidInput
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import Runtime, TaskStatus, parse_enum
from flowledger.tasks.health import listing

if TYPE_CHECKING:
    from flowledger.flows.ledger import Ledger

DEFAULT_LIMIT = 100


@dataclass(frozen=True, slots=True)
class Paging:
    limit: int | None = DEFAULT_LIMIT  # None = all
    offset: int = 0

    @classmethod
    def parse(cls, limit: int, offset: int) -> Paging:
        """`--limit N` (0 = all) and `--offset N`; negative values are usage errors."""
        if limit < 0:
            raise InvalidInput(f"--limit must be 0 (all) or a positive integer, not {limit}.")
        if offset < 0:
            raise InvalidInput(f"--offset must be 0 or a positive integer, not {offset}.")
        for name, value in (("--limit", limit), ("--offset", offset)):
            if value > limits.MAX_COUNT:  # a database integer holds it; 10^12 rows is beyond any ledger
                raise InvalidInput(f"{name} must be at most {limits.MAX_COUNT}, not {value}.")
        return cls(limit=limit or None, offset=offset)


@dataclass
class TaskPage:
    tasks: list[Task]
    total: int  # every task matching the filters
    counts: dict[str, int]  # projected status -> count over every task matching the filters
    filters: dict[str, Any] = field(default_factory=dict)

    @property
    def pressure(self) -> tuple[int, int, int]:
        return listing.pressure(self.counts)


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


def parse_since(raw: str, now: datetime) -> datetime:
    """`since` as `--since` and the board's `?since=` take it: a duration back from `now` (30m, 2h, 7d) or an
    ISO time with a zone; a time without a zone is refused."""
    text = raw.strip()
    if text and text[0].isdigit() and not any(ch in text for ch in "-:T"):
        from flowledger.tasks.core.durations import parse_duration

        return now - parse_duration(text, what="--since", allow_zero=True)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"Invalid --since {raw!r}: expected a duration (30m, 2h, 7d) or an ISO time with a "
                           "zone (2026-12-03T10:00:00Z).") from None
    if parsed.tzinfo is None:
        raise InvalidInput(f"Invalid --since {raw!r}: the time has no zone; add Z or an offset (+02:00).")
    return parsed


def task_page(ledger: Ledger, *, runtime: str | None = None, status: str | None = None,
              owner_key: str | None = None, flow: str | None = None, since: datetime | None = None,
              paging: Paging | None = None) -> TaskPage:
    """Tasks newest first (reconciled view), `flow` being a flow lookup; InvalidInput for bad enum values."""
    paging = paging or Paging()
    flow_id = None
    if flow is not None:
        found = ledger.flows.get(flow)
        if found is None:
            raise FlowNotFound(flow)
        flow_id = found.flow_id
    query = listing.TaskFilter(
        runtime=parse_enum(Runtime, runtime, "runtime") if runtime is not None else None,
        status=parse_enum(TaskStatus, status, "status") if status is not None else None,
        owner_key=owner_key, parent_flow_id=flow_id, since=since)
    projector = listing.Projector(ledger.clock.now(), ledger.authoritative, ledger.tasks.retention)
    tasks = listing.page(ledger.db, query, projector, limit=paging.limit, offset=paging.offset)
    counts = listing.count_by_status(ledger.db, query, projector)
    if query.status is not None:  # the pressure line counts what matches every filter, the status included
        counts = {s: (n if s == query.status.value else 0) for s, n in counts.items()}
    total = sum(counts.values())
    filters = {"runtime": runtime, "status": status, "owner": owner_key, "flow": flow_id, "since": iso_z(since),
               "limit": paging.limit or 0, "offset": paging.offset}
    return TaskPage(tasks, total, counts, filters)


def flow_page(ledger: Ledger, *, status: str | None = None, owner_key: str | None = None,
              since: datetime | None = None, paging: Paging | None = None) -> FlowPage:
    """Flows newest first with their linked tasks."""
    paging = paging or Paging()
    st = parse_enum(FlowStatus, status, "flow status") if status is not None else None
    with ledger.db.read() as conn:
        flows = store.list_flows(conn, status=st, owner_key=owner_key, since=since, limit=paging.limit,
                                 offset=paging.offset)
        counts = store.count_by_status(conn, owner_key=owner_key, since=since)
        linked = store.linked_for(conn, [f.flow_id for f in flows])
    if st is not None:
        counts = {s: c for s, c in counts.items() if s == st.value}
    total = sum(n for n, _ in counts.values())
    filters = {"status": status, "owner": owner_key, "since": iso_z(since), "limit": paging.limit or 0,
               "offset": paging.offset}
    return FlowPage(flows, linked, total, counts, filters)
