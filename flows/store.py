"""Row mapping and queries for flow records. Every function takes an open connection: the service owns
transactions, the store owns SQL. Writes are compare-and-set on `revision`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, delete, func, insert, select, update
from sqlalchemy.sql import Select

from flowledger.flows.flow_rows import mapping_to_flow
from flowledger.flows.models import (
    ABSENT,
    LINK_TERMINAL,
    Flow,
    FlowStatus,
    SyncMode,
    parse_sync_mode,
)
from flowledger.tasks.core import store as task_store
from flowledger.tasks.core.errors import InvalidPersistedValueError
from flowledger.tasks.core.models import DeliveryOrigin, Task
from flowledger.tasks.core.states import ACTIVE
from flowledger.tasks.core.tables import flow_runs, task_runs

_COLUMNS = [c for c in flow_runs.c if c.name != "seq"]
NEWEST_FIRST = (flow_runs.c.created_at.desc(), flow_runs.c.seq.desc())


def dump_json(value: Any) -> str | None:
    """ABSENT → SQL NULL; an explicit None → the text 'null'; anything else → its JSON text."""
    if value is ABSENT:
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def row_to_flow(row: Row[Any]) -> Flow:
    return mapping_to_flow(row._mapping)


def flow_values(flow: Flow) -> dict[str, Any]:
    return {
        "flow_id": flow.flow_id,
        "sync_mode": flow.sync_mode.value,
        "owner_key": flow.owner_key,
        "requester_origin_json": json.dumps(flow.requester_origin.to_json()) if flow.requester_origin else None,
        "controller_id": flow.controller_id,
        "revision": flow.revision,
        "status": flow.status.value,
        "notify_policy": flow.notify_policy.value,
        "goal": flow.goal,
        "current_step": flow.current_step,
        "blocked_task_id": flow.blocked_task_id,
        "blocked_summary": flow.blocked_summary,
        "state_json": dump_json(flow.state),
        "wait_json": dump_json(flow.wait),
        "cancel_requested_at": flow.cancel_requested_at,
        "created_at": flow.created_at,
        "updated_at": flow.updated_at,
        "ended_at": flow.ended_at,
    }


@dataclass(frozen=True, slots=True)
class FlowHead:
    """The columns link checks and task-write syncs need, read without parsing the (possibly large) JSON."""

    flow_id: str
    sync_mode: SyncMode
    owner_key: str
    status: FlowStatus
    revision: int
    cancel_requested_at: datetime | None

    @property
    def is_link_terminal(self) -> bool:
        return self.status in LINK_TERMINAL


def head(conn: Connection, flow_id: str, *, for_update: bool = False) -> FlowHead | None:
    stmt = select(flow_runs.c.flow_id, flow_runs.c.sync_mode, flow_runs.c.owner_key, flow_runs.c.status,
                  flow_runs.c.revision, flow_runs.c.cancel_requested_at).where(flow_runs.c.flow_id == flow_id)
    if for_update:
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).first()
    if row is None:
        return None
    try:
        status = FlowStatus(row.status)
    except ValueError:
        raise InvalidPersistedValueError("flow", flow_id, "status", row.status) from None
    return FlowHead(row.flow_id, parse_sync_mode(row.sync_mode), row.owner_key, status, int(row.revision or 0),
                    row.cancel_requested_at)


def origin_of(conn: Connection, flow_id: str) -> DeliveryOrigin | None:
    text = conn.execute(select(flow_runs.c.requester_origin_json).where(flow_runs.c.flow_id == flow_id)).scalar()
    return stored_origin(text)


def stored_origin(text: str | None) -> DeliveryOrigin | None:
    """A flow's stored delivery origin (unreadable: none, never an error)."""
    if not text:
        return None
    try:
        return DeliveryOrigin.from_mapping(json.loads(text))
    except ValueError:
        return None


def _select() -> Select[Any]:
    return select(*_COLUMNS, flow_runs.c.seq)


def get(conn: Connection, flow_id: str, *, for_update: bool = False) -> Flow | None:
    stmt = _select().where(flow_runs.c.flow_id == flow_id)
    if for_update:
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).first()
    return row_to_flow(row) if row is not None else None


def list_flows(conn: Connection, *, status: FlowStatus | None = None, owner_key: str | None = None,
               controller_id: str | None = None, limit: int | None = None, since: datetime | None = None,
               offset: int = 0) -> list[Flow]:
    stmt = _select().where(*_filters(owner_key=owner_key, since=since))
    if status is not None:
        stmt = stmt.where(flow_runs.c.status == status.value)
    if controller_id is not None:
        stmt = stmt.where(flow_runs.c.controller_id == controller_id)
    stmt = stmt.order_by(*NEWEST_FIRST).offset(offset or None)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [row_to_flow(row) for row in conn.execute(stmt)]


def count_by_status(conn: Connection, *, owner_key: str | None = None, since: datetime | None = None
                    ) -> dict[str, tuple[int, int]]:
    """status -> (flows, flows with a cancel request) over the flows matching the filters, one grouped COUNT."""
    c = flow_runs.c
    stmt = select(c.status, func.count(), func.count(c.cancel_requested_at)).where(
        *_filters(owner_key=owner_key, since=since)).group_by(c.status)
    return {str(status): (int(n), int(cancelling)) for status, n, cancelling in conn.execute(stmt)}


def _filters(*, owner_key: str | None, since: datetime | None) -> list[Any]:
    where: list[Any] = []
    if owner_key is not None:
        where.append(flow_runs.c.owner_key == owner_key)
    if since is not None:
        where.append(flow_runs.c.created_at >= since)
    return where


def stream(conn: Connection, *, after_seq: int, batch: int) -> list[tuple[int, Flow]]:
    """One keyset batch in insertion order, for maintenance and audit passes over every flow."""
    stmt = _select().where(flow_runs.c.seq > after_seq).order_by(flow_runs.c.seq).limit(batch)
    return [(row._mapping["seq"], row_to_flow(row)) for row in conn.execute(stmt)]


def insert_flow(conn: Connection, flow: Flow) -> None:
    conn.execute(insert(flow_runs).values(**flow_values(flow)))


def compare_and_set(conn: Connection, flow: Flow, *, expected_revision: int) -> bool:
    """Write `flow` only if the stored revision is still `expected_revision`."""
    values = flow_values(flow)
    del values["flow_id"]
    result = conn.execute(
        update(flow_runs)
        .where(and_(flow_runs.c.flow_id == flow.flow_id, flow_runs.c.revision == expected_revision))
        .values(**values)
    )
    return bool(result.rowcount)


def delete_flows(conn: Connection, flow_ids: Sequence[str]) -> int:
    if not flow_ids:
        return 0
    return int(conn.execute(delete(flow_runs).where(flow_runs.c.flow_id.in_(list(flow_ids)))).rowcount)


# --- linked tasks -----------------------------------------------------------------------------------------


def linked_tasks(conn: Connection, flow_id: str) -> list[Task]:
    """Every task whose parent_flow_id is this flow, newest first."""
    return task_store.list_tasks(conn, parent_flow_ids=[flow_id])


def linked_for(conn: Connection, flow_ids: Sequence[str]) -> dict[str, list[Task]]:
    out: dict[str, list[Task]] = {fid: [] for fid in flow_ids}
    if not flow_ids:
        return out
    for task in task_store.list_tasks(conn, parent_flow_ids=list(flow_ids)):
        if task.parent_flow_id is not None:
            out.setdefault(task.parent_flow_id, []).append(task)
    return out


def active_linked_count(conn: Connection, flow_id: str) -> int:
    stmt = select(func.count()).select_from(task_runs).where(
        and_(task_runs.c.parent_flow_id == flow_id, task_runs.c.status.in_([s.value for s in ACTIVE]))
    )
    return int(conn.execute(stmt).scalar() or 0)


def existing_task_ids(conn: Connection, task_ids: Sequence[str]) -> set[str]:
    if not task_ids:
        return set()
    stmt = select(task_runs.c.task_id).where(task_runs.c.task_id.in_(list(task_ids)))
    return {row[0] for row in conn.execute(stmt)}


def pressure_counts(conn: Connection) -> tuple[dict[str, int], int]:
    """Flows per status, and how many carry an outstanding cancel intent (requested, not yet terminal)."""
    by_status = {s.value: 0 for s in FlowStatus}
    for status, count in conn.execute(select(flow_runs.c.status, func.count()).group_by(flow_runs.c.status)):
        by_status[str(status)] = int(count)
    cancelling = conn.execute(select(func.count()).select_from(flow_runs).where(and_(
        flow_runs.c.cancel_requested_at.is_not(None),
        flow_runs.c.status.not_in([s.value for s in LINK_TERMINAL])))).scalar()
    return by_status, int(cancelling or 0)
