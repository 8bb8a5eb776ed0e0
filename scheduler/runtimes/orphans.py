"""Orphans: the children of a runtime whose supervising process died, found and stopped.

The `cli`, `cron` and `subagent` runtimes start each child in a session of its own, so a SIGKILLed gateway (or
in-process `flowledger run`) leaves them running with no one to record how they end. Two callers stop them:

- `stop_orphan(ledger, run_id)`, the runtimes' `stop_orphan` capability, which the flow controller uses when it
  adopts a flow whose driver died (docs/flows.md, "If the driver dies"): before it fails and retries a step it
  stops the old attempt, so that attempt's work cannot land after (or alongside) the retry's;
- `reap_orphans(ledger)`, which every gateway runs at start and on the sweep's cadence for the runs of every
  gateway whose lease expired.

Only a process this host can prove is that run is stopped: the run's gateway lease names this host, and a live
member of the process group the recorded pid led carries the run id the runtime gave it (`FLOWLEDGER_RUN_ID`)
in its environment (Linux `/proc`). Anything else (another host, a reused pid, no /proc) is left alone, and the
reaper leaves alone the children of a gateway whose process is still alive here (it merely failed to renew).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from datetime import datetime, timedelta

from flowledger.flows.ledger import Ledger
from flowledger.flows.processes import PROC, RUN_MARKER, carries_marker, kill_run, proc_stat
from flowledger.tasks.core.clock import from_ms
from flowledger.tasks.core.errors import FlowledgerError

# The run marker and the /proc checks live below the scheduler (flows/processes.py, which a session's resource
# cleanup uses too); the runtimes take them from here.
__all__ = ["PROC", "RUN_MARKER", "carries_marker", "kill_run", "on_this_host", "orphan_pid", "proc_stat",
           "reap_orphans", "stop_orphan"]

log = logging.getLogger(__name__)


def on_this_host(host: str | None, gateway_id: str, hostname: str | None = None) -> bool:
    """Whether a lease belongs to this host: by the host it records, else by the host part of its gateway id."""
    here = hostname or socket.gethostname()
    if host:
        return host == here
    short = here.split(".")[0][:20]
    return bool(short) and f"-{short}-" in gateway_id


def orphan_pid(ledger: Ledger, run_id: str) -> int | None:
    """The pid recorded for `run_id` if it was started on this host, else None."""
    owner = ledger.runs.run_owner(run_id)
    if owner is None or not owner.pid or not on_this_host(owner.host, owner.gateway_id):
        return None
    return owner.pid


def stop_orphan(ledger: Ledger, run_id: str) -> bool:
    """Stop the orphaned process group of `run_id` on this host; True when one was stopped."""
    pid = orphan_pid(ledger, run_id)
    if pid is None or not kill_run(pid, run_id):
        return False
    log.info("run %s: stopped orphaned process group %s", run_id, pid)
    return True


# /proc's boot time has whole-second precision and a gateway writes its lease a moment after it starts.
_START_SLACK = timedelta(seconds=2)


def reap_orphans(ledger: Ledger, *, hostname: str | None = None) -> list[str]:
    """Kill the process groups of this host's runs whose gateway is gone; the run ids whose process was
    killed. Every handled run context is deleted (one transaction each)."""
    candidates = [o for o in ledger.runs.expired_runs() if on_this_host(o.host, o.gateway_id, hostname)]
    if not candidates:
        return []
    if not (PROC / "self" / "environ").exists():
        for orphan in candidates:
            log.warning("task %s: pid %s of run %s may have outlived gateway %s; not stopped (no /proc on this "
                        "system to prove the pid still runs it)", orphan.task_id, orphan.pid, orphan.run_id,
                        orphan.gateway_id)
        return []
    killed: list[str] = []
    for orphan in candidates:
        if orphan.owner_pid > 0 and orphan.owner_pid != os.getpid() and _same_process_alive(
                orphan.owner_pid, orphan.owner_started_at):
            log.info("run %s: gateway %s (pid %s) is still alive on this host; its children are left alone",
                     orphan.run_id, orphan.gateway_id, orphan.owner_pid)
            continue
        if kill_run(orphan.pid, orphan.run_id):
            killed.append(orphan.run_id)
            log.info("task %s: killed the orphaned process group %s of run %s (gateway %s is gone)",
                     orphan.task_id, orphan.pid, orphan.run_id, orphan.gateway_id)
        else:
            log.info("task %s: pid %s no longer runs %s; nothing to kill", orphan.task_id, orphan.pid,
                     orphan.run_id)
        with contextlib.suppress(FlowledgerError):
            ledger.runs.forget_orphan(orphan)
    return killed


def _same_process_alive(pid: int, started_before: datetime) -> bool:
    """Whether `pid` is alive and started before `started_before` (so the pid was not reused since)."""
    fields = proc_stat(pid)
    if fields is None or fields[0] == "Z":
        return False
    try:
        boot = next(int(line.split()[1]) for line in (PROC / "stat").read_text().splitlines()
                    if line.startswith("btime "))
        started = from_ms(boot * 1000 + int(fields[19]) * 1000 // os.sysconf("SC_CLK_TCK"))
    except (OSError, StopIteration, ValueError, IndexError):
        return True  # cannot tell: leave its children alone rather than kill a live gateway's work
    return started <= started_before + _START_SLACK
