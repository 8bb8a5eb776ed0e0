"""The single-task write path runs its statements on the driver (tasks/db.Prepared): it must keep every guarantee
the SQLAlchemy execute path gave — guarded writes of changed columns only, NUL refused, lost connections
replaced — on both engines."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import create_engine, text

from flowledger import FrozenClock, Ledger
from flowledger.tasks.core import store
from flowledger.tasks.core.errors import InvalidInput
from flowledger.tasks.core.states import TaskStatus


def test_stale_copy_writes_only_what_it_changed(ledger: Ledger, clock: FrozenClock) -> None:
    created = ledger.tasks.create(runtime="cli", task="work", owner_key="agent:main:main", run_id="r-stale")
    clock.advance(timedelta(seconds=1))
    ledger.tasks.progress("r-stale", "halfway")
    stale = created
    db = ledger.tasks.db
    with db.write() as conn:
        written = store.compare_and_set(conn, stale.replace(label="renamed"), expected={TaskStatus.QUEUED},
                                        previous=stale)
    assert written
    with db.read() as conn:
        now = store.get(conn, created.task_id)
    assert now is not None
    assert now.label == "renamed"
    assert now.progress_summary == "halfway"  # the stale copy did not revert the concurrent write


def test_guard_refuses_unexpected_status(ledger: Ledger) -> None:
    created = ledger.tasks.create(runtime="cli", task="work", owner_key="agent:main:main", run_id="r-guard")
    ledger.tasks.complete("r-guard")
    with ledger.tasks.db.write() as conn:
        assert not store.compare_and_set(conn, created.replace(status=TaskStatus.RUNNING),
                                         expected={TaskStatus.QUEUED, TaskStatus.RUNNING}, previous=created)
    assert ledger.tasks.require(created.task_id).status == TaskStatus.SUCCEEDED


def test_nul_refused_on_prepared_statements(ledger: Ledger) -> None:
    with pytest.raises(InvalidInput):
        ledger.tasks.create(runtime="cli", task="bad\x00text", owner_key="agent:main:main", run_id="r-nul")
    with pytest.raises(InvalidInput):
        ledger.tasks.get("run\x00id")
    assert ledger.tasks.list() == []


def test_write_survives_a_killed_postgres_connection(ledger: Ledger) -> None:
    db = ledger.tasks.db
    if not db.is_postgres:
        pytest.skip("server-side connection kill is a PostgreSQL scenario")
    ledger.tasks.create(runtime="cli", task="work", owner_key="agent:main:main", run_id="r-kill")
    admin = create_engine(db.engine.url)  # its own pool, so the kill reaches every ledger connection
    try:
        with admin.connect() as conn:
            killed = conn.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
    finally:
        admin.dispose()
    assert killed
    # The pooled connection is dead but was used a moment ago, so it is not pinged: the unit finds it dead
    # before committing anything and runs again on a fresh connection.
    started = ledger.tasks.start("r-kill")
    assert [t.status for t in started] == [TaskStatus.RUNNING]
