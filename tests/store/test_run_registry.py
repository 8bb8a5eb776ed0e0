"""The run registry's contract (tasks/runs/), on a SQLite file and on PostgreSQL: leases and their boundary,
run contexts, cancel checks, claims that hand each queued task to exactly one claimer (also from threads at
once), child sessions, orphans and cron-run bookkeeping."""

from __future__ import annotations

import threading
from datetime import timedelta

from flowledger import FrozenClock, Ledger, TaskStatus
from flowledger.scheduler import queue
from flowledger.tasks.runs import liveness

TTL = timedelta(minutes=2)


def test_a_lease_is_fresh_until_exactly_its_ttl_and_ends_at_release(ledger: Ledger, clock: FrozenClock) -> None:
    runs = ledger.runs
    runs.renew_lease("gw-a", host="h", pid=1, ttl=TTL)
    clock.advance(TTL - timedelta(milliseconds=1))
    assert runs.fresh_gateways() == {"gw-a"}
    clock.advance(timedelta(milliseconds=1))
    assert runs.fresh_gateways() == set()
    runs.renew_lease("gw-a", host="h", pid=1, ttl=TTL)
    assert runs.fresh_gateways() == {"gw-a"}
    runs.release_lease("gw-a")
    assert runs.fresh_gateways() == set()


def test_a_run_is_live_while_registered_under_a_fresh_lease(ledger: Ledger, clock: FrozenClock) -> None:
    runs = ledger.runs
    runs.renew_lease("gw-a", host="h", pid=1, ttl=TTL)
    runs.register_run("run-1", "gw-a", task_id="t1")
    runs.register_run("run-1", "gw-a", task_id="t1", pid=4242)  # the pid, once the child exists
    with ledger.db.read() as conn:
        assert liveness.run_is_live(conn, "run-1", clock.now())
    runs.release_run("run-1")
    with ledger.db.read() as conn:
        assert not liveness.run_is_live(conn, "run-1", clock.now())
    runs.release_run("run-1")  # releasing twice is harmless


def test_expired_runs_with_a_pid_are_orphans_until_forgotten(ledger: Ledger, clock: FrozenClock) -> None:
    runs = ledger.runs
    runs.renew_lease("gw-dead", host="h", pid=1, ttl=TTL)
    runs.register_run("run-pid", "gw-dead", task_id="t1", pid=99)
    runs.register_run("run-nopid", "gw-dead", task_id="t2")
    assert runs.expired_runs() == []
    clock.advance(TTL)
    [orphan] = runs.expired_runs()
    assert (orphan.run_id, orphan.gateway_id, orphan.pid, orphan.host) == ("run-pid", "gw-dead", 99, "h")
    runs.forget_orphan(orphan)
    assert runs.expired_runs() == []


def test_cancel_checks_see_a_cancel_recorded_anywhere(ledger: Ledger) -> None:
    a = queue.enqueue(ledger, ["true"])
    b = queue.enqueue(ledger, ["true"])
    assert ledger.runs.cancelled_among([a.task_id, b.task_id]) == set()
    assert ledger.tasks.cancel(b.task_id).cancelled
    assert ledger.runs.cancelled_among([a.task_id, b.task_id]) == {b.task_id}
    assert ledger.runs.is_cancelled(b.task_id) and not ledger.runs.is_cancelled(a.task_id)
    assert ledger.runs.cancelled_among([]) == set()


def test_each_queued_task_is_claimed_once_however_many_claim_at_once(ledger: Ledger) -> None:
    made = [queue.enqueue(ledger, ["true"]).task_id for _ in range(12)]
    claims: list[list[str]] = [[] for _ in range(4)]

    def claimer(n: int) -> None:
        while True:
            got = ledger.runs.queue.claim(f"gw-{n}", 2)
            if not got:
                return
            claims[n].extend(task.task_id for task, _ in got)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    everything = [tid for got in claims for tid in got]
    assert sorted(everything) == sorted(made)  # every task once, none twice
    for n, got in enumerate(claims):
        for tid in got:
            task = ledger.tasks.require(tid)
            assert task.status == TaskStatus.RUNNING
            payload = ledger.runs.queue.payload(tid)
            assert payload is not None and payload.claimed_by == f"gw-{n}" and payload.argv == ["true"]


def test_a_child_gets_its_session_and_run_context_together(ledger: Ledger, clock: FrozenClock) -> None:
    task = queue.enqueue(ledger, ["agent"], runtime="acp", session_key="agent:main:main", task_text="hi")
    ledger.runs.renew_lease("gw-a", host="h", pid=1, ttl=TTL)
    ledger.runs.begin_child(task, "gw-a", kind="acp", mode="oneshot", acp={"state": "starting"})
    assert task.child_session_key is not None and task.run_id is not None
    with ledger.db.read() as conn:
        session = liveness.get_session(conn, task.child_session_key)
        assert liveness.run_is_live(conn, task.run_id, clock.now())
    assert session is not None and session.kind == "acp" and session.gateway_id == "gw-a"
    assert session.parent_session_key == "agent:main:main" and session.acp == {"state": "starting"}
    ledger.tasks.start(task.run_id)
    clock.advance(TTL)  # the gateway died: its child cannot be resumed
    [tombstoned] = ledger.runs.tombstone_orphans("gw-b")
    assert (tombstoned.task_id, tombstoned.session_key) == (task.task_id, task.child_session_key)
    assert ledger.runs.tombstone_orphans("gw-b") == []  # once


def test_cron_run_bookkeeping(ledger: Ledger, clock: FrozenClock) -> None:
    cron = ledger.runs.cron
    job = cron.add("job1", "nightly", ["true"], schedule=None, every=timedelta(minutes=1), tz=None,
                   isolated=False, agent_id="main", timeout=None)
    assert cron.find("nightly") == job and cron.find("job1") == job and cron.jobs() == [job]
    ledger.runs.renew_lease("gw-a", host="h", pid=1, ttl=TTL)
    started = clock.now()
    run_id = f"cron:job1:{int(started.timestamp() * 1000)}"
    cron.begin_run("job1", run_id, "gw-a", started, agent_id="main")
    assert cron.running_job_ids() == {"job1"}
    assert cron.release_stale_running() == []  # its run is live
    cron.record_end("job1", started, status="ok", error=None, summary="done", duration_ms=5)
    after = cron.find("job1")
    assert after is not None and after.running_at is None and after.last_status == "ok"
    cron.begin_run("job1", run_id, "gw-a", started, agent_id="main")
    clock.advance(TTL)  # its gateway died mid-run
    assert cron.release_stale_running() == ["job1"]
    assert cron.running_job_ids() == set()
    cron.delete("job1")
    assert cron.jobs() == []
