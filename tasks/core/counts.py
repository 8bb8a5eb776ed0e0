"""Task counts by (status, runtime), kept by the database in the very transaction that writes a task row.

`status` used to group every row of `task_runs` (a full index scan: ~0.1 s at a million records, and growing
with the ledger). `task_counts` holds one small row per (status, runtime, shard), moved by triggers on
`task_runs`: an insert adds one, a delete takes one away, an update that changes the status or the runtime
moves one. Triggers, not application code, because every path that writes a task row then keeps the counts
exact without knowing of them — create, bulk create, each transition, the sweep's batch writes and prunes,
flow-linked writes, a hand edit in a SQL shell. Nothing is cached outside the database: a read sees the counts
as of the last commit, exactly what `COUNT(*) GROUP BY status, runtime` would say in the same snapshot.

PostgreSQL: one row per (status, runtime) would be a hot row — every gateway moving a task from queued to
running would queue on its lock until the mover commits. Each backend therefore moves the counts in its own
shard (`pg_backend_pid() % SHARDS`), and a read sums the shards; a shard may go negative (a task counted in by
one backend is counted out by another), the sum never does. Bulk inserts and deletes are counted once per
statement (transition tables), not once per row. SQLite has one writer at a time: one shard, row triggers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, text

from flowledger.tasks.core.tables import task_counts

# Enough that a handful of gateways (each with a small pool) rarely share one; a read sums at most
# SHARDS × statuses × runtimes rows (a few hundred).
SHARDS = 16

_SQLITE_TRIGGERS = [
    # A new task is counted in.
    """CREATE TRIGGER IF NOT EXISTS task_counts_insert AFTER INSERT ON task_runs BEGIN
      INSERT INTO task_counts (status, runtime, shard, n) VALUES (NEW.status, NEW.runtime, 0, 1)
      ON CONFLICT (status, runtime, shard) DO UPDATE SET n = n + 1;
    END""",
    # A deleted task is counted out: its (status, runtime) row exists, it was counted in.
    """CREATE TRIGGER IF NOT EXISTS task_counts_delete AFTER DELETE ON task_runs BEGIN
      UPDATE task_counts SET n = n - 1 WHERE status = OLD.status AND runtime = OLD.runtime AND shard = 0;
    END""",
    # Only an update that changes what is counted moves a count (most writes touch neither column's value).
    """CREATE TRIGGER IF NOT EXISTS task_counts_update AFTER UPDATE OF status, runtime ON task_runs
    WHEN OLD.status IS NOT NEW.status OR OLD.runtime IS NOT NEW.runtime BEGIN
      UPDATE task_counts SET n = n - 1 WHERE status = OLD.status AND runtime = OLD.runtime AND shard = 0;
      INSERT INTO task_counts (status, runtime, shard, n) VALUES (NEW.status, NEW.runtime, 0, 1)
      ON CONFLICT (status, runtime, shard) DO UPDATE SET n = n + 1;
    END""",
]

_PG_SHARD = f"pg_backend_pid() % {SHARDS}"
_PG_TRIGGERS = [
    # Row level, for updates: the WHEN clause is evaluated without calling the function, so a write that leaves
    # status and runtime alone costs nothing here.
    f"""CREATE OR REPLACE FUNCTION task_counts_move() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO task_counts AS c (status, runtime, shard, n) VALUES (OLD.status, OLD.runtime, {_PG_SHARD}, -1)
      ON CONFLICT (status, runtime, shard) DO UPDATE SET n = c.n - 1;
      INSERT INTO task_counts AS c (status, runtime, shard, n) VALUES (NEW.status, NEW.runtime, {_PG_SHARD}, 1)
      ON CONFLICT (status, runtime, shard) DO UPDATE SET n = c.n + 1;
      RETURN NULL;
    END $$""",
    # Statement level, for inserts and deletes: a 5,000-row bulk batch or prune batch is one grouped upsert.
    f"""CREATE OR REPLACE FUNCTION task_counts_add() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO task_counts AS c (status, runtime, shard, n)
      SELECT status, runtime, {_PG_SHARD}, CASE WHEN TG_OP = 'DELETE' THEN -count(*) ELSE count(*) END
      FROM changed GROUP BY status, runtime ORDER BY status, runtime
      ON CONFLICT (status, runtime, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
      RETURN NULL;
    END $$""",
    "DROP TRIGGER IF EXISTS task_counts_insert ON task_runs",
    "CREATE TRIGGER task_counts_insert AFTER INSERT ON task_runs REFERENCING NEW TABLE AS changed "
    "FOR EACH STATEMENT EXECUTE FUNCTION task_counts_add()",
    "DROP TRIGGER IF EXISTS task_counts_delete ON task_runs",
    "CREATE TRIGGER task_counts_delete AFTER DELETE ON task_runs REFERENCING OLD TABLE AS changed "
    "FOR EACH STATEMENT EXECUTE FUNCTION task_counts_add()",
    # TRUNCATE fires no delete trigger: empty the counts with the table.
    """CREATE OR REPLACE FUNCTION task_counts_clear() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      DELETE FROM task_counts;
      RETURN NULL;
    END $$""",
    "DROP TRIGGER IF EXISTS task_counts_truncate ON task_runs",
    "CREATE TRIGGER task_counts_truncate AFTER TRUNCATE ON task_runs FOR EACH STATEMENT "
    "EXECUTE FUNCTION task_counts_clear()",
    "DROP TRIGGER IF EXISTS task_counts_update ON task_runs",
    "CREATE TRIGGER task_counts_update AFTER UPDATE OF status, runtime ON task_runs FOR EACH ROW "
    "WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.runtime IS DISTINCT FROM NEW.runtime) "
    "EXECUTE FUNCTION task_counts_move()",
]

TRIGGERS = ("task_counts_insert", "task_counts_delete", "task_counts_update")  # and on PostgreSQL
PG_ONLY_TRIGGERS = ("task_counts_truncate",)


def install(conn: Connection) -> None:
    """Create the counts table and its triggers, then count the rows already there (schema migration 7).

    Run inside the schema transaction: on PostgreSQL creating a trigger locks `task_runs` against writes until
    commit, so no write can fall between the triggers and the backfill; SQLite's write lock is already held.
    """
    task_counts.create(conn, checkfirst=True)
    for statement in _PG_TRIGGERS if conn.dialect.name == "postgresql" else _SQLITE_TRIGGERS:
        conn.execute(text(statement))
    conn.execute(text("DELETE FROM task_counts"))
    conn.execute(text("INSERT INTO task_counts (status, runtime, shard, n) "
                      "SELECT status, runtime, 0, COUNT(*) FROM task_runs GROUP BY status, runtime"))


_READ = text("SELECT status, runtime, SUM(n) FROM task_counts GROUP BY status, runtime HAVING SUM(n) <> 0 "
             "ORDER BY status, runtime")


def read(conn: Connection) -> list[tuple[str, str, int]]:
    """(status, runtime, count) for every pair with tasks, as of this transaction's snapshot."""
    return [(str(status), str(runtime), int(n)) for status, runtime, n in conn.execute(_READ)]


_SQLITE_DELETE_TRIGGER = text("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'task_counts_delete'")
_SQLITE_COUNT_OUT = "UPDATE task_counts SET n = n - ? WHERE status = ? AND runtime = ? AND shard = 0"


def sqlite_bulk_delete(conn: Connection, delete: Any, groups: Sequence[tuple[str, str, int]]) -> int:
    """SQLite: run `delete`, a bulk delete of task rows that are exactly `groups` ((status, runtime, count), read
    in this write transaction), and count them out once per group instead of once per row; the rows deleted.

    The row trigger's program ran once per deleted row: a quarter to a third of a prune's delete (300,000 rows:
    1.7 s CPU). Here the trigger is dropped, the rows deleted, the counts moved by the same rule (one UPDATE per
    (status, runtime)) and the trigger created again from its own stored text, all in the caller's one
    transaction: no other connection ever sees the schema without it, and a rollback or a crash brings it back
    with the rows. A count that does not match the rows deleted rolls the whole batch back.
    """
    trigger = conn.execute(_SQLITE_DELETE_TRIGGER).scalar()
    if trigger is None:  # a schema without the trigger counts nothing out: neither does this
        return int(conn.execute(delete).rowcount)
    conn.exec_driver_sql("DROP TRIGGER task_counts_delete")
    deleted = int(conn.execute(delete).rowcount)
    if deleted != sum(n for _, _, n in groups):
        raise RuntimeError(f"bulk delete counted {sum(n for _, _, n in groups)} task rows but deleted {deleted}")
    if groups:
        conn.exec_driver_sql(_SQLITE_COUNT_OUT, [(n, status, runtime) for status, runtime, n in groups])
    conn.exec_driver_sql(str(trigger))
    return deleted
