"""The flow rows of the lean SQLite door (tasks/health/sqlite_reads.py): what `tasks flow list` and `tasks flow show`
read, in the same shape as flows/store.py and flows/service.py `resolve`, mapped by the shared
flows/flow_rows.py. tests/store/test_sqlite_reads.py checks them against the ORM store on one ledger."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from flowledger.flows import status_report
from flowledger.flows.audit import BATCH, FlowBatch, audit_flow_batches
from flowledger.flows.flow_rows import raw_to_flow
from flowledger.flows.models import LINK_TERMINAL, Flow
from flowledger.tasks.health.sqlite_reads import FallbackError, LeanReader
from flowledger.tasks.health.summary import from_counts

FLOW_KEYS = ("flow_id", "sync_mode", "owner_key", "requester_origin_json", "controller_id", "revision", "status",
             "notify_policy", "goal", "current_step", "blocked_task_id", "blocked_summary", "state_json",
             "wait_json", "cancel_requested_at", "created_at", "updated_at", "ended_at")
_FLOW_SELECT = "SELECT " + ", ".join(FLOW_KEYS) + " FROM flow_runs"
_FLOW_KEYSET = "SELECT " + ", ".join(FLOW_KEYS) + ", seq FROM flow_runs WHERE seq > ? ORDER BY seq LIMIT ?"


def _flows(reader: LeanReader, where: str = "", params: Sequence[object] = (), tail: str = "") -> list[Flow]:
    sql = _FLOW_SELECT + (f" WHERE {where}" if where else "") + tail
    return [raw_to_flow(FLOW_KEYS, row) for row in reader.conn.execute(sql, tuple(params))]


def resolve_flow(reader: LeanReader, lookup: str) -> Flow:
    """Flow id, else the owner's newest live flow, else its newest flow, else a unique id prefix."""
    token = (lookup or "").strip()
    if not token:
        raise FallbackError("empty lookup")
    found = _flows(reader, "flow_id = ?", [token])
    if found:
        return found[0]
    owned = _flows(reader, "owner_key = ?", [token], " ORDER BY created_at DESC, seq DESC")
    pool = [f for f in owned if f.status not in LINK_TERMINAL] or owned
    if pool:
        return pool[0]
    ids = reader.prefix_ids("flow_runs", "flow_id", token)
    if len(ids) != 1:
        raise FallbackError(f"{len(ids)} flow ids start with the prefix")
    return _flows(reader, "flow_id = ?", ids)[0]


def newest_flows(reader: LeanReader, *, limit: int, offset: int = 0) -> list[Flow]:
    return _flows(reader, "", (limit, offset), " ORDER BY created_at DESC, seq DESC LIMIT ? OFFSET ?")


def flow_counts(reader: LeanReader) -> dict[str, tuple[int, int]]:
    """status -> (flows, flows with a cancel request), one grouped COUNT (flows/store.py)."""
    rows = reader.conn.execute("SELECT status, count(*), count(cancel_requested_at) FROM flow_runs GROUP BY status")
    return {str(status): (int(n), int(cancelling)) for status, n, cancelling in rows}


def flow_batches(reader: LeanReader) -> Iterator[FlowBatch]:
    """Every flow in keyset batches of insertion order with its linked tasks (flows/audit.py `_batches`)."""
    after = 0
    while True:
        rows = reader.conn.execute(_FLOW_KEYSET, (after, BATCH)).fetchall()
        if not rows:
            return
        after = int(rows[-1][-1])
        flows = [raw_to_flow(FLOW_KEYS, row[:-1]) for row in rows]
        yield flows, reader.linked_for([flow.flow_id for flow in flows])


def status(reader: LeanReader) -> status_report.StatusReport:
    """flows/health.py `status` over one read transaction: the same counts, projection, audits and pressure."""
    summary = from_counts(reader.stored_counts())
    audit = status_report.tally(summary, reader.now, reader.retention, reader.noteworthy(), keep=False)
    findings = audit_flow_batches(flow_batches(reader), reader.now)
    by_status, cancelling = status_report.pressure_counts(
        (state, n, requested) for state, (n, requested) in flow_counts(reader).items())
    return status_report.compose(summary, audit, findings, status_report.flow_pressure(by_status, cancelling))
