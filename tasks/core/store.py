"""Row mapping and queries for task records. Every function takes an open connection: the service owns
transactions, the store owns SQL. Enum columns are parsed strictly and bad values are named on load."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, insert, or_, select, update
from sqlalchemy.sql import Select

from flowledger.tasks.core import task_rows, write_batch
from flowledger.tasks.core.models import DeliveryOrigin, Task, TaskEvent
from flowledger.tasks.core.prepared import Prepared
from flowledger.tasks.core.states import (
    Runtime,
    TaskStatus,
)
from flowledger.tasks.core.tables import (
    UTCMillis,
    generation_media,
    task_delivery_state,
    task_events,
    task_payloads,
    task_runs,
)
from flowledger.tasks.core.task_rows import changed_values, driver_values, mapping_to_task, task_values

log = logging.getLogger(__name__)
_TASK_COLUMNS = [c for c in task_runs.c if c.name != "seq"]
_ORIGIN = task_delivery_state.c.requester_origin_json
NEWEST_FIRST = (task_runs.c.created_at.desc(), task_runs.c.seq.desc())


_TASK_SELECT: Select[Any] = select(*_TASK_COLUMNS, task_runs.c.seq, _ORIGIN).select_from(
    task_runs.outerjoin(task_delivery_state, task_delivery_state.c.task_id == task_runs.c.task_id)
)


def task_select() -> Select[Any]:
    """Tasks joined with their delivery origin: the shape every read returns.

    One shared statement: `Select` is immutable (every `.where()` returns a copy), and building it anew on
    each call was a measurable share of every single-task write.
    """
    return _TASK_SELECT


# The hot single-task statements are built once and executed with parameter dicts: building a Core statement
# costs more than executing it, and SQLAlchemy caches the compiled form per statement and parameter keys.
_GET = _TASK_SELECT.where(task_runs.c.task_id == bindparam("b_task_id"))
_GET_FOR_UPDATE = _GET.with_for_update(of=task_runs)
_BY_RUN_ID = _TASK_SELECT.where(task_runs.c.run_id == bindparam("b_run_id")).order_by(
    task_runs.c.created_at, task_runs.c.seq
)
_BY_RUN_ID_FOR_UPDATE = _BY_RUN_ID.with_for_update(of=task_runs)
# The statements of create → start → complete run on the driver directly (see core/prepared.py).
_P_GET = Prepared(_GET)
_P_GET_FOR_UPDATE = Prepared(_GET_FOR_UPDATE)
_P_BY_RUN_ID = Prepared(_BY_RUN_ID)
_P_BY_RUN_ID_FOR_UPDATE = Prepared(_BY_RUN_ID_FOR_UPDATE)
_EVENT_KEYS = ["task_id", "at", "kind", "summary", "previous_status"]
_P_INSERT_EVENT = Prepared(insert(task_events), _EVENT_KEYS)
_RAW_KEYS = [c.name for c in _TASK_COLUMNS] + ["seq", _ORIGIN.name]
_P_LINKED = Prepared(_TASK_SELECT.where(task_runs.c.parent_flow_id == bindparam("b_flow_id")).order_by(*NEWEST_FIRST))
_P_INSERT_TASK: dict[tuple[str, ...], Prepared] = {}
# One guarded UPDATE per (written columns, number of expected statuses): a stale copy writes only what it
# changed, and each shape is compiled once.
_P_GUARDED: dict[tuple[tuple[str, ...], int], Prepared] = {}
_TIMESTAMP = UTCMillis()


def _guarded_update(columns: tuple[str, ...], expected: int) -> Prepared:
    prepared = _P_GUARDED.get((columns, expected))
    if prepared is None:
        stmt = update(task_runs).where(
            task_runs.c.task_id == bindparam("b_task_id"),
            task_runs.c.status.in_([bindparam(f"b_expected_{i}") for i in range(expected)]),
        )
        prepared = _P_GUARDED[(columns, expected)] = Prepared(stmt, list(columns))
    return prepared


def _raw_to_task(row: Sequence[Any]) -> Task:
    return task_rows.raw_to_task(_RAW_KEYS, row)


def row_to_task(row: Row[Any]) -> Task:
    return mapping_to_task(row._mapping)


# --- reads ----------------------------------------------------------------------------------------------


def _one(conn: Connection, stmt: Select[Any], *, for_update: bool = False) -> Task | None:
    if for_update:
        stmt = stmt.with_for_update(of=task_runs)
    row = conn.execute(stmt).first()
    return row_to_task(row) if row is not None else None


def _many(conn: Connection, stmt: Select[Any], *, for_update: bool = False) -> list[Task]:
    if for_update:
        stmt = stmt.with_for_update(of=task_runs)
    return [row_to_task(row) for row in conn.execute(stmt)]


def get(conn: Connection, task_id: str, *, for_update: bool = False) -> Task | None:
    row = (_P_GET_FOR_UPDATE if for_update else _P_GET).run(conn, {"b_task_id": task_id}).fetchone()
    return _raw_to_task(row) if row is not None else None


def by_run_id(conn: Connection, run_id: str, *, for_update: bool = False) -> list[Task]:
    """Tasks sharing a run id, oldest first (the order the preferred-task rule reads them)."""
    cursor = (_P_BY_RUN_ID_FOR_UPDATE if for_update else _P_BY_RUN_ID).run(conn, {"b_run_id": run_id})
    return [_raw_to_task(row) for row in cursor.fetchall()]


def linked_to_flow(conn: Connection, flow_id: str) -> list[Task]:
    """Every task whose parent_flow_id is `flow_id`, newest first (what a flow sync derives from)."""
    return [_raw_to_task(row) for row in _P_LINKED.run(conn, {"b_flow_id": flow_id}).fetchall()]


def newest_related(conn: Connection, session_key: str) -> Task | None:
    """The newest task whose owner key or child session key is `session_key`."""
    stmt = (
        task_select()
        .where(or_(task_runs.c.owner_key == session_key, task_runs.c.child_session_key == session_key))
        .order_by(*NEWEST_FIRST)
        .limit(1)
    )
    return _one(conn, stmt)


def list_tasks(
    conn: Connection,
    *,
    runtime: Runtime | None = None,
    status: TaskStatus | None = None,
    owner_key: str | None = None,
    related_session: str | None = None,
    agent_id: str | None = None,
    parent_flow_ids: Sequence[str] | None = None,
    limit: int | None = None,
) -> list[Task]:
    stmt = task_select()
    if runtime is not None:
        stmt = stmt.where(task_runs.c.runtime == runtime.value)
    if status is not None:
        stmt = stmt.where(task_runs.c.status == status.value)
    if owner_key is not None:
        stmt = stmt.where(task_runs.c.owner_key == owner_key)
    if related_session is not None:
        stmt = stmt.where(
            or_(task_runs.c.owner_key == related_session, task_runs.c.child_session_key == related_session)
        )
    if agent_id is not None:
        stmt = stmt.where(task_runs.c.agent_id == agent_id)
    if parent_flow_ids is not None:
        stmt = stmt.where(task_runs.c.parent_flow_id.in_(list(parent_flow_ids)))
    stmt = stmt.order_by(*NEWEST_FIRST)
    if limit is not None:
        stmt = stmt.limit(limit)
    return _many(conn, stmt)


def keyset_select(where: Any) -> Prepared:
    """The task shape filtered by `where` in seq order after `b_after`, at most `b_limit` rows, run on the driver
    (`keyset_rows`): for passes that build many `Task`s, SQLAlchemy's row processing cost as much as the rest.
    The offset is always 0; SQLite's compiler writes `LIMIT ? OFFSET ?` for a bound limit, so it is named too.
    `where` binds only named parameters, which the caller passes with `b_after` and `b_limit`."""
    return Prepared(_TASK_SELECT.where(where, task_runs.c.seq > bindparam("b_after"))
                    .order_by(task_runs.c.seq).limit(bindparam("b_limit")).offset(bindparam("b_offset")))


def keyset_rows(conn: Connection, prepared: Prepared, params: dict[str, Any]) -> list[tuple[int, Task]]:
    seq_at = len(_TASK_COLUMNS)
    return [(row[seq_at], _raw_to_task(row)) for row in prepared.run(conn, {**params, "b_offset": 0}).fetchall()]


def dedupe_candidates(conn: Connection, run_id: str, *, for_update: bool = False) -> list[Task]:
    return by_run_id(conn, run_id, for_update=for_update)


def stream(conn: Connection, *, after_seq: int, batch: int, statuses: Iterable[TaskStatus] | None = None
           ) -> list[tuple[int, Task]]:
    """One keyset batch in insertion order: memory stays flat however many rows there are."""
    stmt = task_select().where(task_runs.c.seq > after_seq)
    if statuses is not None:
        stmt = stmt.where(task_runs.c.status.in_([s.value for s in statuses]))
    stmt = stmt.order_by(task_runs.c.seq).limit(batch)
    return [(row._mapping["seq"], row_to_task(row)) for row in conn.execute(stmt)]


def events_for(conn: Connection, task_id: str) -> list[TaskEvent]:
    stmt = select(task_events).where(task_events.c.task_id == task_id).order_by(task_events.c.id)
    return [
        TaskEvent(task_id=r.task_id, at=r.at, kind=r.kind, summary=r.summary, previous_status=r.previous_status)
        for r in conn.execute(stmt)
    ]


# --- writes ---------------------------------------------------------------------------------------------


def insert_task(conn: Connection, task: Task) -> None:
    values = driver_values(task_values(task))
    keys = tuple(values)
    prepared = _P_INSERT_TASK.get(keys)
    if prepared is None:
        prepared = _P_INSERT_TASK[keys] = Prepared(insert(task_runs), list(keys))
    prepared.run(conn, values)
    if task.requester_origin is not None:
        upsert_origin(conn, task.task_id, task.requester_origin)


def upsert_origin(conn: Connection, task_id: str, origin: DeliveryOrigin | None) -> None:
    payload = json.dumps(origin.to_json()) if origin is not None else None
    updated = conn.execute(
        update(task_delivery_state).where(task_delivery_state.c.task_id == task_id)
        .values(requester_origin_json=payload)
    ).rowcount
    if not updated and payload is not None:
        conn.execute(insert(task_delivery_state).values(task_id=task_id, requester_origin_json=payload))


def compare_and_set(conn: Connection, task: Task, *, expected: Iterable[TaskStatus],
                    previous: Task | None = None) -> bool:
    """Write `task` only if the stored status is still one of `expected`; True when it was written.

    Given the `previous` version the caller started from, only the columns that differ are written, so a
    caller holding a slightly stale copy cannot revert a column another writer changed meanwhile.
    """
    values = changed_values(task, previous)
    statuses = sorted({s.value for s in expected})
    prepared = _guarded_update(tuple(values), len(statuses))
    values = driver_values(values)
    values["b_task_id"] = task.task_id
    values.update({f"b_expected_{i}": status for i, status in enumerate(statuses)})
    return bool(prepared.run(conn, values).rowcount)


def compare_and_set_many(conn: Connection, pairs: Sequence[tuple[Task, Task]]) -> int:
    """Write each (current, new) pair's changed columns where the stored status is still `current`'s; the number
    of rows written. One driver `executemany` per distinct set of changed columns (a batch has one or two).

    Only the changed columns, as in `compare_and_set`: besides never reverting a column, SQLite rewrites the
    entry of every index over a column in the SET list, so a full-row write moved all 13 index entries of
    `task_runs` where marking a task lost moves five.
    """
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for current, new in pairs:
        changed = changed_values(new, current)
        row = driver_values(changed)
        row["b_task_id"] = new.task_id
        row["b_expected_0"] = current.status.value
        groups.setdefault(tuple(changed), []).append(row)
    written = 0
    for columns, rows in groups.items():
        written += int(_guarded_update(columns, 1).run_many(conn, rows).rowcount)
    return written


def append_event(conn: Connection, event: TaskEvent) -> None:
    batch = write_batch.current(conn)
    if batch is not None:
        batch.events.append(event)  # inserted with the batch's others just before it commits (core/write_batch.py)
        return
    insert_event_row(conn, event)


def insert_event_row(conn: Connection, event: TaskEvent) -> None:
    """One history row, now."""
    at = _TIMESTAMP.process_bind_param(event.at, None)  # type: ignore[arg-type]
    _P_INSERT_EVENT.run(conn, {"task_id": event.task_id, "at": at, "kind": event.kind, "summary": event.summary,
                               "previous_status": event.previous_status})


def insert_events(conn: Connection, events: Sequence[TaskEvent]) -> None:
    """Many history rows in one executemany (a batch's worth of `append_event`)."""
    if events:
        at = _TIMESTAMP.process_bind_param
        _P_INSERT_EVENT.run_many(conn, [{"task_id": e.task_id, "at": at(e.at, None),  # type: ignore[arg-type]
                                         "kind": e.kind, "summary": e.summary, "previous_status": e.previous_status}
                                        for e in events])


def delivery_row(conn: Connection, task_id: str) -> Any:
    """The task's `task_delivery_state` row, or None."""
    return conn.execute(select(task_delivery_state).where(task_delivery_state.c.task_id == task_id)).first()


# Every table that holds rows of one task, keyed by its id: deleted with the task, or left behind as nobody's.
TASK_CHILD_TABLES = (task_delivery_state, task_events, task_payloads, generation_media)


def delete_tasks(conn: Connection, task_ids: Sequence[str]) -> int:
    """Delete tasks with their per-task rows (TASK_CHILD_TABLES), in the caller's one transaction."""
    if not task_ids:
        return 0
    ids = list(task_ids)
    for table in TASK_CHILD_TABLES:
        conn.execute(delete(table).where(table.c.task_id.in_(ids)))
    return int(conn.execute(delete(task_runs).where(task_runs.c.task_id.in_(ids))).rowcount)


def last_notified_at(conn: Connection, task_id: str) -> datetime | None:
    return conn.execute(
        select(task_delivery_state.c.last_notified_event_at).where(task_delivery_state.c.task_id == task_id)
    ).scalar()
