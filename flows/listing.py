"""The task and flow listings of the operator's surface (CONTRACT §7): filters, a page, and the counts over
everything that matches — what `tasks list`, `tasks flow list` and the web board's `/api/tasks` and
`/api/flows` show. The SQL lives in tasks.listing and flows.store; this module composes them with lookups.
The page values (`Paging`, `TaskPage`, `FlowPage`) live in flows/pages.py, shared with the lean read path.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from flowledger.flows import store
from flowledger.flows.models import FlowStatus
from flowledger.flows.pages import DEFAULT_LIMIT, FlowPage, Paging, TaskPage
from flowledger.tasks.core.clock import iso_z
from flowledger.tasks.core.errors import FlowNotFoundError, InvalidInputError
from flowledger.tasks.core.states import Runtime, TaskStatus, parse_enum
from flowledger.tasks.health import listing

__all__ = ["DEFAULT_LIMIT", "FlowPage", "Paging", "TaskPage", "flow_page", "parse_since", "task_page"]

if TYPE_CHECKING:
    from flowledger.flows.ledger import Ledger


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
        raise InvalidInputError(f"Invalid --since {raw!r}: expected a duration (30m, 2h, 7d) or an ISO time with a "
                           "zone (2026-12-03T10:00:00Z).") from None
    if parsed.tzinfo is None:
        raise InvalidInputError(f"Invalid --since {raw!r}: the time has no zone; add Z or an offset (+02:00).")
    return parsed


def task_page(ledger: Ledger, *, runtime: str | None = None, status: str | None = None,
              owner_key: str | None = None, flow: str | None = None, since: datetime | None = None,
              paging: Paging | None = None) -> TaskPage:
    """Tasks newest first (reconciled view), `flow` being a flow lookup; InvalidInputError for bad enum values."""
    paging = paging or Paging()
    flow_id = None
    if flow is not None:
        found = ledger.flows.get(flow)
        if found is None:
            raise FlowNotFoundError(flow)
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
