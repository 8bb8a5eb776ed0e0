"""A batch's task rows in a few statements (core/batch_transitions.py): its lookups by run id, its new rows, its
guarded writes and its history rows, each one statement for the whole batch where the single-task call runs one
per task.

On PostgreSQL every statement is a round trip, and a batch of N starts or completions paid N guarded UPDATEs.
Here rows written with the same columns go in one `UPDATE … FROM (VALUES …) … RETURNING task_id`: each row keeps
its own compare-and-set (its stored status must still be one of its own expected statuses) and writes only the
columns its caller changed, and RETURNING says which rows it moved — what executemany cannot tell. SQLite has no
round trip to save: there each row is `store.compare_and_set`, as alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Table, bindparam, insert, text
from sqlalchemy.dialects import postgresql

from flowledger.tasks.core import store
from flowledger.tasks.core.models import Task, TaskEvent
from flowledger.tasks.core.prepared import Prepared
from flowledger.tasks.core.states import TaskStatus
from flowledger.tasks.core.tables import UTCMillis, task_events, task_runs

# One guarded write: the task to write, the statuses its stored row may have, the version the caller read.
Write = tuple[Task, Iterable[TaskStatus], Task]
_ROWS_PER_STATEMENT = 100  # a few thousand bound parameters at most, and few statement shapes to compile
_STATEMENTS: dict[tuple[tuple[str, ...], int], Prepared] = {}
_INSERTS: dict[tuple[str, tuple[str, ...], int], Prepared] = {}
# Built once (an expanding IN): building a Core statement costs more than running it.
_BY_RUN_IDS_FOR_UPDATE_STMT = (store.task_select().where(task_runs.c.run_id.in_(bindparam("b_run_ids", expanding=True)))
                                  .order_by(task_runs.c.created_at, task_runs.c.seq).with_for_update(of=task_runs))
_TIMESTAMP = UTCMillis()


def by_run_ids(conn: Connection, run_ids: Sequence[str]) -> dict[str, list[Task]]:
    """`store.by_run_id(…, for_update=True)` for many run ids in one statement per chunk: each run id's tasks
    oldest first, as the run-scope rule and the create dedupe read them."""
    out: dict[str, list[Task]] = {}
    for start in range(0, len(run_ids), _ROWS_PER_STATEMENT):
        for row in conn.execute(_BY_RUN_IDS_FOR_UPDATE_STMT,
                                {"b_run_ids": list(run_ids[start:start + _ROWS_PER_STATEMENT])}):
            task = store.row_to_task(row)
            out.setdefault(task.run_id or "", []).append(task)
    return out


def insert_tasks(conn: Connection, tasks: Sequence[Task]) -> None:
    """`store.insert_task` for each new task: their rows in one multi-row INSERT per chunk, then their origins."""
    _insert_rows(conn, task_runs, [store.driver_values(store.task_values(t)) for t in tasks])
    for task in tasks:
        if task.requester_origin is not None:
            store.upsert_origin(conn, task.task_id, task.requester_origin)


def insert_event_rows(conn: Connection, events: Sequence[TaskEvent]) -> None:
    """A write batch's history rows (core/write_batch.py), in order, in one multi-row INSERT per chunk: one round
    trip, where an executemany costs one per row (or, pipelined by psycopg, a wait on the network's delayed
    acknowledgement)."""
    _insert_rows(conn, task_events, [{"task_id": e.task_id, "at": _TIMESTAMP.process_bind_param(e.at, None),  # type: ignore[arg-type]
                                      "kind": e.kind, "summary": e.summary, "previous_status": e.previous_status}
                                     for e in events])


def _insert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Rows of one shape (driver-ready values), in order, in multi-row INSERTs compiled once per row count."""
    if not rows:
        return
    keys = tuple(rows[0])
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        chunk = rows[start:start + _ROWS_PER_STATEMENT]
        prepared = _INSERTS.get((table.name, keys, len(chunk)))
        if prepared is None:
            stmt = insert(table).values([{k: bindparam(f"{k}_{i}") for k in keys} for i in range(len(chunk))])
            prepared = _INSERTS[(table.name, keys, len(chunk))] = Prepared(stmt)
        prepared.run(conn, {f"{k}_{i}": row[k] for i, row in enumerate(chunk) for k in keys})


def compare_and_set_many(conn: Connection, writes: Sequence[Write]) -> set[str]:
    """`store.compare_and_set(conn, new, expected=…, previous=…)` for every write, in order; the task ids written.
    The rows must be distinct tasks."""
    if conn.dialect.name != "postgresql":
        return {new.task_id for new, expected, previous in writes
                if store.compare_and_set(conn, new, expected=expected, previous=previous)}
    by_columns: dict[tuple[str, ...], list[tuple[str, list[str], dict[str, Any]]]] = {}
    for new, expected, previous in writes:
        values = store.changed_values(new, previous)
        by_columns.setdefault(tuple(values), []).append(
            (new.task_id, sorted({s.value for s in expected}), store.driver_values(values)))
    moved: set[str] = set()
    for columns, rows in by_columns.items():
        for start in range(0, len(rows), _ROWS_PER_STATEMENT):
            chunk = rows[start:start + _ROWS_PER_STATEMENT]
            params: dict[str, Any] = {}
            for i, (task_id, expected, values) in enumerate(chunk):
                params[f"t{i}"] = task_id
                params[f"e{i}"] = expected
                params.update({f"c{j}_{i}": values[c] for j, c in enumerate(columns)})
            moved.update(row[0] for row in _statement(columns, len(chunk)).run(conn, params).fetchall())
    return moved


def _statement(columns: tuple[str, ...], rows: int) -> Prepared:
    prepared = _STATEMENTS.get((columns, rows))
    if prepared is None:
        dialect = postgresql.dialect()
        # The VALUES list carries untyped parameters: each column is cast to the table's type where it is used.
        sets = ", ".join(f"{c} = CAST(v.c{j} AS {task_runs.c[c].type.compile(dialect=dialect)})"
                         for j, c in enumerate(columns))
        values = ", ".join("(" + ", ".join([f":t{i}", f":e{i}", *(f":c{j}_{i}" for j in range(len(columns)))]) + ")"
                           for i in range(rows))
        names = ", ".join(["task_id", "expected", *(f"c{j}" for j in range(len(columns)))])
        stmt = text(f"UPDATE task_runs SET {sets} FROM (VALUES {values}) AS v({names}) "
                    "WHERE task_runs.task_id = CAST(v.task_id AS VARCHAR) "
                    "AND task_runs.status = ANY(CAST(v.expected AS VARCHAR[])) RETURNING task_runs.task_id")
        prepared = _STATEMENTS[(columns, rows)] = Prepared(stmt)
    return prepared
