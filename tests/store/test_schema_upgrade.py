"""Older databases open under the current version on both engines: version 1 → 2 replaced two indexes and added
columns, 2 → 3 widened the id columns to 128 characters (PostgreSQL) and brought the run queue's payload table
(with or without the one the queue used to create on its own), 5 added generation media and session resources
(two columns, two tables), 7 the task counts kept by triggers, backfilled from the rows there, 8 the index of
the active rows that need a look; data kept."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text

from flowledger import FrozenClock, Ledger
from flowledger.tasks.core.quiet_rows import ACTIVE_DUE_INDEX, ACTIVE_DUE_WHERE
from flowledger.tasks.core.tables import SCHEMA_VERSION, schema_meta

# What version 7 had before version 8 added the index of the due active rows.
V7_SHAPE = [f"DROP INDEX {ACTIVE_DUE_INDEX}"]

# What version 6 had before version 7 added the task counts and their triggers.
V6_SHAPE_SQLITE = [
    "DROP TRIGGER task_counts_insert", "DROP TRIGGER task_counts_delete", "DROP TRIGGER task_counts_update",
    "DROP TABLE task_counts",
]
V6_SHAPE_POSTGRES = [
    *[f"DROP TRIGGER {name} ON task_runs" for name in ("task_counts_insert", "task_counts_delete",
                                                       "task_counts_update", "task_counts_truncate")],
    "DROP FUNCTION task_counts_add()", "DROP FUNCTION task_counts_move()", "DROP FUNCTION task_counts_clear()",
    "DROP TABLE task_counts",
]
# What version 2 had before version 5 added generation jobs and session resources.
V2_SHAPE = [
    "ALTER TABLE task_runs DROP COLUMN media_json",
    "ALTER TABLE sessions DROP COLUMN ended_at",
    "DROP TABLE generation_media",
    "DROP TABLE session_resources",
    "DROP TABLE cron_controls",
    "UPDATE schema_meta SET value = '2' WHERE meta_key = 'schema_version'",
]
# What version 1 created that version 2 no longer has, and the reverse.
V1_SHAPE = [*V2_SHAPE[:-1],
    "CREATE INDEX ix_task_runs_last_event_at ON task_runs (last_event_at)",
    "DROP INDEX idx_task_runs_cleanup",
    "CREATE INDEX ix_task_runs_cleanup_after ON task_runs (cleanup_after)",
    "ALTER TABLE cron_jobs DROP COLUMN timeout_ms",
    "ALTER TABLE sessions DROP COLUMN last_route_json",
    "DROP TABLE task_payloads",
    "UPDATE schema_meta SET value = '1' WHERE meta_key = 'schema_version'",
]


def v6_shape(ledger: Ledger) -> list[str]:
    return [*V7_SHAPE, *(V6_SHAPE_POSTGRES if ledger.db.is_postgres else V6_SHAPE_SQLITE)]


def _task_run_indexes(ledger: Ledger) -> set[str]:
    with ledger.db.read() as conn:
        return {str(ix["name"]) for ix in inspect(conn).get_indexes("task_runs")}


def _has_due_index(ledger: Ledger) -> bool:
    """SQLAlchemy does not reflect expression indexes: ask the catalogue."""
    sql = ("SELECT count(*) FROM pg_indexes WHERE tablename = 'task_runs' AND indexname = :name"
           if ledger.db.is_postgres else "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = :name")
    with ledger.db.read() as conn:
        return bool(conn.execute(text(sql), {"name": ACTIVE_DUE_INDEX}).scalar())


def test_version_1_database_is_upgraded_once(database_url: str, tmp_path: Path, clock: FrozenClock) -> None:
    assert SCHEMA_VERSION == 8
    state_dir = tmp_path / "state"
    with Ledger.open(state_dir=state_dir, database_url=database_url, clock=clock) as ledger:
        made = ledger.tasks.create(runtime="cli", task="made under version 1", owner_key="agent:m:main",
                                   status="running")
        with ledger.db.write() as conn:
            for statement in [*v6_shape(ledger), *V1_SHAPE]:
                conn.execute(text(statement))
        assert "ix_task_runs_last_event_at" in _task_run_indexes(ledger)

    for _ in range(2):  # the second open finds the current version and runs nothing
        with Ledger.open(state_dir=state_dir, database_url=database_url, clock=clock) as ledger:
            indexes = _task_run_indexes(ledger)
            assert not indexes & {"ix_task_runs_last_event_at", "ix_task_runs_cleanup_after"}
            assert "idx_task_runs_cleanup" in indexes
            assert _has_due_index(ledger)
            assert {"ix_task_runs_status", "idx_task_runs_runtime_status"} <= indexes
            with ledger.db.read() as conn:
                version = conn.execute(schema_meta.select()).mappings().one()["value"]
                cron_columns = {c["name"] for c in inspect(conn).get_columns("cron_jobs")}
                session_columns = {c["name"] for c in inspect(conn).get_columns("sessions")}
                assert inspect(conn).has_table("task_payloads")
            assert version == str(SCHEMA_VERSION)
            assert "timeout_ms" in cron_columns
            assert "last_route_json" in session_columns
            assert ledger.tasks.get(made.task_id) == made
            assert [t.task_id for t in ledger.tasks.list(status="running")] == [made.task_id]
            assert ledger.summary().by_status_runtime == {("running", "cli"): 1}


def test_version_2_database_gets_the_payload_table_once(database_url: str, tmp_path: Path,
                                                       clock: FrozenClock) -> None:
    state_dir = tmp_path / "state"
    with Ledger.open(state_dir=state_dir, database_url=database_url, clock=clock) as ledger, ledger.db.write() as conn:
        conn.execute(text("DROP TABLE task_payloads"))
        for statement in [*v6_shape(ledger), *V2_SHAPE]:
            conn.execute(text(statement))
    for _ in range(2):
        with Ledger.open(state_dir=state_dir, database_url=database_url, clock=clock) as ledger:
            with ledger.db.read() as conn:
                assert inspect(conn).has_table("task_payloads")
                assert conn.execute(schema_meta.select()).mappings().one()["value"] == str(SCHEMA_VERSION)
                indexes = {str(ix["name"]) for ix in inspect(conn).get_indexes("task_payloads")}
            assert indexes == {"ix_task_payloads_claimed_by"}


def test_version_2_database_that_already_has_the_payload_table_keeps_it(database_url: str, tmp_path: Path,
                                                                       clock: FrozenClock) -> None:
    state_dir = tmp_path / "state"
    # What the queue used to create on its own under version 2, with a row in it.
    with Ledger.open(state_dir=state_dir, database_url=database_url, clock=clock) as ledger, ledger.db.write() as conn:
        conn.execute(text("INSERT INTO task_payloads (task_id, argv_json, shell) VALUES ('t1', '[]', false)"))
        for statement in [*v6_shape(ledger), *V2_SHAPE]:
            conn.execute(text(statement))
    with Ledger.open(state_dir=state_dir, database_url=database_url, clock=clock) as ledger, ledger.db.read() as conn:
        assert conn.execute(text("SELECT task_id FROM task_payloads")).scalars().all() == ["t1"]
        assert conn.execute(schema_meta.select()).mappings().one()["value"] == str(SCHEMA_VERSION)


def test_version_2_database_takes_ids_of_128_characters(database_url: str, tmp_path: Path, clock: FrozenClock
                                                        ) -> None:
    state_dir = tmp_path / "state"
    with Ledger.open(state_dir=state_dir, database_url=database_url, clock=clock) as ledger, \
            ledger.db.write() as conn:
        if ledger.db.is_postgres:  # version 2's widths; SQLite never enforced them
            for table, column in (("task_runs", "task_id"), ("task_events", "task_id"),
                                  ("task_delivery_state", "task_id"), ("flow_runs", "flow_id")):
                conn.execute(text(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE VARCHAR(64)"))
        for statement in [*v6_shape(ledger), *V2_SHAPE]:
            conn.execute(text(statement))
    with Ledger.open(state_dir=state_dir, database_url=database_url, clock=clock) as ledger:
        flow = ledger.flows.create_managed("agent:m:main", "ctl", "goal", flow_id="f" * 128)
        task = ledger.tasks.create(runtime="cli", task="t", owner_key="agent:m:main", task_id="t" * 128,
                                   parent_flow_id=flow.flow_id,
                                   requester_origin={"channel": "webhook", "to": "x"})
        assert ledger.tasks.get(task.task_id) == task


def test_version_2_database_gains_generation_media_and_session_resources(database_url: str, tmp_path: Path,
                                                                          clock: FrozenClock) -> None:
    state_dir = tmp_path / "state"
    with Ledger.open(state_dir=state_dir, database_url=database_url, clock=clock) as ledger:
        made = ledger.tasks.create(runtime="cli", task="made under version 2", owner_key="agent:m:main")
        with ledger.db.write() as conn:
            for statement in [*v6_shape(ledger), *V2_SHAPE]:
                conn.execute(text(statement))
            assert not inspect(conn).has_table("generation_media")

    for _ in range(2):
        with Ledger.open(state_dir=state_dir, database_url=database_url, clock=clock) as ledger:
            with ledger.db.read() as conn:
                schema = inspect(conn)
                assert "media_json" in {c["name"] for c in schema.get_columns("task_runs")}
                assert "ended_at" in {c["name"] for c in schema.get_columns("sessions")}
                assert schema.has_table("generation_media") and schema.has_table("session_resources")
                assert schema.has_table("cron_controls")
                version = conn.execute(schema_meta.select()).mappings().one()["value"]
            assert version == str(SCHEMA_VERSION)
            assert ledger.tasks.get(made.task_id) == made
            # The upgraded tables work: a job's items are recorded and acknowledged, a resource is registered.
            job = ledger.tasks.start_generation("image_generate", "agent:m:main", f"fox {_}").task
            assert job.run_id is not None
            ledger.tasks.complete(job.run_id, media=["fox.png"])
            assert ledger.sessions.ack_media("agent:m:main", job.task_id, ["fox.png"]) == 1
            ledger.sessions.track_cleanup("agent:m:main", ["true"], label=f"tab {_}")
            assert len(ledger.sessions.resources("agent:m:main")) == _ + 1


def test_version_6_database_counts_the_tasks_it_has(database_url: str, tmp_path: Path, clock: FrozenClock) -> None:
    """Migration 7 backfills the counts from the rows already there; from then on the triggers keep them."""
    state_dir = tmp_path / "state"
    with Ledger.open(state_dir=state_dir, database_url=database_url, clock=clock) as ledger:
        with ledger.db.write() as conn:
            for statement in [*v6_shape(ledger),
                              "UPDATE schema_meta SET value = '6' WHERE meta_key = 'schema_version'"]:
                conn.execute(text(statement))
        # Written under version 6: no trigger counts these.
        ledger.tasks.create_many({"runtime": "cli", "task": f"old {i}", "scope_kind": "system",
                                  "status": "succeeded" if i % 2 else "queued"} for i in range(6))
        ledger.tasks.create(runtime="acp", task="old acp", owner_key="agent:m:main", status="running")

    for round_ in range(2):  # the second open finds version 7 and counts nothing twice
        with Ledger.open(state_dir=state_dir, database_url=database_url, clock=clock) as ledger:
            with ledger.db.read() as conn:
                assert conn.execute(schema_meta.select()).mappings().one()["value"] == str(SCHEMA_VERSION)
            expected = {("queued", "cli"): 3, ("succeeded", "cli"): 3, ("running", "acp"): 1 + round_}
            assert ledger.summary().by_status_runtime == expected
            ledger.tasks.create(runtime="acp", task=f"new {round_}", owner_key="agent:m:main", status="running")


def test_version_7_database_gains_the_index_of_the_due_active_rows(database_url: str, tmp_path: Path,
                                                                   clock: FrozenClock) -> None:
    """Migration 8: the stale, cron and ended active rows are one range of a partial expression index, which the
    due-row query of both doors is written to match (SQLite's plan names it)."""
    state_dir = tmp_path / "state"
    with Ledger.open(state_dir=state_dir, database_url=database_url, clock=clock) as ledger:
        with ledger.db.write() as conn:
            for statement in [*V7_SHAPE, "UPDATE schema_meta SET value = '7' WHERE meta_key = 'schema_version'"]:
                conn.execute(text(statement))
        assert not _has_due_index(ledger)
    for _ in range(2):
        with Ledger.open(state_dir=state_dir, database_url=database_url, clock=clock) as ledger:
            assert _has_due_index(ledger)
            with ledger.db.read() as conn:
                assert conn.execute(schema_meta.select()).mappings().one()["value"] == str(SCHEMA_VERSION)
                if not ledger.db.is_postgres:
                    plan = " ".join(str(row[-1]) for row in conn.execute(
                        text(f"EXPLAIN QUERY PLAN SELECT seq FROM task_runs WHERE {ACTIVE_DUE_WHERE} ORDER BY seq"),
                        {"b_stale_before": 0}))
                    assert ACTIVE_DUE_INDEX in plan
