"""End to end: a real gateway process on a temporary state dir runs a `run` task, a 1-second cron job, a
subagent and an ACP task to the right status; SIGTERM stops it cleanly; kill -9 + restart loses no record
and leaves nothing running forever; two gateways on one PostgreSQL database share 200 tasks, none run twice."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from gateway_support import ACP_AGENT, GatewayProc, cli, wait_for
from sqlalchemy import select

from flowledger import FrozenClock, Ledger, TaskStatus
from flowledger.scheduler import queue
from flowledger.tasks.core.clock import SystemClock
from flowledger.tasks.core.states import is_terminal
from flowledger.tasks.core.tables import gateway_leases, run_contexts, task_events, task_payloads
from flowledger.tasks.runs import liveness

SESSION = "agent:main:main"


def _sqlite(tmp_path: Path) -> tuple[Path, str]:
    state = tmp_path / "state"
    return state, f"sqlite:///{state / 'tasks' / 'runs.sqlite'}"


def _terminal(ledger: Ledger, task_id: str) -> Callable[[], object]:
    def check() -> object:
        task = ledger.tasks.get(task_id)
        return task if task is not None and is_terminal(task.status) else None

    return check


def test_gateway_runs_every_runtime_and_stops_cleanly(tmp_path: Path,
                                                      gateways: Callable[..., GatewayProc]) -> None:
    state, url = _sqlite(tmp_path)
    gw = gateways(state, url)
    done = cli(state, url, "run", "--json", "--label", "hello", "--", "sh", "-c", "echo hi; echo warn >&2")
    assert done.returncode == 0, done.stderr
    task = json.loads(done.stdout)
    assert task["status"] == "succeeded" and task["runtime"] == "cli" and task["label"] == "hello"
    with Ledger.open(state_dir=state, database_url=url) as ledger:
        payload = queue.get_payload(ledger, task["task_id"])
        assert payload is not None and payload.claimed_by is not None and payload.claimed_by.startswith("gw-")
        logs = cli(state, url, "tasks", "logs", task["task_id"])
        assert logs.stdout == "hi\n" and "warn" in logs.stderr

        added = cli(state, url, "cron", "add", "--name", "tick", "--every", "1s", "--isolated", "--json", "--",
                    "sh", "-c", "echo tock")
        assert added.returncode == 0, added.stderr
        job_id = json.loads(added.stdout)["job_id"]

        def cron_runs() -> list[dict[str, object]]:
            out = cli(state, url, "cron", "runs", "tick", "--json")
            runs = json.loads(out.stdout)["runs"]
            return [r for r in runs if r["status"] == "succeeded"]

        runs = wait_for(cron_runs, 20, 0.3, "a succeeded cron run")
        run = runs[0]
        assert run["runtime"] == "cron" and run["source_id"] == job_id and run["scope_kind"] == "system"
        assert run["notify_policy"] == "silent" and run["delivery_status"] == "not_applicable"
        assert run["run_id"].startswith(f"cron:{job_id}:")
        assert run["child_session_key"].startswith(f"agent:main:cron:{job_id}:run:")
        assert cli(state, url, "cron", "remove", "tick").returncode == 0

        sub = queue.enqueue(ledger, [sys.executable, "-c", "print('PROGRESS: half way'); print('all done')"],
                            runtime="subagent", session_key=SESSION, task_text="count things")
        callable_sub = queue.enqueue(ledger, ["json:dumps"], runtime="subagent", session_key=SESSION,
                                     task_text="quote me")
        acp = queue.enqueue(ledger, ACP_AGENT, runtime="acp", session_key=SESSION, task_text="hello agent")
        refused = queue.enqueue(ledger, ACP_AGENT, runtime="acp", session_key=SESSION, task_text="refuse it")
        finished = {t.task_id: wait_for(_terminal(ledger, t.task_id), 30, what=t.task)
                    for t in (sub, callable_sub, acp, refused)}
        assert finished[sub.task_id].status == TaskStatus.SUCCEEDED
        assert finished[sub.task_id].progress_summary == "half way"
        assert finished[sub.task_id].terminal_summary == "all done"
        assert finished[callable_sub.task_id].terminal_summary == '"quote me"'
        assert finished[acp.task_id].status == TaskStatus.SUCCEEDED
        assert finished[acp.task_id].terminal_summary == "echo: hello agent"
        assert finished[refused.task_id].status == TaskStatus.FAILED

        # A cancel from another process: the registry records it, the gateway stops the child.
        long = cli(state, url, "run", "--detach", "--json", "--", "sleep", "30")
        long_id = json.loads(long.stdout)["task_id"]
        wait_for(lambda: ledger.tasks.require(long_id).status == TaskStatus.RUNNING, 20, what="running")
        cancelled = cli(state, url, "tasks", "cancel", long_id)
        assert cancelled.returncode == 0 and cancelled.stdout.startswith(f"Cancelled {long_id} (cli)")
        wait_for(lambda: _no_run_context(ledger, f"cli:{long_id}"), 20, what="child stopped")
        assert ledger.tasks.require(long_id).status == TaskStatus.CANCELLED

        assert gw.stop() == 0
        with ledger.db.read() as conn:
            leases = conn.execute(select(gateway_leases.c.gateway_id, gateway_leases.c.stopped_at)).all()
        assert [lease for lease in leases if lease[0].startswith("gw-") and lease[1] is None] == []
    assert "gateway ready" in gw.log()


def _no_run_context(ledger: Ledger, run_id: str) -> bool:
    with ledger.db.read() as conn:
        return conn.execute(select(run_contexts.c.run_id).where(run_contexts.c.run_id == run_id)).first() is None


def test_kill_9_then_restart_loses_no_record_and_nothing_runs_forever(
        tmp_path: Path, gateways: Callable[..., GatewayProc]) -> None:
    state, url = _sqlite(tmp_path)
    first = gateways(state, url)
    with Ledger.open(state_dir=state, database_url=url) as ledger:
        cmd = queue.enqueue(ledger, ["sleep", "30"])
        sub = queue.enqueue(ledger, ["sleep", "30"], runtime="subagent", session_key=SESSION, task_text="nap")
        def child_pids() -> list[int]:  # both children spawned (not merely claimed)
            with ledger.db.read() as conn:
                pids = [r[0] for r in conn.execute(select(run_contexts.c.pid)) if r[0]]
            return pids if len(pids) == 2 else []

        pids = wait_for(child_pids, 20, what="children started")
        first.kill()
        later = queue.enqueue(ledger, ["sh", "-c", "echo after"])  # recorded while no gateway runs
        try:
            gateways(state, url)
            assert wait_for(_terminal(ledger, later.task_id), 30).status == TaskStatus.SUCCEEDED

            # The dead gateway's lease runs out, so its runs stop counting as live for every process ...
            wait_for(lambda: not _live(ledger, cmd.run_id or ""), 20, what="lease expiry")
            # ... and the restarted gateway tombstones the subagent child it cannot resume.
            wait_for(lambda: _tombstoned(ledger, sub.child_session_key or ""), 20, what="tombstone")
            for t in (cmd, sub):
                assert ledger.tasks.require(t.task_id).status == TaskStatus.RUNNING  # still inside the grace
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    # Past the 5-minute grace, maintenance (any process) marks both lost: nothing stays running forever.
    later_clock = FrozenClock(SystemClock().now() + timedelta(minutes=5, seconds=1))
    with Ledger.open(state_dir=state, database_url=url, clock=later_clock) as ledger:
        ledger.maintenance(apply=True)
        lost = ledger.tasks.require(cmd.task_id)
        wedged = ledger.tasks.require(sub.task_id)
        assert lost.status == TaskStatus.LOST and lost.error == "backing session missing"
        assert wedged.status == TaskStatus.LOST and "restart recovery" in (wedged.error or "")
        assert len(ledger.tasks.list()) == 3


def _live(ledger: Ledger, run_id: str) -> bool:
    with ledger.db.read() as conn:
        return liveness.run_is_live(conn, run_id, SystemClock().now())


def _tombstoned(ledger: Ledger, key: str) -> bool:
    with ledger.db.read() as conn:
        session = liveness.get_session(conn, key)
    return session is not None and session.tombstone is not None


def test_two_gateways_on_postgres_share_200_tasks_none_twice(
        tmp_path: Path, clean_pg: str, gateways: Callable[..., GatewayProc]) -> None:
    ran = tmp_path / "ran.txt"
    gw_a = gateways(tmp_path / "a" / "state", clean_pg, env={"FLOWLEDGER_MAX_PARALLEL_RUNS": "6"})
    gw_b = gateways(tmp_path / "b" / "state", clean_pg, env={"FLOWLEDGER_MAX_PARALLEL_RUNS": "6"})
    with Ledger.open(state_dir=tmp_path / "c" / "state", database_url=clean_pg) as ledger:
        ids = [queue.enqueue(ledger, ["sh", "-c", f'echo "$FLOWLEDGER_TASK_ID" >> {ran}']).task_id
               for _ in range(200)]

        def all_done() -> bool:
            return all(is_terminal(t.status) for t in ledger.tasks.list(runtime="cli"))

        wait_for(all_done, 60, 0.2, "200 tasks terminal")
        tasks = ledger.tasks.list(runtime="cli")
        assert len(tasks) == 200 and {t.status for t in tasks} == {TaskStatus.SUCCEEDED}
        lines = ran.read_text().split()
        assert sorted(lines) == sorted(ids)  # each ran exactly once
        with ledger.db.read() as conn:
            owners = [r[0] for r in conn.execute(select(task_payloads.c.claimed_by))]
            running_events = conn.execute(select(task_events.c.task_id).where(task_events.c.kind == "running")).all()
        assert len(running_events) == 200 and len({r[0] for r in running_events}) == 200
        assert len(set(owners)) == 2, "both gateways claimed work"
    assert gw_a.stop() == 0 and gw_b.stop() == 0
