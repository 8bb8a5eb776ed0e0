"""The schema's history: the DDL steps that bring a database from one version to the next (tables.py says what each
version added; `Database.migrate` runs them in one transaction under PostgreSQL's advisory lock)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection

from flowledger.tasks.core import counts
from flowledger.tasks.core.quiet_rows import ACTIVE_DUE, ACTIVE_DUE_INDEX, ACTIVE_ROWS, QUIET_ROW_KINDS
from flowledger.tasks.core.tables import cron_controls, notice_outbox, task_payloads

# Versioned DDL steps: MIGRATIONS[n] brings a database at version n-1 to version n. Version 1 is create_all.
# A step is SQL text; (dialect, statement) runs on that dialect only; a callable is given the connection where
# SQLAlchemy's own DDL says it for both engines.
Migration = str | tuple[str, str] | Callable[[Connection], object]


def _create_payloads(conn: Connection) -> None:
    task_payloads.create(conn, checkfirst=True)


MIGRATIONS: dict[int, list[Migration]] = {
    2: [
        "DROP INDEX IF EXISTS ix_task_runs_last_event_at",
        "DROP INDEX IF EXISTS ix_task_runs_cleanup_after",
        "CREATE INDEX IF NOT EXISTS idx_task_runs_cleanup ON task_runs (cleanup_after, seq)",
        "ALTER TABLE cron_jobs ADD COLUMN timeout_ms BIGINT",
        "ALTER TABLE sessions ADD COLUMN last_route_json TEXT",
    ],
    # The run queue's payload table (tasks/runs/queue.py) comes first: the queue used to create it on its own, so
    # a version-2 database may lack it, and the id widening below includes it.
    3: [_create_payloads, *[
        ("postgresql", f"ALTER TABLE {table} ALTER COLUMN {column} TYPE VARCHAR(128)") for table, column in (
            ("task_runs", "task_id"), ("task_runs", "parent_flow_id"), ("task_delivery_state", "task_id"),
            ("task_events", "task_id"), ("flow_runs", "flow_id"), ("run_contexts", "task_id"),
            ("task_payloads", "task_id"))]],
    # The notice outbox (tasks/delivery/outbox.py): notices are recorded by writers and sent by a sender.
    4: [lambda conn: notice_outbox.create(conn, checkfirst=True)],
    # 5: generation jobs (media on the task, acknowledged items) and a session's tracked resources.
    5: [
        "ALTER TABLE task_runs ADD COLUMN media_json TEXT",
        "ALTER TABLE sessions ADD COLUMN ended_at BIGINT",
        "CREATE TABLE IF NOT EXISTS generation_media (task_id VARCHAR(128) NOT NULL, item_key VARCHAR(64) NOT NULL, "
        "item TEXT NOT NULL, session_key VARCHAR(512) NOT NULL, acked_at BIGINT, sent_at BIGINT, claimed_by TEXT, "
        "claimed_at BIGINT, PRIMARY KEY (task_id, item_key))",
        "CREATE TABLE IF NOT EXISTS session_resources (resource_id VARCHAR(64) NOT NULL PRIMARY KEY, "
        "session_key VARCHAR(512) NOT NULL, kind VARCHAR(16) NOT NULL, pid INTEGER, run_marker TEXT, argv_json TEXT, "
        "label TEXT, registered_at BIGINT NOT NULL, released_at BIGINT, outcome TEXT)",
        "CREATE INDEX IF NOT EXISTS ix_session_resources_session_key ON session_resources (session_key)",
    ],
    # The cron controls (scheduler/cron_control.py) used to be created on first use, outside any transaction
    # discipline (a gateway met `database is locked` there); databases may already have the table.
    6: [lambda conn: cron_controls.create(conn, checkfirst=True)],
    # Task counts kept by triggers in the writing transaction (tasks/core/counts.py), backfilled from the rows there;
    # the partial indexes `status` finds the rows an audit flags by.
    7: [counts.install, *[f"CREATE INDEX IF NOT EXISTS {name} ON task_runs (seq) WHERE {where}"
                          for name, where in QUIET_ROW_KINDS.items()]],
    # 8: the active rows that need a look (stale, cron, ended) as one range of a partial expression index.
    8: [f"CREATE INDEX IF NOT EXISTS {ACTIVE_DUE_INDEX} ON task_runs (status, ({ACTIVE_DUE})) WHERE {ACTIVE_ROWS}"],
}
