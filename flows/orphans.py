"""Stop a step process whose supervising gateway died (docs/flows.md, "If the driver dies").

The cli runtime starts each step in a session of its own, so a SIGKILLed gateway leaves its step processes
running with no one to record how they end. Before an adopting controller fails such a step and retries it,
it stops the orphan: otherwise the old attempt's work could land after (or alongside) the retry's. (A gateway
also reaps orphans, but at its start and on the sweep's cadence; an adopter retries at once, so it cannot wait.)

Only a process this host can prove is that run is stopped: the run's gateway lease names this host, the pid
recorded in the run's context leads its own process group, and its environment carries the run id the
runtime gave it (`FLOWLEDGER_RUN_ID`). Anything else (another host, a reused pid, no /proc) is left alone.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from pathlib import Path

from sqlalchemy import Connection, select

from flowledger.tasks.tables import gateway_leases, run_contexts

log = logging.getLogger(__name__)


def orphan_pid(conn: Connection, run_id: str) -> int | None:
    """The pid recorded for `run_id` if it was started on this host, else None."""
    row = conn.execute(
        select(run_contexts.c.pid, gateway_leases.c.host)
        .select_from(run_contexts.join(gateway_leases, gateway_leases.c.gateway_id == run_contexts.c.gateway_id))
        .where(run_contexts.c.run_id == run_id)
    ).first()
    if row is None or not row.pid or row.host != socket.gethostname():
        return None
    return int(row.pid)


def is_run_process(pid: int, run_id: str) -> bool:
    """Whether `pid` is, right now, the group leader the runtime started for `run_id`."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        leads_group = os.getpgid(pid) == pid
    except OSError:  # gone, not ours, or no /proc on this platform
        return False
    return leads_group and f"FLOWLEDGER_RUN_ID={run_id}".encode() in environ


def stop_orphan(conn: Connection, run_id: str) -> bool:
    """SIGKILL the orphaned process group of `run_id`; True when one was stopped. SIGKILL, not SIGTERM: no
    supervisor is left to wait out a grace, and the retry must not overlap a process still shutting down."""
    pid = orphan_pid(conn, run_id)
    if pid is None or not is_run_process(pid, run_id):
        return False
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # it ended (or changed hands) since the check
        return False
    log.info("run %s: stopped orphaned process group %s", run_id, pid)
    return True
