"""The sweep on both engines: lost at the 5-minute boundary, durable liveness, cron recovery, prune and stamp
at their boundaries, recheck before writing, preview = plan (REFERENCE §11 scenarios 20–24, 28–30)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ledger_helpers import at, set_columns
from sqlalchemy import insert, select

from flowledger import FrozenClock, Ledger, TaskStatus
from flowledger.tasks.core.clock import to_ms
from flowledger.tasks.core.tables import METADATA, cron_jobs, cron_run_log, task_delivery_state, task_events
from flowledger.tasks.health import maintenance
from flowledger.tasks.runs import liveness

MS = timedelta(milliseconds=1)
GRACE = timedelta(minutes=5)




def counts(ledger: Ledger, *, apply: bool = False) -> dict[str, int]:
    return ledger.maintenance(apply=apply).maintenance.tasks.to_json()


def status_of(ledger: Ledger, task_id: str) -> TaskStatus:
    task = ledger.tasks.get(task_id)
    assert task is not None
    return task.status


def running_cli(ledger: Ledger, run_id: str = "run-cli", **kw: Any) -> str:
    task = ledger.tasks.create(runtime="cli", task="export", owner_key="agent:main:main", run_id=run_id,
                               status="running", started_at=ledger.clock.now(), **kw)
    return task.task_id


def test_cli_without_live_run_is_lost_exactly_at_the_grace(ledger: Ledger, clock: FrozenClock) -> None:
    task_id = running_cli(ledger)
    clock.advance(GRACE - MS)
    assert counts(ledger) == {"reconciled": 0, "recovered": 0, "cleanup_stamped": 0, "pruned": 0}
    assert counts(ledger, apply=True)["reconciled"] == 0
    assert status_of(ledger, task_id) == TaskStatus.RUNNING
    clock.advance(MS)
    assert counts(ledger)["reconciled"] == 1
    assert counts(ledger, apply=True)["reconciled"] == 1
    lost = ledger.tasks.get(task_id)
    assert lost is not None and lost.status == TaskStatus.LOST
    assert lost.error == "backing session missing"
    assert lost.ended_at == clock.now() and lost.last_event_at == clock.now()
    assert lost.cleanup_after == clock.now() + timedelta(days=7)
    assert [e.kind for e in ledger.tasks.events(task_id)][-1] == "lost"


def test_existing_error_is_kept_when_marked_lost(ledger: Ledger, clock: FrozenClock) -> None:
    task_id = running_cli(ledger, error="worker said: disk full")
    clock.advance(GRACE)
    ledger.maintenance(apply=True)
    assert ledger.tasks.require(task_id).error == "worker said: disk full"


def test_gateway_lease_and_run_context_keep_a_cli_task_alive(ledger: Ledger, clock: FrozenClock) -> None:
    task_id = running_cli(ledger, run_id="run-live")
    with ledger.db.write() as conn:
        liveness.renew_lease(conn, "gw-1", clock.now())
        liveness.register_run(conn, "run-live", "gw-1", clock.now(), task_id=task_id)
    clock.advance(timedelta(minutes=10))
    with ledger.db.write() as conn:
        liveness.renew_lease(conn, "gw-1", clock.now())
    assert counts(ledger, apply=True)["reconciled"] == 0
    assert status_of(ledger, task_id) == TaskStatus.RUNNING
    # The gateway stops renewing: its lease lapses after two minutes, and the run is no longer live.
    clock.advance(liveness.LEASE_TTL - MS)
    assert counts(ledger)["reconciled"] == 0
    clock.advance(MS)
    assert counts(ledger, apply=True)["reconciled"] == 1
    assert status_of(ledger, task_id) == TaskStatus.LOST


def test_released_lease_ends_liveness_at_once(ledger: Ledger, clock: FrozenClock) -> None:
    task_id = running_cli(ledger, run_id="run-stop")
    with ledger.db.write() as conn:
        liveness.renew_lease(conn, "gw-1", clock.now())
        liveness.register_run(conn, "run-stop", "gw-1", clock.now())
    clock.advance(GRACE)
    with ledger.db.write() as conn:
        liveness.renew_lease(conn, "gw-1", clock.now())
    assert counts(ledger)["reconciled"] == 0
    with ledger.db.write() as conn:
        liveness.release_lease(conn, "gw-1", clock.now())
    assert counts(ledger, apply=True)["reconciled"] == 1
    assert status_of(ledger, task_id) == TaskStatus.LOST


def test_scenario_20_acp_lost_in_one_pass_when_authoritative(ledger: Ledger, clock: FrozenClock) -> None:
    start = clock.now() - timedelta(minutes=10)
    task = at(clock, start, lambda: ledger.tasks.create(
        runtime="acp", task="Summarise", owner_key="agent:main:main", child_session_key="agent:main:acp:child",
        run_id="run-1", status="running", started_at=start))
    assert counts(ledger, apply=True)["reconciled"] == 0  # not authoritative: acp is never judged
    ledger.authoritative = True
    report = ledger.maintenance(apply=True)
    assert report.maintenance.tasks.to_json() == {"reconciled": 1, "recovered": 0, "cleanup_stamped": 0,
                                                  "pruned": 0}
    lost = ledger.tasks.require(task.task_id)
    assert lost.status == TaskStatus.LOST and lost.error == "backing session missing"
    assert lost.cleanup_after is not None and lost.cleanup_after == lost.ended_at + timedelta(days=7)
    assert lost.cleanup_after > clock.now()


def test_acp_session_owned_by_live_gateway_is_backed(ledger: Ledger, clock: FrozenClock) -> None:
    ledger.authoritative = True
    start = clock.now()
    task = ledger.tasks.create(runtime="acp", task="t", owner_key="agent:main:main",
                               child_session_key="agent:main:acp:c2", status="running", started_at=start)
    with ledger.db.write() as conn:
        liveness.renew_lease(conn, "gw-a", start)
        liveness.upsert_session(conn, "agent:main:acp:c2", start, kind="acp", acp={"backend": "x"},
                                gateway_id="gw-a", spawned_by="agent:main:main", mode="persistent")
    clock.advance(GRACE)
    with ledger.db.write() as conn:
        liveness.renew_lease(conn, "gw-a", clock.now())
    assert counts(ledger)["reconciled"] == 0
    clock.advance(liveness.LEASE_TTL)
    assert counts(ledger, apply=True)["reconciled"] == 1
    assert status_of(ledger, task.task_id) == TaskStatus.LOST


def test_subagent_backing_by_session_row_and_tombstone(ledger: Ledger, clock: FrozenClock) -> None:
    now = clock.now()
    kept = ledger.tasks.create(runtime="subagent", task="a", owner_key="agent:main:main",
                               child_session_key="agent:main:subagent:Kept", status="running", started_at=now)
    gone = ledger.tasks.create(runtime="subagent", task="b", owner_key="agent:main:main",
                               child_session_key="agent:main:subagent:gone", status="running", started_at=now)
    wedged = ledger.tasks.create(runtime="subagent", task="c", owner_key="agent:main:main",
                                 child_session_key="agent:main:subagent:wedged", status="running", started_at=now)
    with ledger.db.write() as conn:
        liveness.upsert_session(conn, "agent:main:subagent:kept", now, kind="subagent")  # case differs
        liveness.upsert_session(conn, "agent:main:subagent:wedged", now, kind="subagent",
                                tombstone="restart could not resume the run")
    clock.advance(GRACE)
    assert counts(ledger, apply=True)["reconciled"] == 2
    assert status_of(ledger, kept.task_id) == TaskStatus.RUNNING
    assert ledger.tasks.require(gone.task_id).error == "backing session missing"
    assert ledger.tasks.require(wedged.task_id).error == "subagent recovery wedged: restart could not resume the run"


def test_task_without_child_or_run_is_always_backed(ledger: Ledger, clock: FrozenClock) -> None:
    task = ledger.tasks.create(runtime="subagent", task="x", owner_key="agent:main:main", status="running",
                               started_at=clock.now())
    clock.advance(timedelta(days=1))
    assert counts(ledger, apply=True)["reconciled"] == 0
    assert status_of(ledger, task.task_id) == TaskStatus.RUNNING


def _cron_job(ledger: Ledger, job_id: str, *, running: bool, **fields: Any) -> None:
    with ledger.db.write() as conn:
        conn.execute(insert(cron_jobs).values(job_id=job_id, name=f"job {job_id}", argv_json="[]", agent_id="main",
                                              created_at=ledger.clock.now(),
                                              running_at=ledger.clock.now() if running else None, **fields))


def _cron_task(ledger: Ledger, job_id: str, started: datetime, **kw: Any) -> str:
    task = ledger.tasks.create(runtime="cron", task=f"cron {job_id}", run_id=f"cron:{job_id}:{to_ms(started)}",
                               source_id=job_id, status="running", started_at=started,
                               child_session_key=f"agent:main:cron:{job_id}:run:{to_ms(started)}", **kw)
    return task.task_id


def test_scenario_28_cron_judged_only_with_authority(ledger: Ledger, clock: FrozenClock) -> None:
    idle = _cron_task(ledger, "idle-job", clock.now())
    busy = _cron_task(ledger, "busy-job", clock.now())
    _cron_job(ledger, "busy-job", running=True)
    with ledger.db.write() as conn:  # a lingering session row does not keep a cron task alive
        liveness.upsert_session(conn, f"agent:main:cron:idle-job:run:{to_ms(clock.now())}", clock.now(),
                                kind="cron")
    clock.advance(GRACE)
    assert counts(ledger, apply=True)["reconciled"] == 0  # the offline CLI never marks cron lost
    ledger.authoritative = True
    assert counts(ledger, apply=True)["reconciled"] == 1
    assert status_of(ledger, idle) == TaskStatus.LOST
    assert status_of(ledger, busy) == TaskStatus.RUNNING


def test_scenario_29_chat_backed_cli(ledger: Ledger, clock: FrozenClock) -> None:
    child = "agent:main:slack:channel:c123"
    live = running_cli(ledger, run_id="run-chat-live", child_session_key=child)
    dead = running_cli(ledger, run_id="run-chat-dead", child_session_key=child)
    with ledger.db.write() as conn:
        liveness.upsert_session(conn, child, clock.now(), kind="session")
    clock.advance(GRACE)
    with ledger.db.write() as conn:
        liveness.renew_lease(conn, "gw", clock.now())
        liveness.register_run(conn, "run-chat-live", "gw", clock.now())
    assert counts(ledger, apply=True)["reconciled"] == 1
    assert status_of(ledger, live) == TaskStatus.RUNNING
    assert status_of(ledger, dead) == TaskStatus.LOST


def test_legacy_cli_without_run_identity_on_a_chat_key_is_lost(ledger: Ledger, clock: FrozenClock) -> None:
    task = ledger.tasks.create(runtime="cli", task="legacy", owner_key="agent:main:main",
                               child_session_key="agent:main:telegram:direct:42", status="running",
                               started_at=clock.now())
    clock.advance(GRACE)
    assert counts(ledger, apply=True)["reconciled"] == 1
    assert status_of(ledger, task.task_id) == TaskStatus.LOST


def _log(ledger: Ledger, job_id: str, run_at: datetime, status: str, **fields: Any) -> None:
    with ledger.db.write() as conn:
        conn.execute(insert(cron_run_log).values(job_id=job_id, action="finished", run_at=run_at, status=status,
                                                 ts=run_at + timedelta(seconds=3), **fields))


def test_scenario_30_cron_durable_recovery_before_lost(ledger: Ledger, clock: FrozenClock) -> None:
    started = clock.now() - timedelta(hours=1)
    timed_out = at(clock, started, lambda: _cron_task(ledger, "job-1", started))
    ok = at(clock, started, lambda: _cron_task(ledger, "job-2", started))
    failed = at(clock, started, lambda: _cron_task(ledger, "job-3", started))
    by_state = at(clock, started, lambda: _cron_task(ledger, "job-4", started))
    _log(ledger, "job-1", started, "error", error="cron: job execution timed out", duration_ms=500)
    _log(ledger, "job-2", started, "skipped", summary="nothing to do")
    _log(ledger, "job-3", started, "error", error="exit 2", duration_ms=-5)
    _cron_job(ledger, "job-4", running=False, last_run_at=started, last_status="ok", last_duration_ms=2000)
    assert counts(ledger) == {"reconciled": 0, "recovered": 4, "cleanup_stamped": 0, "pruned": 0}
    assert counts(ledger, apply=True)["recovered"] == 4
    t1 = ledger.tasks.require(timed_out)
    assert t1.status == TaskStatus.TIMED_OUT and t1.ended_at == started + timedelta(milliseconds=500)
    assert t1.error == "cron: job execution timed out"
    t2 = ledger.tasks.require(ok)
    assert t2.status == TaskStatus.SUCCEEDED and t2.terminal_summary == "nothing to do"
    assert t2.ended_at == started + timedelta(seconds=3)  # no duration: the entry's timestamp
    t3 = ledger.tasks.require(failed)
    assert t3.status == TaskStatus.FAILED and t3.ended_at == started
    t4 = ledger.tasks.require(by_state)
    assert t4.status == TaskStatus.SUCCEEDED and t4.ended_at == started + timedelta(seconds=2)
    assert counts(ledger, apply=True)["recovered"] == 0


def test_cron_recovery_ignores_other_runs(ledger: Ledger, clock: FrozenClock) -> None:
    started = clock.now()
    task_id = _cron_task(ledger, "job-x", started)
    _log(ledger, "job-x", started - timedelta(minutes=1), "ok")
    _cron_job(ledger, "job-x", running=False, last_run_at=started - timedelta(minutes=1), last_status="ok")
    assert counts(ledger, apply=True)["recovered"] == 0
    assert status_of(ledger, task_id) == TaskStatus.RUNNING


def test_scenario_21_prune_removes_task_delivery_row_and_events(ledger: Ledger, clock: FrozenClock) -> None:
    now = clock.now()
    task = at(clock, now - timedelta(days=9), lambda: ledger.tasks.create(
        runtime="cli", task="old", owner_key="agent:main:main", status="running", started_at=now - timedelta(days=9),
        requester_origin={"channel": "webhook", "to": "x"}))
    at(clock, now - timedelta(days=8), lambda: ledger.tasks.cancel(task.task_id))
    assert counts(ledger) == {"reconciled": 0, "recovered": 0, "cleanup_stamped": 0, "pruned": 1}
    assert counts(ledger, apply=True)["pruned"] == 1
    assert ledger.tasks.list() == []
    with ledger.db.read() as conn:
        assert conn.execute(select(task_events).where(task_events.c.task_id == task.task_id)).first() is None
        assert conn.execute(select(task_delivery_state)
                            .where(task_delivery_state.c.task_id == task.task_id)).first() is None


def test_prune_exactly_at_cleanup_after(ledger: Ledger, clock: FrozenClock) -> None:
    task = ledger.tasks.create(runtime="cli", task="done", owner_key="agent:main:main", status="succeeded")
    assert task.cleanup_after == clock.now() + timedelta(days=7)
    clock.advance(timedelta(days=7) - MS)
    assert counts(ledger, apply=True)["pruned"] == 0
    clock.advance(MS)
    assert counts(ledger, apply=True)["pruned"] == 1
    assert ledger.tasks.get(task.task_id) is None


def test_lost_tasks_are_kept_seven_days_too(ledger: Ledger, clock: FrozenClock) -> None:
    task_id = running_cli(ledger)
    clock.advance(GRACE)
    ledger.maintenance(apply=True)
    clock.advance(timedelta(days=7) - MS)
    assert counts(ledger, apply=True)["pruned"] == 0
    clock.advance(MS)
    assert counts(ledger, apply=True)["pruned"] == 1
    assert ledger.tasks.get(task_id) is None


def test_scenario_22_stamp_missing_cleanup(ledger: Ledger, clock: FrozenClock) -> None:
    ended = clock.now() - timedelta(seconds=60)
    task = at(clock, ended, lambda: ledger.tasks.create(runtime="cron", task="nightly", status="failed"))
    set_columns(ledger, task.task_id, cleanup_after=None)
    assert counts(ledger) == {"reconciled": 0, "recovered": 0, "cleanup_stamped": 1, "pruned": 0}
    assert counts(ledger, apply=True)["cleanup_stamped"] == 1
    stamped = ledger.tasks.require(task.task_id)
    assert stamped.cleanup_after == ended + timedelta(days=7)
    assert stamped.cleanup_after > clock.now()


def test_unstamped_terminal_task_past_retention_is_pruned(ledger: Ledger, clock: FrozenClock) -> None:
    task = ledger.tasks.create(runtime="cli", task="old", owner_key="agent:main:main", status="succeeded")
    set_columns(ledger, task.task_id, cleanup_after=None)
    clock.advance(timedelta(days=7) - MS)
    assert counts(ledger) == {"reconciled": 0, "recovered": 0, "cleanup_stamped": 1, "pruned": 0}
    clock.advance(MS)
    assert counts(ledger, apply=True) == {"reconciled": 0, "recovered": 0, "cleanup_stamped": 0, "pruned": 1}


def test_scenario_24_recheck_before_lost_or_prune(ledger: Ledger, clock: FrozenClock) -> None:
    lost_id = running_cli(ledger, run_id="run-fresh")
    done = ledger.tasks.create(runtime="cli", task="done", owner_key="agent:main:main", status="succeeded")
    clock.advance(timedelta(days=7))
    now = clock.now()
    result = maintenance.SweepResult()
    planned = [step for batch in maintenance.plan_batches(ledger.tasks, now, authoritative=False, result=result)
               for step in batch]
    assert sorted(s.step.value for s in planned) == ["lost", "prune"]
    ledger.tasks.progress("run-fresh", "still here")  # fresher than the snapshot
    set_columns(ledger, done.task_id, cleanup_after=now + timedelta(seconds=60))
    applied = maintenance.apply_steps(ledger.tasks, planned, now, authoritative=False)
    assert applied == {}
    assert status_of(ledger, lost_id) == TaskStatus.RUNNING
    assert ledger.tasks.get(done.task_id) is not None


def test_backing_rechecked_inside_the_write(ledger: Ledger, clock: FrozenClock) -> None:
    task_id = running_cli(ledger, run_id="run-late")
    clock.advance(GRACE)
    now = clock.now()
    result = maintenance.SweepResult()
    planned = [s for b in maintenance.plan_batches(ledger.tasks, now, authoritative=False, result=result) for s in b]
    with ledger.db.write() as conn:  # the gateway picks the run up between plan and apply
        liveness.renew_lease(conn, "gw", now)
        liveness.register_run(conn, "run-late", "gw", now)
    assert maintenance.apply_steps(ledger.tasks, planned, now, authoritative=False) == {}
    assert status_of(ledger, task_id) == TaskStatus.RUNNING


def _dump(ledger: Ledger) -> dict[str, list[tuple[Any, ...]]]:
    with ledger.db.read() as conn:
        return {t.name: sorted(map(tuple, conn.execute(select(t))), key=repr) for t in METADATA.sorted_tables}


def _mixed_ledger(ledger: Ledger, clock: FrozenClock) -> None:
    now = clock.now()
    running_cli(ledger, run_id="r-lost")
    ledger.tasks.create(runtime="cli", task="ok", owner_key="agent:main:main", status="succeeded")
    unstamped = ledger.tasks.create(runtime="cron", task="c", status="failed")
    set_columns(ledger, unstamped.task_id, cleanup_after=None)
    at(clock, now - timedelta(hours=1), lambda: _cron_task(ledger, "job-r", now - timedelta(hours=1)))
    _log(ledger, "job-r", now - timedelta(hours=1), "ok")
    with ledger.db.write() as conn:
        liveness.upsert_session(conn, "agent:main:cron:j:run:old", now - timedelta(days=8), kind="cron")
    clock.advance(timedelta(days=7))


def test_preview_writes_nothing_and_equals_apply(ledger: Ledger, clock: FrozenClock) -> None:
    _mixed_ledger(ledger, clock)
    before = _dump(ledger)
    preview = ledger.maintenance(apply=False)
    assert _dump(ledger) == before
    assert preview.mode == "preview"
    applied = ledger.maintenance(apply=True)
    assert applied.mode == "apply"
    assert preview.maintenance.to_json() == applied.maintenance.to_json()
    assert applied.maintenance.tasks.to_json() == {"reconciled": 1, "recovered": 1, "cleanup_stamped": 0,
                                                   "pruned": 2}
    assert applied.maintenance.sessions.pruned == 1
    # One step per task per pass: the recovered cron run ended over 7 days ago, so the next pass prunes it.
    assert ledger.maintenance(apply=True).maintenance.tasks.to_json() == {
        "reconciled": 0, "recovered": 0, "cleanup_stamped": 0, "pruned": 1}
    assert ledger.maintenance(apply=True).maintenance.tasks.to_json() == {
        "reconciled": 0, "recovered": 0, "cleanup_stamped": 0, "pruned": 0}


def test_small_batches_give_the_same_numbers(ledger: Ledger, clock: FrozenClock) -> None:
    for i in range(7):
        running_cli(ledger, run_id=f"r{i}")
        ledger.tasks.create(runtime="cli", task=f"done {i}", owner_key="agent:main:main", status="succeeded")
    clock.advance(timedelta(days=7))
    preview = maintenance.sweep(ledger.tasks, clock.now(), apply=False, authoritative=False, read_batch=3)
    applied = maintenance.sweep(ledger.tasks, clock.now(), apply=True, authoritative=False, read_batch=3,
                                write_batch=2)
    assert preview.counts == applied.counts
    assert applied.counts.to_json() == {"reconciled": 7, "recovered": 0, "cleanup_stamped": 0, "pruned": 7}


def test_diagnostics_of_stale_running_tasks(ledger: Ledger, clock: FrozenClock) -> None:
    acp = ledger.tasks.create(runtime="acp", task="a", owner_key="agent:main:main",
                              child_session_key="agent:main:acp:x", status="running", started_at=clock.now())
    cli = running_cli(ledger, run_id="r-stale")
    clock.advance(timedelta(minutes=30) - MS)
    assert ledger.maintenance().diagnostics["stale_running_tasks"] == []
    clock.advance(MS)
    entries = {e["task_id"]: e for e in ledger.maintenance().diagnostics["stale_running_tasks"]}
    assert entries[acp.task_id]["decision"] == "retained"
    assert entries[acp.task_id]["reason"] == "acp_runtime_not_authoritative"
    assert entries[cli]["decision"] == "would_reconcile"
    assert entries[cli]["reason"] == "backing_session_missing"
    assert entries[cli]["run_id"] == "r-stale"
    assert entries[cli]["age_ms"] == 30 * 60_000
