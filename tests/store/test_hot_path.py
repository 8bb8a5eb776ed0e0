"""The single-task write path runs its statements on the driver (tasks/db.Prepared): it must keep every guarantee
the SQLAlchemy execute path gave — guarded writes of changed columns only, NUL refused, lost connections
replaced — on both engines."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import create_engine, text

from flowledger import FrozenClock, Ledger
from flowledger.tasks.core import batch_writes, store
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


def test_batch_write_sets_changed_columns_under_the_status_guard(ledger: Ledger, clock: FrozenClock) -> None:
    """The sweep's batch write (batch_writes.write_locked, the path the sweep takes on each engine): each row's
    changed columns, only where the stored status is still the one it was read with; a column it did not change
    is left as stored."""
    first = ledger.tasks.create(runtime="cli", task="one", owner_key="agent:main:main", run_id="r-many-1")
    second = ledger.tasks.create(runtime="cli", task="two", owner_key="agent:main:main", run_id="r-many-2")
    moved = ledger.tasks.create(runtime="cli", task="three", owner_key="agent:main:main", run_id="r-many-3")
    clock.advance(timedelta(seconds=1))
    ledger.tasks.progress("r-many-1", "halfway")  # after `first` was read: not in the batch's copy
    ledger.tasks.complete("r-many-3")  # its status moved since it was read: the guard refuses it
    now = clock.now()
    pairs = [(first, first.replace(status=TaskStatus.LOST, ended_at=now, error="gone")),
             (second, second.replace(status=TaskStatus.LOST, ended_at=now, error="gone", label="renamed")),
             (moved, moved.replace(status=TaskStatus.LOST, ended_at=now, error="gone"))]
    with ledger.tasks.db.write() as conn:
        assert batch_writes.write_locked(conn, pairs) == 2
    one, two, three = (ledger.tasks.require(t.task_id) for t in (first, second, moved))
    assert (one.status, one.error, one.ended_at, one.progress_summary) == (TaskStatus.LOST, "gone", now, "halfway")
    assert (two.status, two.label) == (TaskStatus.LOST, "renamed")
    assert three.status == TaskStatus.SUCCEEDED


def test_batch_write_refuses_nul(ledger: Ledger) -> None:
    task = ledger.tasks.create(runtime="cli", task="work", owner_key="agent:main:main", run_id="r-many-nul")
    with pytest.raises(InvalidInput), ledger.tasks.db.write() as conn:
        batch_writes.write_locked(conn, [(task, task.replace(label="bad\x00label"))])
    assert ledger.tasks.require(task.task_id).label is None


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
