"""The set-based prune of due records (REFERENCE §6.5 "prune"), batch by batch, with no Python per row.

A batch is a range of the `(cleanup_after, seq)` index: its upper bound is found by stepping `size` due rows
past the last bound, and the rows in the range are deleted with their events and delivery row by statements
that carry the range, not a list of ids. Building and binding `IN (…500 ids…)` lists was most of the CPU of
the old prune, and all of it ran while the write lock was held.

On SQLite the next `size` due rows after the last bound are walked once, into a temporary table, and the
deletes read them from there; the transaction holds the one write lock (BEGIN IMMEDIATE), so every statement
means the same rows. On PostgreSQL the batch's upper bound is found first (`batch_bound`), the rows of the
range are locked (`FOR UPDATE`, which re-checks the due filter on rows changed meanwhile) and one statement
deletes exactly the locked rows; see `_pg_delete_locked`.

Kept status counts (tasks/core/counts.py): on PostgreSQL the statement-level delete trigger counts a batch out
once; on SQLite `counts.sqlite_bulk_delete` does, by the batch's (status, runtime) groups.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Integer,
    MetaData,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    tuple_,
)
from sqlalchemy.schema import CreateTable

from flowledger.tasks.core import counts
from flowledger.tasks.core.store import TASK_CHILD_TABLES
from flowledger.tasks.core.tables import task_runs

# (cleanup_after as epoch ms, seq): a position in the cleanup index.
Bound = tuple[Any, int]

_c = task_runs.c
_STAMP_TYPE = _c.cleanup_after.type
_SEQ_TYPE = _c.seq.type
# SQLite: one batch's rows, a temporary table of the pruning connection (not in the schema): what the deletes
# name (seq, task_id), where the next batch starts (cleanup_after, seq) and what the counts lose (status, runtime).
_DOOMED = Table("prune_batch", MetaData(), Column("seq", Integer, primary_key=True),
                Column("task_id", Text, nullable=False), Column("cleanup_after", _STAMP_TYPE),
                Column("status", Text, nullable=False), Column("runtime", Text, nullable=False),
                prefixes=["TEMPORARY"])
_CREATE_DOOMED = CreateTable(_DOOMED, if_not_exists=True)
_d = _DOOMED.c
# The statements that do not depend on the batch's position, built once: building a Core statement (and its
# cache key) every batch cost more than running it.
_HAS_ROWS = [(select(exists().select_from(table)),
              delete(table).where(table.c.task_id.in_(select(_d.task_id)))) for table in TASK_CHILD_TABLES]
_GROUPS = select(_d.status, _d.runtime, func.count()).group_by(_d.status, _d.runtime)
_DELETE_TASKS = delete(task_runs).where(_c.seq.in_(select(_d.seq)))
_LAST = select(_d.cleanup_after, _d.seq).order_by(_d.cleanup_after.desc(), _d.seq.desc()).limit(1)
_EMPTY_DOOMED = delete(_DOOMED)


def _range(due: ColumnElement[bool], after: Bound | None, upto: Bound | None) -> ColumnElement[bool]:
    """Due rows after `after` (exclusive) up to `upto` (inclusive) in cleanup-index order."""
    parts = [due]
    if after is not None:
        parts.append(tuple_(_c.cleanup_after, _c.seq) > tuple_(bindparam("a_stamp", after[0], type_=_STAMP_TYPE),
                                                                  bindparam("a_seq", after[1], type_=_SEQ_TYPE)))
    if upto is not None:
        parts.append(tuple_(_c.cleanup_after, _c.seq) <= tuple_(bindparam("u_stamp", upto[0], type_=_STAMP_TYPE),
                                                                   bindparam("u_seq", upto[1], type_=_SEQ_TYPE)))
    return and_(*parts)


def batch_bound(conn: Connection, due: ColumnElement[bool], after: Bound | None, size: int) -> Bound | None:
    """The position of the `size`-th due row after `after`, or None when fewer remain (the last batch)."""
    stmt = (select(_c.cleanup_after, _c.seq).where(_range(due, after, None))
            .order_by(_c.cleanup_after, _c.seq).offset(size - 1).limit(1))
    row = conn.execute(stmt).first()
    return None if row is None else (row[0], int(row[1]))


def delete_next_batch(conn: Connection, due: ColumnElement[bool], after: Bound | None, size: int
                      ) -> tuple[int, Bound | None]:
    """Delete the next `size` due task rows after `after`, with their per-task rows (store.TASK_CHILD_TABLES),
    in the caller's write transaction; the number of tasks, and where the next batch starts (None: this was
    the last one).

    The one place the set-based prune deletes task rows.
    """
    if conn.dialect.name == "postgresql":
        upto = batch_bound(conn, due, after, size)
        return _pg_delete_locked(conn, _range(due, after, upto)), upto
    return _sqlite_delete_next(conn, due, after, size)


def _sqlite_delete_next(conn: Connection, due: ColumnElement[bool], after: Bound | None, size: int
                        ) -> tuple[int, Bound | None]:
    """SQLite bounds a row-value range on its first column only: with many equal stamps (a bulk load), an upper
    bound made every batch walk every remaining row of that stamp. The first `size` rows after `after`, in index
    order, are the batch (this transaction holds the one write lock) and the walk stops there.

    The walk runs once, into a temporary table of this connection, which then says everything else: the deletes
    read the batch from there (walking it in each of them cost 17 % more CPU: 300,000 due rows, 6.9–7.0 s
    against 5.6–6.0 s), its last row is where the next batch starts (a separate walk to find that bound was
    another 4 %), and its (status, runtime) groups are what the kept counts lose (counts.sqlite_bulk_delete,
    which spares the delete trigger's per-row program). A per-task table with no rows at all (most ledgers
    have no generation items) is not probed 1,000 times a batch for nothing. The temporary table's rows belong
    to this transaction like the rest, and are emptied before the commit.
    """
    conn.execute(_CREATE_DOOMED)
    doomed = (select(_c.seq, _c.task_id, _c.cleanup_after, _c.status, _c.runtime).where(_range(due, after, None))
              .order_by(_c.cleanup_after, _c.seq).limit(size))
    taken = int(conn.execute(insert(_DOOMED).from_select(["seq", "task_id", "cleanup_after", "status", "runtime"],
                                                         doomed)).rowcount)
    if taken == 0:
        return 0, None
    for has_rows, delete_children in _HAS_ROWS:
        if conn.execute(has_rows).scalar():
            conn.execute(delete_children)
    groups = [(str(status), str(runtime), int(n)) for status, runtime, n in conn.execute(_GROUPS)]
    n = counts.sqlite_bulk_delete(conn, _DELETE_TASKS, groups)
    last = conn.execute(_LAST).one()
    conn.execute(_EMPTY_DOOMED)
    return n, (None if taken < size else (last[0], int(last[1])))


def _pg_delete_locked(conn: Connection, where: ColumnElement[bool]) -> int:
    """PostgreSQL: lock the range's rows, then delete exactly those, in one statement (one round trip).

    Data-modifying CTEs share one snapshot, and `doomed` is evaluated once: the three deletes name the same
    locked rows, and no writer can change them (or add events to them) before the commit.
    """
    locked = select(_c.task_id).where(where).with_for_update().cte("doomed")
    ids = select(locked.c.task_id)
    children = [delete(table).where(table.c.task_id.in_(ids)).cte(f"gone_{table.name}") for table in TASK_CHILD_TABLES]
    stmt = delete(task_runs).where(_c.task_id.in_(ids)).add_cte(*children)
    return int(conn.execute(stmt).rowcount)

