"""Orphans of a dead gateway on both engines, with real processes: a run context whose gateway lease expired
has its process group killed only when the pid still carries the run's FLOWLEDGER_RUN_ID marker, only on
the lease's host, only from the lease's expiry on, and never while that gateway's own process is alive."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from ledger_helpers import wait_until_started
from sqlalchemy import select

from flowledger import FrozenClock, Ledger
from flowledger.scheduler.runtimes.orphans import RUN_MARKER, proc_stat, reap_orphans
from flowledger.scheduler.runtimes.process import spawn
from flowledger.tasks.core.clock import SystemClock
from flowledger.tasks.core.tables import run_contexts
from flowledger.tasks.runs import liveness

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
TTL = timedelta(minutes=2)
HOST = socket.gethostname()


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _start(procs: list[subprocess.Popen[bytes]], argv: list[str], run_id: str | None) -> subprocess.Popen[bytes]:
    """A child in its own group, as the runtimes start them; `run_id` None: no marker (a reused pid)."""
    env = {k: v for k, v in os.environ.items() if k != RUN_MARKER}
    if run_id is not None:
        env[RUN_MARKER] = run_id
    proc = subprocess.Popen(argv, env=env, start_new_session=True, stdout=subprocess.PIPE)
    procs.append(proc)
    wait_until_started(proc.pid)
    return proc


def _owned_by(ledger: Ledger, gateway_id: str, run_id: str, pid: int, *, host: str = HOST,
              owner_pid: int = 0) -> None:
    now = ledger.clock.now()
    ledger.db.transact(lambda conn: liveness.renew_lease(conn, gateway_id, now, host=host, pid=owner_pid, ttl=TTL))
    ledger.db.transact(lambda conn: liveness.register_run(conn, run_id, gateway_id, now, task_id="t-" + run_id,
                                                          pid=pid))


def _contexts(ledger: Ledger) -> set[str]:
    with ledger.db.read() as conn:
        return {r[0] for r in conn.execute(select(run_contexts.c.run_id))}


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan reparented to an init that does not reap stays one)."""
    fields = proc_stat(pid)
    return fields is not None and fields[0] != "Z"


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while _running(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def test_the_group_is_killed_from_the_lease_expiry_on(ledger: Ledger, clock: FrozenClock,
                                                      procs: list[subprocess.Popen[bytes]]) -> None:
    child = _start(procs, ["sleep", "300"], "cli:a")
    _owned_by(ledger, "gw-dead", "cli:a", child.pid)
    clock.advance(TTL - timedelta(milliseconds=1))  # the lease is still fresh
    assert reap_orphans(ledger) == []
    assert child.poll() is None and _contexts(ledger) == {"cli:a"}
    clock.advance(timedelta(milliseconds=1))  # expires_at == now: expired
    assert reap_orphans(ledger) == ["cli:a"]
    assert child.wait(10) == -signal.SIGKILL
    assert _contexts(ledger) == set()  # handled once; the task itself is judged as before
    assert reap_orphans(ledger) == []


def test_a_reused_pid_without_the_marker_is_not_killed(ledger: Ledger, clock: FrozenClock,
                                                       procs: list[subprocess.Popen[bytes]]) -> None:
    stranger = _start(procs, ["sleep", "300"], None)
    other_run = _start(procs, ["sleep", "300"], "cli:someone-else")
    _owned_by(ledger, "gw-dead", "cli:a", stranger.pid)
    _owned_by(ledger, "gw-dead", "cli:b", other_run.pid)
    clock.advance(TTL)
    assert reap_orphans(ledger) == []
    assert stranger.poll() is None and other_run.poll() is None
    assert _contexts(ledger) == set()  # neither pid runs its run any more: nothing left to do for them


def test_a_group_whose_leader_exited_is_still_killed(ledger: Ledger, clock: FrozenClock,
                                                     procs: list[subprocess.Popen[bytes]]) -> None:
    leader = _start(procs, ["sh", "-c", "sleep 300 & echo $!"], "cron:j:1")
    assert leader.stdout is not None
    worker = int(leader.stdout.readline())
    assert leader.wait(10) == 0  # the pid in the run context is gone; its group lives on in `sleep`
    _owned_by(ledger, "gw-dead", "cron:j:1", leader.pid)
    clock.advance(TTL)
    assert reap_orphans(ledger) == ["cron:j:1"]
    assert _gone(worker)


def test_only_this_hosts_runs_are_touched(ledger: Ledger, clock: FrozenClock,
                                          procs: list[subprocess.Popen[bytes]]) -> None:
    elsewhere = _start(procs, ["sleep", "300"], "cli:far")
    unrecorded = _start(procs, ["sleep", "300"], "cli:near")
    _owned_by(ledger, "gw-far", "cli:far", elsewhere.pid, host="some-other-host")
    # A lease without a host: the gateway id's host part decides.
    _owned_by(ledger, f"gw-{HOST.split('.')[0][:20]}-42-abcdef01", "cli:near", unrecorded.pid, host="")
    clock.advance(TTL)
    assert reap_orphans(ledger) == ["cli:near"]
    assert elsewhere.poll() is None and unrecorded.wait(10) == -signal.SIGKILL
    assert _contexts(ledger) == {"cli:far"}  # left for a gateway on its own host


def test_children_of_a_gateway_whose_process_still_lives_are_left_alone(
        ledger: Ledger, clock: FrozenClock, procs: list[subprocess.Popen[bytes]]) -> None:
    owner = _start(procs, ["sleep", "300"], None)  # stands in for a gateway that stopped renewing
    child = _start(procs, ["sleep", "300"], "cli:a")
    clock.set(SystemClock().now())  # the lease starts after its gateway process did
    _owned_by(ledger, "gw-stalled", "cli:a", child.pid, owner_pid=owner.pid)
    clock.advance(TTL)
    assert reap_orphans(ledger) == []
    assert child.poll() is None and _contexts(ledger) == {"cli:a"}
    owner.kill()
    owner.wait(10)
    assert reap_orphans(ledger) == ["cli:a"]
    assert child.wait(10) == -signal.SIGKILL


def test_runtimes_start_children_with_the_run_marker(procs: list[subprocess.Popen[bytes]]) -> None:
    proc = spawn(["sleep", "300"], shell=False, cwd=None, env={RUN_MARKER: "cli:x"}, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL)
    procs.append(proc)
    wait_until_started(proc.pid)
    assert f"{RUN_MARKER}=cli:x".encode() in Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
    assert os.getpgid(proc.pid) == proc.pid  # its own group, which is what gets killed
