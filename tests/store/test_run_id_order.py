"""`store.by_run_id` gives a run id's tasks oldest first, ties in insertion order, on both engines (SQLite sorts
them in Python rather than in the statement: the same order either way)."""

from __future__ import annotations

from sqlalchemy import text

from flowledger import Ledger
from flowledger.tasks.core import store

OWNER = "agent:main:main"


def test_a_run_ids_tasks_come_oldest_first_then_by_insertion(ledger: Ledger) -> None:
    ids = [ledger.tasks.create(runtime=runtime, task=f"work {runtime}", owner_key=OWNER, run_id="run-shared").task_id
           for runtime in ("cli", "acp", "subagent", "cron")]
    # Created times against insertion order: the last inserted is the oldest, the first two tie.
    stamps = {ids[0]: 2_000, ids[1]: 2_000, ids[2]: 3_000, ids[3]: 1_000}
    with ledger.db.write() as conn:
        for task_id, ms in stamps.items():
            conn.execute(text("UPDATE task_runs SET created_at = :ms WHERE task_id = :id"), {"ms": ms, "id": task_id})
    with ledger.db.write() as conn:
        for for_update in (False, True):
            found = store.by_run_id(conn, "run-shared", for_update=for_update)
            assert [t.task_id for t in found] == [ids[3], ids[0], ids[1], ids[2]]
        assert store.by_run_id(conn, "run-none") == []
