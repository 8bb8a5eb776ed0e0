"""End to end, on both engines: a SIGKILLed gateway leaves its `cli` child running (it has its own process
group); a second gateway on the same host kills it once the dead gateway's lease has expired (the testing
knobs shrink the lease to 1.5 s), but leaves alone a process that sits on a recorded pid without the run's
FLOWLEDGER_RUN_ID marker (a reused pid). The task is then judged as before: lost after the grace."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from gateway_support import GatewayProc, cli, wait_for
from sqlalchemy import select

from flowledger import FrozenClock, Ledger, TaskStatus
from flowledger.scheduler.runtimes.orphans import RUN_MARKER, proc_stat
from flowledger.tasks.core.clock import SystemClock
from flowledger.tasks.core.tables import run_contexts
from flowledger.tasks.runs import liveness

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    state = tmp_path / "state"
    if request.param == "sqlite":
        return state, f"sqlite:///{state / 'tasks' / 'runs.sqlite'}"
    return state, str(request.getfixturevalue("clean_pg"))


@pytest.fixture
def decoy() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process: what a recorded pid may have become once the kernel reused it."""
    env = {k: v for k, v in os.environ.items() if k != RUN_MARKER}
    proc = subprocess.Popen(["sleep", "300"], env=env, start_new_session=True)
    yield proc
    proc.kill()
    proc.wait(10)


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan reparented to an init that does not reap stays one)."""
    fields = proc_stat(pid)
    return fields is not None and fields[0] != "Z"


def test_a_second_gateway_kills_the_orphans_of_a_killed_one_but_not_a_reused_pid(
        store: tuple[Path, str], gateways: Callable[..., GatewayProc], decoy: subprocess.Popen[bytes]) -> None:
    state, url = store
    first = gateways(state, url)
    started = cli(state, url, "run", "--detach", "--json", "--", "sleep", "300")
    assert started.returncode == 0, started.stderr
    task_id = json.loads(started.stdout)["task_id"]
    run_id = f"cli:{task_id}"
    with Ledger.open(state_dir=state, database_url=url) as ledger:
        def context() -> tuple[str, int] | None:
            with ledger.db.read() as conn:
                row = conn.execute(select(run_contexts.c.gateway_id, run_contexts.c.pid)
                                   .where(run_contexts.c.run_id == run_id)).first()
            return (row[0], row[1]) if row is not None and row[1] else None

        dead_gateway, orphan = wait_for(context, 20, what="the child to start")
        now = SystemClock().now()
        ledger.db.transact(lambda conn: liveness.register_run(conn, "cli:reused-pid", dead_gateway, now,
                                                              pid=decoy.pid))
        try:
            first.kill()
            assert _running(orphan)  # the gateway's death alone does not stop its child
            second = gateways(state, url)
            wait_for(lambda: not _running(orphan), 20, what="the orphan to be killed")

            def contexts_left() -> set[str]:
                with ledger.db.read() as conn:
                    return {r[0] for r in conn.execute(select(run_contexts.c.run_id))}

            # The reaper kills first and then drops each handled run context in a transaction of its own.
            wait_for(lambda: {run_id, "cli:reused-pid"}.isdisjoint(contexts_left()), 20,
                     what="the handled run contexts to be dropped")
            assert decoy.poll() is None and _running(decoy.pid)
            assert "killed the orphaned process group" in second.log()
            assert ledger.tasks.require(task_id).status == TaskStatus.RUNNING  # still inside the grace
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(orphan, signal.SIGKILL)
    later = FrozenClock(SystemClock().now() + timedelta(minutes=5, seconds=1))
    with Ledger.open(state_dir=state, database_url=url, clock=later) as ledger:
        ledger.maintenance(apply=True)
        assert ledger.tasks.require(task_id).status == TaskStatus.LOST
