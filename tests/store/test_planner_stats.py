"""PostgreSQL plans the prune's `task_id IN (…)` deletes from statistics; a table it never analyzed (bulk-loaded
with autovacuum off, or not yet round) must not be left without them (tasks/core/db.py analyze_if_never_analyzed)."""

from __future__ import annotations

from sqlalchemy import text

from flowledger import Ledger

TABLES = ("task_runs", "task_events", "task_delivery_state")


def never_analyzed(ledger: Ledger) -> set[str]:
    with ledger.db.read() as conn:
        rows = conn.execute(text("SELECT relname FROM pg_class WHERE relname = ANY(:t) AND reltuples < 0 "
                                 "AND pg_table_is_visible(oid)"), {"t": list(TABLES)})
        return {str(r[0]) for r in rows}


def test_bulk_load_and_maintenance_leave_no_table_without_statistics(ledger: Ledger) -> None:
    if not ledger.db.is_postgres:
        assert ledger.db.analyze_if_never_analyzed(TABLES) == []  # SQLite needs none: a no-op
        return
    assert never_analyzed(ledger) == set(TABLES)  # the fixture's TRUNCATE leaves them so, like a fresh load
    ledger.tasks.create_many({"runtime": "cli", "task": f"t{i}", "scope_kind": "system"} for i in range(3))
    assert never_analyzed(ledger) == set()
    with ledger.db.write() as conn:
        conn.execute(text("TRUNCATE task_runs, task_events, task_delivery_state"))
    assert never_analyzed(ledger) == set(TABLES)
    ledger.maintenance(apply=True)
    assert never_analyzed(ledger) == set()
    assert ledger.db.analyze_if_never_analyzed(TABLES) == []  # already analyzed: nothing to do
