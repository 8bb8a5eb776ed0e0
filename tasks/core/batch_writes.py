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

from sqlalchemy import Connection, Table, bindparam, text
from sqlalchemy.dialects import postgresql

from flowledger.tasks.core import store, task_rows
from flowledger.tasks.core.models import Task, TaskEvent
from flowledger.tasks.core.prepared import Prepared
from flowledger.tasks.core.states import TaskStatus
from flowledger.tasks.core.tables import UTCMillis, task_events, task_runs

# One guarded write: the task to write, the statuses its stored row may have, the version the caller read.
Write = tuple[Task, Iterable[TaskStatus], Task]
_ROWS_PER_STATEMENT = 500  # run ids per lookup: well under every engine's bound-parameter limit
_UPDATES: dict[tuple[str, ...], Prepared] = {}
_INSERTS: dict[tuple[str, tuple[str, ...]], Prepared] = {}
# Built once (an expanding IN): building a Core statement costs more than running it.
_BY_RUN_IDS_FOR_UPDATE_STMT = (store.task_select().where(task_runs.c.run_id.in_(bindparam("b_run_ids", expanding=True)))
                                  .order_by(task_runs.c.created_at, task_runs.c.seq).with_for_update(of=task_runs))
_TIMESTAMP = UTCMillis()
_PG = postgresql.dialect()  # type: ignore[no-untyped-call]  # only to name the column types


def by_run_ids(conn: Connection, run_ids: Sequence[str]) -> dict[str, list[Task]]:
    """`store.by_run_id(…, for_update=True)` for many run ids in one statement per chunk: each run id's tasks
    oldest first, as the run-scope rule and the create dedupe read them."""
    if len(run_ids) == 1:  # a launcher taking one step at a time: the single-task lookup, compiled once
        return {run_ids[0]: store.by_run_id(conn, run_ids[0], for_update=True)}
    out: dict[str, list[Task]] = {}
    for start in range(0, len(run_ids), _ROWS_PER_STATEMENT):
        for row in conn.execute(_BY_RUN_IDS_FOR_UPDATE_STMT,
                                {"b_run_ids": list(run_ids[start:start + _ROWS_PER_STATEMENT])}):
            task = store.row_to_task(row)
            out.setdefault(task.run_id or "", []).append(task)
    return out


def insert_tasks(conn: Connection, tasks: Sequence[Task]) -> None:
    """`store.insert_task` for each new task: on PostgreSQL their rows in one INSERT, then their origins."""
    if conn.dialect.name != "postgresql":
        for task in tasks:
            store.insert_task(conn, task)
        return
    _insert_rows(conn, task_runs, [task_rows.driver_values(task_rows.task_values(t)) for t in tasks])
    for task in tasks:
        if task.requester_origin is not None:
            store.upsert_origin(conn, task.task_id, task.requester_origin)


def insert_event_rows(conn: Connection, events: Sequence[TaskEvent]) -> None:
    """A write batch's history rows (core/write_batch.py), in order: on PostgreSQL in one INSERT (one round trip;
    psycopg's executemany, which pipelines, measured several times slower here: docs/performance.md, goal 2)."""
    if conn.dialect.name != "postgresql":  # no round trip to save: one executemany, the least work per row
        store.insert_events(conn, events)
        return
    _insert_rows(conn, task_events, [{"task_id": e.task_id, "at": _TIMESTAMP.process_bind_param(e.at, None),  # type: ignore[arg-type]
                                      "kind": e.kind, "summary": e.summary, "previous_status": e.previous_status}
                                     for e in events])


def compare_and_set_many(conn: Connection, writes: Sequence[Write]) -> set[str]:
    """`store.compare_and_set(conn, new, expected=…, previous=…)` for every write, in order; the task ids written.
    The rows must be distinct tasks."""
    if conn.dialect.name != "postgresql":
        return {new.task_id for new, expected, previous in writes
                if store.compare_and_set(conn, new, expected=expected, previous=previous)}
    by_columns: dict[tuple[str, ...], list[tuple[str, str, dict[str, Any]]]] = {}
    for new, expected, previous in writes:
        values = task_rows.changed_values(new, previous)
        by_columns.setdefault(tuple(values), []).append(
            (new.task_id, ",".join(sorted({s.value for s in expected})), task_rows.driver_values(values)))
    moved: set[str] = set()
    for columns, rows in by_columns.items():
        params: dict[str, Any] = {"ids": [r[0] for r in rows], "expected": [r[1] for r in rows]}
        params.update({f"c{j}": [r[2][c] for r in rows] for j, c in enumerate(columns)})
        moved.update(row[0] for row in _update(columns).run(conn, params).fetchall())
    return moved


def write_locked(conn: Connection, pairs: Sequence[tuple[Task, Task]]) -> int:
    """Write (current, new) pairs whose rows the caller locked and re-read (the sweep's batches), each under the
    status it was read with; the number of rows written. PostgreSQL: `compare_and_set_many`'s one UPDATE per
    column set; SQLite: one executemany per column set (store.compare_and_set_many), the least work per row there."""
    if conn.dialect.name != "postgresql":
        return store.compare_and_set_many(conn, pairs)
    return len(compare_and_set_many(conn, [(new, (current.status,), current) for current, new in pairs]))


# PostgreSQL statements that take a batch as one array per column (unnest): their text does not grow with the
# batch, so the driver parses it once and the server plans it as one statement, whatever the batch's size.


def _array_type(table: Table, column: str) -> str:
    """The array a column's values travel in: the column's type without a length (a cast to VARCHAR(n) would
    truncate silently; assigning the longer text to the column refuses it, as a single-row write does)."""
    return table.c[column].type.compile(dialect=_PG).split("(")[0] + "[]"


def _update(columns: tuple[str, ...]) -> Prepared:
    prepared = _UPDATES.get(columns)
    if prepared is None:
        sets = ", ".join(f"{c} = v.c{j}" for j, c in enumerate(columns))
        arrays = ", ".join(f"CAST(:c{j} AS {_array_type(task_runs, c)})" for j, c in enumerate(columns))
        names = ", ".join(f"c{j}" for j in range(len(columns)))
        prepared = _UPDATES[columns] = Prepared(text(
            f"UPDATE task_runs SET {sets} FROM unnest(CAST(:ids AS TEXT[]), CAST(:expected AS TEXT[]), {arrays}) "
            f"AS v(task_id, expected, {names}) WHERE task_runs.task_id = v.task_id "
            "AND task_runs.status = ANY(string_to_array(v.expected, ',')) RETURNING task_runs.task_id"))
    return prepared


def _insert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Rows of one shape (driver-ready values), in order, in one INSERT … SELECT FROM unnest(…)."""
    if not rows:
        return
    keys = tuple(rows[0])
    prepared = _INSERTS.get((table.name, keys))
    if prepared is None:
        arrays = ", ".join(f"CAST(:c{j} AS {_array_type(table, k)})" for j, k in enumerate(keys))
        names = [f"c{j}" for j in range(len(keys))]
        # In the batch's order, so each task's history rows keep theirs (ids ascending).
        prepared = _INSERTS[(table.name, keys)] = Prepared(text(
            f"INSERT INTO {table.name} ({', '.join(keys)}) SELECT {', '.join(names)} FROM unnest({arrays}) "
            f"WITH ORDINALITY AS v({', '.join(names)}, n) ORDER BY n"))
    prepared.run(conn, {f"c{j}": [row[k] for row in rows] for j, k in enumerate(keys)})
