"""A version-1 database opens under the current version on both engines: two indexes replaced, columns and the
notice outbox added, data kept."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text

from flowledger import FrozenClock, Ledger
from flowledger.tasks.tables import SCHEMA_VERSION, schema_meta

# What version 1 created that version 2 no longer has, and the reverse.
V1_SHAPE = [
    "CREATE INDEX ix_task_runs_last_event_at ON task_runs (last_event_at)",
    "DROP INDEX idx_task_runs_cleanup",
    "CREATE INDEX ix_task_runs_cleanup_after ON task_runs (cleanup_after)",
    "ALTER TABLE cron_jobs DROP COLUMN timeout_ms",
    "ALTER TABLE sessions DROP COLUMN last_route_json",
    "DROP TABLE notice_outbox",
    "UPDATE schema_meta SET value = '1' WHERE meta_key = 'schema_version'",
]


def _task_run_indexes(ledger: Ledger) -> set[str]:
    with ledger.db.read() as conn:
        return {str(ix["name"]) for ix in inspect(conn).get_indexes("task_runs")}


def test_version_1_database_is_upgraded_once(database_url: str, tmp_path: Path, clock: FrozenClock) -> None:
    assert SCHEMA_VERSION == 3
    state_dir = tmp_path / "state"
    with Ledger.open(state_dir=state_dir, database_url=database_url, clock=clock) as ledger:
        made = ledger.tasks.create(runtime="cli", task="made under version 1", owner_key="agent:m:main",
                                   status="running")
        with ledger.db.write() as conn:
            for statement in V1_SHAPE:
                conn.execute(text(statement))
        assert "ix_task_runs_last_event_at" in _task_run_indexes(ledger)

    for _ in range(2):  # the second open finds version 3 and runs nothing
        with Ledger.open(state_dir=state_dir, database_url=database_url, clock=clock) as ledger:
            indexes = _task_run_indexes(ledger)
            assert not indexes & {"ix_task_runs_last_event_at", "ix_task_runs_cleanup_after"}
            assert "idx_task_runs_cleanup" in indexes
            assert {"ix_task_runs_status", "idx_task_runs_runtime_status"} <= indexes
            with ledger.db.read() as conn:
                version = conn.execute(schema_meta.select()).mappings().one()["value"]
                cron_columns = {c["name"] for c in inspect(conn).get_columns("cron_jobs")}
                session_columns = {c["name"] for c in inspect(conn).get_columns("sessions")}
                tables = set(inspect(conn).get_table_names())
            assert version == "3"
            assert "notice_outbox" in tables
            assert "timeout_ms" in cron_columns
            assert "last_route_json" in session_columns
            assert ledger.tasks.get(made.task_id) == made
            assert [t.task_id for t in ledger.tasks.list(status="running")] == [made.task_id]
