"""`stream_projected` reads the noteworthy rows kind by kind through indexes (tasks/health/projection.py); the rows it
yields are exactly those of the one-filter definition (`_noteworthy`), in seq order, each once — also a row that
is noteworthy for several reasons at once — on both engines."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, text

from flowledger import FrozenClock, Ledger
from flowledger.tasks.core.tables import task_runs
from flowledger.tasks.health import projection

OWNER = "agent:main:main"


def edit(ledger: Ledger, task_id: str, assignments: str) -> None:
    with ledger.db.write() as conn:
        conn.execute(text(f"UPDATE task_runs SET {assignments} WHERE task_id = :id"), {"id": task_id})


def test_kinds_yield_the_noteworthy_rows_once_each_in_order(ledger: Ledger, clock: FrozenClock) -> None:
    tasks = ledger.tasks
    stale = tasks.create(runtime="cli", task="stale", scope_kind="system", status="running").task_id
    tasks.create(runtime="cli", task="quiet done", scope_kind="system", status="succeeded")
    cron = tasks.create(runtime="cron", task="cron", scope_kind="system", status="queued").task_id
    lost = tasks.create(runtime="cli", task="lost", scope_kind="system", status="running").task_id
    edit(ledger, lost, "status = 'lost'")
    undelivered = tasks.create(runtime="acp", task="undelivered", owner_key=OWNER, status="failed").task_id
    edit(ledger, undelivered, "delivery_status = 'failed'")
    silenced = tasks.create(runtime="acp", task="silenced", owner_key=OWNER, status="failed",
                            notify_policy="silent").task_id
    edit(ledger, silenced, "delivery_status = 'failed'")
    early = tasks.create(runtime="cli", task="started early", scope_kind="system", status="succeeded").task_id
    edit(ledger, early, "started_at = created_at - 1000")
    ended_early = tasks.create(runtime="cli", task="ended early", scope_kind="system", status="succeeded").task_id
    edit(ledger, ended_early, "started_at = created_at + 5000, ended_at = created_at + 1000")
    unstamped = tasks.create(runtime="cli", task="unstamped", scope_kind="system", status="succeeded").task_id
    # Several reasons at once: unstamped, timestamps out of order and an unsilenced failed delivery.
    many = tasks.create(runtime="acp", task="many", owner_key=OWNER, status="failed").task_id
    for task_id in (unstamped, many):
        edit(ledger, task_id, "cleanup_after = NULL")
    edit(ledger, many, "delivery_status = 'failed', started_at = created_at - 1000")
    clock.advance(timedelta(minutes=1))
    at_grace = tasks.create(runtime="cli", task="at the grace", scope_kind="system", status="running").task_id
    clock.advance(timedelta(milliseconds=1))
    tasks.create(runtime="cli", task="1 ms inside the grace", scope_kind="system", status="running")
    clock.advance(timedelta(minutes=5) - timedelta(milliseconds=1))  # the lost grace is ≥ 5 minutes of quiet
    # the running rows are past the lost grace, the fresh ones made later: one of them already ended (a finding)
    tasks.create(runtime="cli", task="fresh", scope_kind="system", status="running")
    ended_active = tasks.create(runtime="cli", task="fresh, ended", scope_kind="system", status="running").task_id
    edit(ledger, ended_active, "ended_at = created_at")
    now = clock.now()

    with ledger.db.read() as conn:
        expected = list(conn.execute(select(task_runs.c.task_id).where(projection._noteworthy(now))
                                     .order_by(task_runs.c.seq)).scalars())
    got = [stored.task_id for stored, _ in projection.stream_projected(ledger.db, now, authoritative=False, batch=2)]
    assert got == expected
    assert set(got) == {stale, cron, lost, undelivered, early, ended_early, unstamped, many, at_grace,
                        ended_active}
    assert silenced not in got
