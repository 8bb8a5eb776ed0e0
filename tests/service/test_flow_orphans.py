"""scheduler.runtimes.orphans.stop_orphan (the runtimes' capability): an adopting controller stops a dead
driver's step process only when this host can prove the recorded pid still runs that step (its lease names this
host, the pid leads its group, its environment carries the run id). Real processes, real run contexts on both
engines."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterator

import pytest
from ledger_helpers import wait_until_started
from sqlalchemy import Connection

from flowledger import FrozenClock, Ledger
from flowledger.scheduler.runtimes.orphans import stop_orphan
from flowledger.tasks.runs import liveness


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def test_only_a_process_proven_to_run_the_step_is_stopped(ledger: Ledger, clock: FrozenClock,
                                                          spawned: list[subprocess.Popen[bytes]]) -> None:
    def step_process(run_id: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["sleep", "60"], start_new_session=True,
                                env={**os.environ, "FLOWLEDGER_RUN_ID": run_id})
        spawned.append(proc)
        wait_until_started(proc.pid)
        return proc

    orphan = step_process("flow:f:b:1")
    reused = step_process("flow:f:other:1")  # a pid recorded for one run that now runs something else
    remote = step_process("flow:f:c:1")  # recorded under a lease of another host: its pid means nothing here
    now = clock.now()

    def record(conn: Connection) -> None:
        liveness.renew_lease(conn, "gw-dead", now, host=socket.gethostname())
        liveness.renew_lease(conn, "gw-far", now, host="another-host")
        liveness.register_run(conn, "flow:f:b:1", "gw-dead", now, pid=orphan.pid)
        liveness.register_run(conn, "flow:f:x:1", "gw-dead", now, pid=reused.pid)
        liveness.register_run(conn, "flow:f:c:1", "gw-far", now, pid=remote.pid)
        liveness.register_run(conn, "flow:f:d:1", "gw-dead", now)  # no pid yet

    ledger.db.transact(record)
    assert [stop_orphan(ledger, run) for run in ("flow:f:x:1", "flow:f:c:1", "flow:f:d:1", "flow:f:none:1")] \
        == [False, False, False, False]
    assert reused.poll() is None and remote.poll() is None and orphan.poll() is None
    assert stop_orphan(ledger, "flow:f:b:1")
    assert orphan.wait(5) == -signal.SIGKILL
    assert reused.poll() is None and remote.poll() is None
