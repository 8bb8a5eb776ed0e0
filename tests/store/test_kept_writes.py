"""Write transactions on SQLite run on connections kept open between them, BEGIN IMMEDIATE and COMMIT sent straight
to the driver (tasks/core/kept_writes.py, `Database.write`): each is still one transaction, committed whole or
rolled back whole, the connection left clean for the next writer; a forked child and concurrent threads get
connections of their own; close still truncates the WAL."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from flowledger import Ledger
from flowledger.tasks.core.db import Database
from flowledger.tasks.core.errors import StorageUnavailableError


class BoomError(Exception):
    pass


def _tasks(ledger: Ledger) -> int:
    with ledger.db.read() as conn:
        return int(conn.execute(text("SELECT count(*) FROM task_runs")).scalar_one())


def test_a_failed_unit_leaves_nothing_and_the_next_write_works(ledger: Ledger) -> None:
    """Both kinds of statement a unit runs: the driver's (`Prepared`) and SQLAlchemy's (autobegun inside)."""
    ledger.tasks.create(runtime="cli", task="kept", owner_key="agent:main:main", run_id="r-1")
    for core_statement in (False, True):
        with pytest.raises(BoomError), ledger.db.write() as conn:
            conn.connection.driver_connection.execute(
                "UPDATE task_runs SET label = 'driver' WHERE run_id = 'r-1'")
            if core_statement:
                conn.execute(text("UPDATE task_runs SET task = 'core' WHERE run_id = 'r-1'"))
            raise BoomError
        got = ledger.tasks.require("r-1")
        assert (got.label, got.task) == (None, "kept")
    ledger.tasks.start("r-1")
    assert ledger.tasks.require("r-1").status == "running"


def test_core_statements_inside_a_write_commit_with_it(ledger: Ledger) -> None:
    with ledger.db.write() as conn:
        conn.execute(text("INSERT INTO schema_meta (meta_key, value) VALUES ('kept-test', 'x')"))
    with ledger.db.read() as conn:
        assert conn.execute(text("SELECT value FROM schema_meta WHERE meta_key = 'kept-test'")).scalar() == "x"


def test_sqlite_writes_reuse_one_connection_with_the_ledger_pragmas(sqlite_ledger: Ledger) -> None:
    drivers = []
    for i in range(3):
        with sqlite_ledger.db.write() as conn:
            drivers.append(conn.connection.driver_connection)
            conn.execute(text(f"INSERT INTO schema_meta (meta_key, value) VALUES ('k{i}', 'v')"))
    assert drivers[0] is drivers[1] is drivers[2]
    assert not drivers[0].in_transaction
    pragmas = {name: drivers[0].execute(f"PRAGMA {name}").fetchone()[0]
               for name in ("busy_timeout", "journal_mode", "synchronous", "foreign_keys")}
    assert pragmas == {"busy_timeout": 30_000, "journal_mode": "wal", "synchronous": 1, "foreign_keys": 1}


def test_a_failed_commit_surfaces_as_storage_unavailable_and_is_rolled_back(tmp_path: Path) -> None:
    db = Database.open(f"sqlite:///{tmp_path / 'runs.sqlite'}", state_dir=tmp_path)
    try:
        with db.write() as conn:
            conn.execute(text("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
            conn.execute(text("CREATE TABLE child (pid INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY "
                              "DEFERRED)"))
        with pytest.raises(StorageUnavailableError, match="FOREIGN KEY"), db.write() as conn:
            used = conn.connection.driver_connection
            used.execute("INSERT INTO child (pid) VALUES (42)")  # refused only at COMMIT (deferred)
        assert not used.in_transaction
        with db.write() as conn:
            assert conn.execute(text("SELECT count(*) FROM child")).scalar_one() == 0
    finally:
        db.close()


def test_threads_write_at_once_beyond_the_pool_size(sqlite_ledger: Ledger) -> None:
    """More writers at once than the engine's pool holds (5 + 10 overflow): each waits its turn for the write lock
    on a connection of its own, none on the pool."""
    barrier = threading.Barrier(20)
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            barrier.wait()
            sqlite_ledger.tasks.create(runtime="cli", task=f"t{i}", owner_key="agent:main:main", run_id=f"r-{i}")
            sqlite_ledger.tasks.complete(f"r-{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _tasks(sqlite_ledger) == 20


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_writes_on_its_own_connection(sqlite_ledger: Ledger) -> None:
    sqlite_ledger.tasks.create(runtime="cli", task="parent", owner_key="agent:main:main", run_id="r-parent")
    pid = os.fork()
    if pid == 0:  # the child: any failure is its exit code
        code = 1
        try:
            sqlite_ledger.tasks.create(runtime="cli", task="child", owner_key="agent:main:main", run_id="r-child")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    sqlite_ledger.tasks.complete("r-parent")
    assert sqlite_ledger.tasks.require("r-child").task == "child"
    assert sqlite_ledger.tasks.require("r-parent").status == "succeeded"


def test_close_closes_the_kept_connections_and_truncates_the_wal(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    with Ledger.open(state_dir=tmp_path, database_url=f"sqlite:///{path}") as ledger:
        ledger.tasks.create(runtime="cli", task="t", owner_key="agent:main:main", run_id="r")
        with ledger.db.write() as conn:
            kept = conn.connection.driver_connection
    with pytest.raises(Exception, match="closed"):
        kept.execute("SELECT 1")
    wal = Path(f"{path}-wal")
    assert not wal.exists() or wal.stat().st_size == 0
