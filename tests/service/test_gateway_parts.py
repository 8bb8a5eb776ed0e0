"""Gateway parts on both engines: the work queue claims exactly once, the cron runtime records each run
(REFERENCE §1 identities, §6.4 run log and job state), restart-recovery tombstones, an in-process gateway."""

from __future__ import annotations

import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from flowledger import FrozenClock, InvalidInput, Ledger, TaskStatus
from flowledger.scheduler import cron, queue
from flowledger.scheduler.gateway import Gateway
from flowledger.scheduler.registry import tombstone_orphans
from flowledger.scheduler.runtimes.cron import CronRunner
from flowledger.tasks.core.clock import to_ms
from flowledger.tasks.core.states import Runtime
from flowledger.tasks.core.tables import cron_jobs, cron_run_log, gateway_leases, run_contexts
from flowledger.tasks.runs import liveness
from flowledger.tasks.sessions.events import request_heartbeat_wake

SESSION = "agent:main:main"


# --- the work queue ----------------------------------------------------------------------------------


def test_enqueue_records_a_queued_cli_task_with_its_payload(ledger: Ledger) -> None:
    task = queue.enqueue(ledger, ["echo", "a b"], label="greet", timeout=timedelta(seconds=5))
    assert task.status == TaskStatus.QUEUED and task.runtime == Runtime.CLI
    assert task.run_id == f"cli:{task.task_id}" and task.task == "echo 'a b'" and task.label == "greet"
    assert task.scope_kind.value == "system" and task.notify_policy.value == "silent"
    payload = queue.get_payload(ledger, task.task_id)
    assert payload is not None and payload.argv == ["echo", "a b"] and payload.timeout == timedelta(seconds=5)


def test_enqueue_refuses_bad_input(ledger: Ledger) -> None:
    with pytest.raises(InvalidInput):
        queue.enqueue(ledger, [])
    with pytest.raises(InvalidInput):
        queue.enqueue(ledger, ["x"], runtime="subagent")  # needs a requester session
    with pytest.raises(InvalidInput):
        queue.enqueue(ledger, ["x"], runtime="cron")


def test_claim_is_exactly_once_and_registers_the_run(ledger: Ledger, clock: FrozenClock) -> None:
    task = queue.enqueue(ledger, ["true"])
    [(claimed, payload)] = queue.claim(ledger, "gw-a", 5)
    assert claimed.task_id == task.task_id and claimed.status == TaskStatus.RUNNING
    assert payload.claimed_by is None or payload.claimed_by == "gw-a"
    assert queue.claim(ledger, "gw-b", 5) == []
    assert queue.get_payload(ledger, task.task_id).claimed_by == "gw-a"  # type: ignore[union-attr]
    with ledger.db.read() as conn:
        owner = conn.execute(select(run_contexts.c.gateway_id).where(run_contexts.c.run_id == task.run_id)).scalar()
    assert owner == "gw-a"


def test_concurrent_claimers_never_share_a_task(ledger: Ledger) -> None:
    ids = {queue.enqueue(ledger, ["true"]).task_id for _ in range(40)}
    got: dict[str, list[str]] = {}
    lock = threading.Lock()

    def claimer(name: str) -> None:
        while True:
            batch = queue.claim(ledger, name, 3)
            if not batch:
                return
            with lock:
                got.setdefault(name, []).extend(t.task_id for t, _ in batch)

    threads = [threading.Thread(target=claimer, args=(f"gw-{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    claimed = [tid for tids in got.values() for tid in tids]
    assert sorted(claimed) == sorted(ids)


def test_claim_skips_queued_tasks_without_a_payload(ledger: Ledger) -> None:
    ledger.tasks.create(runtime="cli", task="recorded elsewhere", owner_key=SESSION, run_id="r-1")
    assert queue.claim(ledger, "gw-a", 5) == []


# --- the cron runtime --------------------------------------------------------------------------------


def _job(ledger: Ledger, argv: list[str], **kwargs: object) -> cron.CronJob:
    return cron.add_job(ledger, "nightly", argv, every=timedelta(seconds=1), **kwargs)  # type: ignore[arg-type]


def test_a_cron_run_is_a_system_cron_task_with_run_log_and_job_state(ledger: Ledger, clock: FrozenClock) -> None:
    job = _job(ledger, ["sh", "-c", "echo report ready"])
    task = CronRunner(ledger, "gw-a").run_job(job.job_id)
    assert task is not None and task.status == TaskStatus.SUCCEEDED
    assert task.run_id == f"cron:{job.job_id}:{to_ms(clock.now())}" and task.source_id == job.job_id
    assert task.scope_kind.value == "system" and task.notify_policy.value == "silent"
    assert task.delivery_status.value == "not_applicable" and task.requester_session_key == ""
    assert task.child_session_key == f"agent:main:cron:{job.job_id}:run:{to_ms(clock.now())}"
    assert task.terminal_summary == "report ready"
    with ledger.db.read() as conn:
        [entry] = conn.execute(select(cron_run_log)).all()
        state = conn.execute(select(cron_jobs).where(cron_jobs.c.job_id == job.job_id)).one()
        assert conn.execute(select(run_contexts)).first() is None
    assert entry.action == "finished" and entry.status == "ok" and entry.run_at == clock.now()
    assert entry.duration_ms is not None and entry.duration_ms >= 0
    assert state.running_at is None and state.last_run_at == clock.now() and state.last_status == "ok"
    assert [t.task_id for t in cron.job_runs(ledger, job)] == [task.task_id]


def test_isolated_runs_register_a_cron_run_session(ledger: Ledger) -> None:
    job = _job(ledger, ["true"], isolated=True)
    task = CronRunner(ledger, "gw-a").run_job(job.job_id)
    assert task is not None and task.child_session_key is not None
    prefix = f"agent:main:cron:{job.job_id}:run:"
    assert task.child_session_key.startswith(prefix) and len(task.child_session_key) == len(prefix) + 36
    with ledger.db.read() as conn:
        session = liveness.get_session(conn, task.child_session_key)
    assert session is not None and session.kind == "cron"


def test_a_failing_cron_run_records_error(ledger: Ledger) -> None:
    job = _job(ledger, ["sh", "-c", "echo boom >&2; exit 2"])
    task = CronRunner(ledger, "gw-a").run_job(job.job_id)
    assert task is not None and task.status == TaskStatus.FAILED and task.error == "exit code 2: boom"
    got = cron.get_job(ledger, job.job_id)
    assert got is not None and got.last_status == "error" and got.last_error == "exit code 2: boom"


def test_a_cron_run_over_its_timeout_is_timed_out_with_the_reference_text(ledger: Ledger) -> None:
    job = _job(ledger, ["sleep", "30"])
    runner = CronRunner(ledger, "gw-a", timeout=timedelta(milliseconds=200), kill_grace=timedelta(milliseconds=200))
    task = runner.run_job(job.job_id)
    assert task is not None and task.status == TaskStatus.TIMED_OUT and task.error == cron.TIMED_OUT_ERROR
    with ledger.db.read() as conn:
        [entry] = conn.execute(select(cron_run_log)).all()
    assert entry.status == "error" and entry.error == cron.TIMED_OUT_ERROR
    # Durable recovery reads the same run log: maintenance agrees with what the runtime recorded.
    ledger.maintenance(apply=True)
    assert ledger.tasks.require(task.task_id).status == TaskStatus.TIMED_OUT


def test_a_cron_task_can_be_cancelled_through_the_gateway_adapter(ledger: Ledger) -> None:
    job = _job(ledger, ["sleep", "30"])
    runner = CronRunner(ledger, "gw-a", kill_grace=timedelta(milliseconds=200))
    ledger.tasks.cancel_adapters[Runtime.CRON] = runner
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(runner.run_job(job.job_id)))
    worker.start()
    deadline = time.monotonic() + 10
    while not runner.active_run_ids():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    [run_id] = runner.active_run_ids()
    assert runner.is_job_active(job.job_id)
    with ledger.db.read() as conn:
        assert conn.execute(select(cron_jobs.c.running_at)).scalar() is not None  # durable "running since"
    cancel = ledger.tasks.cancel(run_id, "stop the nightly")
    assert cancel.cancelled
    worker.join(15)
    task = ledger.tasks.require(run_id)
    assert task.status == TaskStatus.CANCELLED and task.error == "stop the nightly"
    assert not runner.is_job_active(job.job_id)


def test_cancelling_a_cron_task_nobody_runs_is_recorded_in_the_registry(ledger: Ledger, clock: FrozenClock) -> None:
    """Reference bug 61610: a cron task whose runner is gone can still be cancelled."""
    ledger.tasks.cancel_adapters[Runtime.CRON] = CronRunner(ledger, "gw-a")
    task = ledger.tasks.create(runtime="cron", task="orphan", scope_kind="system", run_id="cron:j1:1000",
                               source_id="j1", status="running", started_at=clock.now())
    result = ledger.tasks.cancel(task.task_id)
    assert result.cancelled and result.task is not None and result.task.status == TaskStatus.CANCELLED


# --- restart recovery and the gateway ----------------------------------------------------------------


def _subagent(ledger: Ledger, clock: FrozenClock, key: str, gateway_id: str) -> str:
    task = ledger.tasks.create(runtime="subagent", task="t", owner_key=SESSION, child_session_key=key,
                               run_id=f"run-{key}", status="running", started_at=clock.now())
    now = clock.now()
    ledger.db.transact(lambda conn: liveness.upsert_session(conn, key, now, kind="subagent", gateway_id=gateway_id))
    return task.task_id


def test_children_of_a_gone_gateway_get_a_restart_recovery_tombstone(ledger: Ledger, clock: FrozenClock) -> None:
    now = clock.now()
    ledger.db.transact(lambda conn: liveness.renew_lease(conn, "gw-alive", now))
    ledger.db.transact(lambda conn: liveness.renew_lease(conn, "gw-dead", now - timedelta(minutes=3)))
    dead = _subagent(ledger, clock, "agent:main:subagent:dead", "gw-dead")
    _subagent(ledger, clock, "agent:main:subagent:alive", "gw-alive")
    assert tombstone_orphans(ledger, "gw-me") == 1
    with ledger.db.read() as conn:
        assert liveness.get_session(conn, "agent:main:subagent:alive").tombstone is None  # type: ignore[union-attr]
        assert "restart recovery" in (liveness.get_session(conn, "agent:main:subagent:dead").tombstone or "")  # type: ignore[union-attr]
    clock.advance(timedelta(minutes=5))  # the lost grace, at its boundary
    ledger.maintenance(apply=True)
    assert ledger.tasks.require(dead).status == TaskStatus.LOST


def test_an_in_process_gateway_holds_a_lease_and_releases_it(ledger: Ledger, clock: FrozenClock) -> None:
    gateway = Gateway(ledger, gateway_id="gw-test")
    gateway.start()
    try:
        assert ledger.tasks.cancel_adapters[Runtime.CLI] is gateway.cli
        assert ledger.tasks.cancel_adapters[Runtime.CRON] is gateway.cron
        with ledger.db.read() as conn:
            assert liveness.lease_is_fresh(conn, "gw-test", clock.now())
        task = queue.enqueue(ledger, [sys.executable, "-c", "print('hi')"])
        deadline = time.monotonic() + 15
        while ledger.tasks.require(task.task_id).status != TaskStatus.SUCCEEDED:
            assert time.monotonic() < deadline, ledger.tasks.require(task.task_id)
            time.sleep(0.05)
    finally:
        gateway.stop()
    with ledger.db.read() as conn:
        assert not liveness.lease_is_fresh(conn, "gw-test", clock.now())
        assert conn.execute(select(gateway_leases.c.stopped_at)).scalar() is not None


def test_the_gateway_loads_added_and_drops_removed_cron_jobs(ledger: Ledger) -> None:
    gateway = Gateway(ledger, gateway_id="gw-test")
    job = cron.add_job(ledger, "tick", ["true"], every=timedelta(seconds=1))
    other = cron.add_job(ledger, "daily", ["true"], schedule="0 3 * * *", tz="Europe/Paris")
    gateway.sync_cron_jobs()
    assert {j.id for j in gateway.scheduler.get_jobs()} == {f"cron:{job.job_id}", f"cron:{other.job_id}"}
    cron.remove_job(ledger, "tick")
    gateway.sync_cron_jobs()
    assert {j.id for j in gateway.scheduler.get_jobs()} == {f"cron:{other.job_id}"}
    gateway.leader.release()


def test_the_gateway_fires_heartbeat_wakes_through_the_configured_hook(ledger: Ledger, tmp_path: Path,
                                                                      database_url: str) -> None:
    woke = tmp_path / "woke.txt"
    ledger.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ledger.state_dir / "config.toml").write_text(
        f'[heartbeat]\ncommand = ["sh", "-c", "echo $FLOWLEDGER_SESSION_KEY >> {woke}"]\n')
    with Ledger.open(state_dir=ledger.state_dir, database_url=database_url, clock=ledger.clock) as configured:
        now = configured.clock.now()
        configured.db.transact(lambda conn: request_heartbeat_wake(conn, SESSION, "task-done", now))
        gateway = Gateway(configured, gateway_id="gw-test")
        gateway.fire_wakes()
        gateway.fire_wakes()  # a wake fires once
        gateway.leader.release()
    assert woke.read_text() == f"{SESSION}\n"


def test_a_dead_gateways_cron_job_stops_counting_as_running(ledger: Ledger, clock: FrozenClock) -> None:
    """Otherwise an authoritative sweep would keep that job's task backed forever."""
    live_job = cron.add_job(ledger, "live", ["true"], every=timedelta(minutes=1))
    dead_job = cron.add_job(ledger, "dead", ["true"], every=timedelta(minutes=1))
    now = clock.now()

    def setup(conn: object) -> None:
        liveness.renew_lease(conn, "gw-alive", now)  # type: ignore[arg-type]
        liveness.renew_lease(conn, "gw-dead", now - timedelta(minutes=3))  # type: ignore[arg-type]
        for job, gateway in ((live_job, "gw-alive"), (dead_job, "gw-dead")):
            conn.execute(cron_jobs.update().where(cron_jobs.c.job_id == job.job_id)  # type: ignore[attr-defined]
                         .values(running_at=now))
            liveness.register_run(conn, cron.run_id_for(job.job_id, now), gateway, now)  # type: ignore[arg-type]

    ledger.db.transact(setup)
    assert ledger.runs.cron.release_stale_running() == [dead_job.job_id]
    assert cron.get_job(ledger, "live").running_at == now  # type: ignore[union-attr]
    assert cron.get_job(ledger, "dead").running_at is None  # type: ignore[union-attr]
