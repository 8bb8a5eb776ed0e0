"""Stop a step process whose supervising gateway died (docs/flows.md, "If the driver dies").

The cli runtime starts each step in a session of its own, so a SIGKILLed gateway leaves its step processes
running with no one to record how they end. Before an adopting controller fails such a step and retries it,
it stops the orphan: otherwise the old attempt's work could land after (or alongside) the retry's. (A gateway
also reaps orphans, but at its start and on the sweep's cadence; an adopter retries at once, so it cannot wait.)

Only a process this host can prove is that run is stopped: the run's gateway lease names this host, and a live
member of the process group the recorded pid led carries the run id the runtime gave it (`FLOWLEDGER_RUN_ID`)
in its environment. Anything else (another host, a reused pid, no /proc) is left alone. The marker check and
the kill here are also what the gateway's reaper (scheduler/orphans.py) uses.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
from pathlib import Path

from sqlalchemy import Connection, select

from flowledger.tasks.tables import gateway_leases, run_contexts

log = logging.getLogger(__name__)
# Every runtime starts its child with this variable set to the run id; the child's own children inherit it.
RUN_MARKER = "FLOWLEDGER_RUN_ID"
PROC = Path("/proc")


def on_this_host(host: str | None, gateway_id: str, hostname: str | None = None) -> bool:
    """Whether a lease belongs to this host: by the host it records, else by the host part of its gateway id."""
    here = hostname or socket.gethostname()
    if host:
        return host == here
    short = here.split(".")[0][:20]
    return bool(short) and f"-{short}-" in gateway_id


def orphan_pid(conn: Connection, run_id: str) -> int | None:
    """The pid recorded for `run_id` if it was started on this host, else None."""
    row = conn.execute(
        select(run_contexts.c.pid, gateway_leases.c.host, gateway_leases.c.gateway_id)
        .select_from(run_contexts.join(gateway_leases, gateway_leases.c.gateway_id == run_contexts.c.gateway_id))
        .where(run_contexts.c.run_id == run_id)
    ).first()
    if row is None or not row.pid or not on_this_host(row.host, row.gateway_id):
        return None
    return int(row.pid)


def carries_marker(pid: int, run_id: str) -> bool:
    """Whether the process's environment holds FLOWLEDGER_RUN_ID=<run_id>. A zombie's reads empty; another
    user's process cannot be read and is not ours to kill."""
    try:
        environ = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return False
    return f"{RUN_MARKER}={run_id}".encode() in environ.split(b"\0")


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), None when gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = proc_stat(int(entry.name))
            if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


def kill_run(pid: int, run_id: str) -> bool:
    """SIGKILL the group `pid` led when one of its live members carries the run's marker (the leader may have
    exited while its children run on); a pid that left the group is killed alone. True when a kill was sent.
    SIGKILL, not SIGTERM: no supervisor is left to wait out a grace, and a retry must not overlap a process
    still shutting down."""
    if any(carries_marker(member, run_id) for member in _group_members(pid)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
            return True
    if carries_marker(pid, run_id):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            return True
    return False


def stop_orphan(conn: Connection, run_id: str) -> bool:
    """Stop the orphaned process group of `run_id` on this host; True when one was stopped."""
    pid = orphan_pid(conn, run_id)
    if pid is None or not kill_run(pid, run_id):
        return False
    log.info("run %s: stopped orphaned process group %s", run_id, pid)
    return True
