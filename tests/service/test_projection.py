"""The inspection projection on both engines: non-mutating, lost and cron-recovered views (scenario 19),
and `has_backing` read straight from the durable rows."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, insert, select

from flowledger import FrozenClock, Ledger, TaskStatus
from flowledger.flows import health
from flowledger.tasks.core.clock import to_ms
from flowledger.tasks.core.tables import cron_run_log, heartbeat_wakes, system_events, task_events
from flowledger.tasks.health.backing import has_backing
from flowledger.tasks.runs import liveness


def test_scenario_19_projection_is_non_mutating(ledger: Ledger, clock: FrozenClock) -> None:
    ledger.authoritative = True
    start = clock.now() - timedelta(minutes=10)
    clock.set(start)
    task = ledger.tasks.create(runtime="acp", task="Summarise", owner_key="agent:main:main",
                               child_session_key="agent:main:acp:child", run_id="run-1", status="running",
                               started_at=start)
    clock.advance(timedelta(minutes=10))
    with ledger.db.read() as conn:
        events_before = conn.execute(select(func.count()).select_from(task_events)).scalar()
    [projected] = health.project_list(ledger)
    assert projected.status == TaskStatus.LOST and projected.error == "backing session missing"
    assert projected.ended_at == clock.now() and projected.last_event_at == clock.now()
    assert projected.cleanup_after == clock.now() + timedelta(days=7)
    assert health.project_one(ledger, task).status == TaskStatus.LOST
    assert ledger.tasks.require(task.task_id).status == TaskStatus.RUNNING
    with ledger.db.read() as conn:
        assert conn.execute(select(func.count()).select_from(system_events)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(heartbeat_wakes)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(task_events)).scalar() == events_before


def test_project_list_filters_on_the_projected_status(ledger: Ledger, clock: FrozenClock) -> None:
    gone = ledger.tasks.create(runtime="cli", task="gone", owner_key="agent:main:main", run_id="r1",
                               status="running", started_at=clock.now())
    ledger.tasks.create(runtime="cli", task="fine", owner_key="agent:main:main", status="running",
                        started_at=clock.now())
    clock.advance(timedelta(minutes=5))
    assert [t.task_id for t in health.project_list(ledger, status="lost")] == [gone.task_id]
    assert [t.task for t in health.project_list(ledger, status="running")] == ["fine"]
    assert len(health.project_list(ledger, runtime="cli")) == 2
    assert health.project_list(ledger, runtime="acp") == []


def test_projection_shows_cron_recovery(ledger: Ledger, clock: FrozenClock) -> None:
    started = clock.now()
    task = ledger.tasks.create(runtime="cron", task="nightly", run_id=f"cron:job-p:{to_ms(started)}",
                               source_id="job-p", status="running", started_at=started)
    with ledger.db.write() as conn:
        conn.execute(insert(cron_run_log).values(job_id="job-p", action="finished", run_at=started, status="ok",
                                                 duration_ms=1500, ts=started, summary="done"))
    projected = health.project_one(ledger, task)
    assert projected.status == TaskStatus.SUCCEEDED
    assert projected.ended_at == started + timedelta(milliseconds=1500)
    assert projected.cleanup_after == projected.ended_at + timedelta(days=7)
    assert ledger.tasks.require(task.task_id).status == TaskStatus.RUNNING


def test_has_backing_reads_durable_rows(ledger: Ledger, clock: FrozenClock) -> None:
    now = clock.now()
    cli = ledger.tasks.create(runtime="cli", task="c", owner_key="agent:main:main", run_id="run-b",
                              status="running", started_at=now)
    acp = ledger.tasks.create(runtime="acp", task="a", owner_key="agent:main:main",
                              child_session_key="agent:main:acp:b", status="running", started_at=now)
    cron = ledger.tasks.create(runtime="cron", task="k", source_id="job-b", run_id="cron:job-b:1",
                               status="running", started_at=now)
    with ledger.db.read() as conn:
        assert not has_backing(conn, cli, now, authoritative=False)
        assert has_backing(conn, acp, now, authoritative=False)
        assert not has_backing(conn, acp, now, authoritative=True)
        assert has_backing(conn, acp, now, authoritative=True, active_acp_sessions={"agent:main:acp:b"})
        assert has_backing(conn, cron, now, authoritative=False)
        assert not has_backing(conn, cron, now, authoritative=True)
        assert has_backing(conn, cron, now, authoritative=True, active_cron_jobs={"JOB-B"})
    with ledger.db.write() as conn:
        liveness.renew_lease(conn, "gw", now)
        liveness.register_run(conn, "run-b", "gw", now)
    with ledger.db.read() as conn:
        assert has_backing(conn, cli, now, authoritative=False)
        assert not has_backing(conn, cli, now + liveness.LEASE_TTL, authoritative=False)
        assert has_backing(conn, cli, now + liveness.LEASE_TTL, authoritative=False, live_runs={"run-b"})
