"""The processes of a run on this host, by the marker every runtime gives its child (Linux `/proc`).

Below the scheduler so that both the runtimes' orphan handling (scheduler/runtimes/orphans.py) and a session's
resource cleanup (flows/resources.py) prove a pid is still the run's before they signal it.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

# Every runtime starts its child with this variable set to the run id; the child's own children inherit it.
RUN_MARKER = "FLOWLEDGER_RUN_ID"
PROC = Path("/proc")


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
