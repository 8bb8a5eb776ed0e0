"""Statements whose answer nobody reads (`Prepared.defer`), and on PostgreSQL the BEGIN, ride with the next statement
that needs an answer, or with the COMMIT (tasks/core/pg_deferred.py). Nothing may change but the number of round
trips: order kept, one transaction, an error anywhere fails all of it, and the lock a create takes is held before
its dedupe check runs. Every test here runs on both engines (SQLite runs deferred statements at once)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from flowledger import Ledger
from flowledger.tasks.core.errors import StorageUnavailableError
from flowledger.tasks.core.prepared import Prepared

_INSERT_META = Prepared(text("INSERT INTO schema_meta (meta_key, value) VALUES (:k, :v)"))
_META = Prepared(text("SELECT value FROM schema_meta WHERE meta_key = :k"))


def _meta(ledger: Ledger, key: str) -> str | None:
    with ledger.db.read() as conn:
        value = conn.execute(text("SELECT value FROM schema_meta WHERE meta_key = :k"), {"k": key}).scalar()
    return None if value is None else str(value)


def test_a_statement_sees_what_was_deferred_before_it(ledger: Ledger) -> None:
    with ledger.db.write() as conn:
        _INSERT_META.defer(conn, {"k": "d-1", "v": "one"})
        assert _META.run(conn, {"k": "d-1"}).fetchone()[0] == "one"  # the driver's path
        _INSERT_META.defer(conn, {"k": "d-2", "v": "it's 100%"})
        # SQLAlchemy's path: the queued INSERT goes in the same message, and the rows are the SELECT's.
        rows = conn.execute(text("SELECT meta_key, value FROM schema_meta WHERE meta_key LIKE 'd-%' "
                                 "ORDER BY meta_key")).all()
        assert [tuple(r) for r in rows] == [("d-1", "one"), ("d-2", "it's 100%")]
        _INSERT_META.defer(conn, {"k": "d-3", "v": "three"})  # only the COMMIT after it
    assert (_meta(ledger, "d-1"), _meta(ledger, "d-2"), _meta(ledger, "d-3")) == ("one", "it's 100%", "three")


def test_a_failing_deferred_statement_fails_the_whole_transaction(ledger: Ledger) -> None:
    ledger.tasks.create(runtime="cli", task="kept", owner_key="agent:main:main", run_id="r-1")
    with pytest.raises(StorageUnavailableError), ledger.db.write() as conn:
        conn.execute(text("UPDATE task_runs SET label = 'half' WHERE run_id = 'r-1'"))
        _INSERT_META.defer(conn, {"k": "dup", "v": "first"})
        _INSERT_META.defer(conn, {"k": "dup", "v": "second"})  # refused (primary key): on PostgreSQL at the COMMIT
    assert _meta(ledger, "dup") is None
    assert ledger.tasks.require("r-1").label is None
    # The connection went back clean: the next writes and reads work, each in its own transaction.
    ledger.tasks.start("r-1")
    ledger.tasks.complete("r-1", summary="ok")
    assert [e.kind for e in ledger.tasks.events("r-1")] == ["queued", "running", "succeeded"]


def test_a_failing_deferred_statement_fails_the_statement_it_rides_with(ledger: Ledger) -> None:
    with pytest.raises(StorageUnavailableError), ledger.db.write() as conn:
        _INSERT_META.defer(conn, {"k": "dup2", "v": "first"})
        _INSERT_META.defer(conn, {"k": "dup2", "v": "second"})
        _META.run(conn, {"k": "dup2"})
        pytest.fail("the refused INSERT must surface at the latest with the next answer")
    assert _meta(ledger, "dup2") is None


def test_an_empty_write_and_a_raising_body_leave_the_connection_reusable(ledger: Ledger) -> None:
    with ledger.db.write():
        pass
    with pytest.raises(RuntimeError), ledger.db.write() as conn:
        _INSERT_META.defer(conn, {"k": "gone", "v": "x"})
        raise RuntimeError("boom")
    assert _meta(ledger, "gone") is None
    for _ in range(3):  # the pool hands the same connections out again: each must start a fresh transaction
        with ledger.db.write() as conn:
            _INSERT_META.defer(conn, {"k": f"again-{_}", "v": "x"})
    assert _meta(ledger, "again-2") == "x"
    if ledger.db.is_postgres:
        with ledger.db.engine.connect() as conn:
            driver = conn.connection.driver_connection
            assert driver.autocommit is False  # psycopg's own transactions again outside `write`/`read`


def test_concurrent_creates_of_one_run_scope_make_one_task(ledger: Ledger) -> None:
    """The run-scope lock is queued, not sent at once: it still runs, in the same message, before the dedupe
    check it guards, so two creates of one run id never both miss each other's row."""
    rounds, errors = 12, []

    def create(run_id: str, barrier: threading.Barrier) -> None:
        try:
            barrier.wait(10)
            ledger.tasks.create(runtime="cli", task="twin", owner_key="agent:main:main", run_id=run_id)
        except Exception as exc:  # reported below, never swallowed
            errors.append(exc)

    for n in range(rounds):
        barrier = threading.Barrier(3)
        threads = [threading.Thread(target=create, args=(f"twin-{n}", barrier)) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert errors == []
    with ledger.db.read() as conn:
        counts = conn.execute(text("SELECT run_id, count(*) FROM task_runs WHERE run_id LIKE 'twin-%' "
                                   "GROUP BY run_id")).all()
    assert sorted(counts) == sorted((f"twin-{n}", 1) for n in range(rounds))
