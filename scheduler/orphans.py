"""Orphans of a dead gateway: the `cli`, `cron` and `subagent` children it started outlive a SIGKILL (each
runs in its own process group), so whichever gateway next sees its lease expired stops them.

A run context whose gateway lease has expired names the child's pid. The pid is only trusted while it still
belongs to that run: every runtime starts its child with `FLOWLEDGER_RUN_ID=<run id>` in the environment,
which its own children inherit, and the group is killed only when a member of the group the child led
carries that marker (Linux `/proc`; elsewhere nothing is killed and the limit is logged). Only leases
recorded on this host are acted on, and not while the lease's own gateway process is still alive here (a
gateway that merely failed to renew). The handled run context is then deleted; the task itself is judged as
before (lost after the grace, or cron recovery).
"""

from __future__ import annotations

import contextlib
import logging
import os
from datetime import datetime, timedelta

from flowledger.flows.ledger import Ledger
from flowledger.flows.orphans import PROC, kill_run, on_this_host, proc_stat
from flowledger.tasks.clock import from_ms
from flowledger.tasks.errors import FlowledgerError

log = logging.getLogger(__name__)
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
