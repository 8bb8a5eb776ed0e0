"""Child-process plumbing shared by the runtimes: start in its own process group, stop with SIGTERM then
SIGKILL after a grace, and describe how it ended."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

from flowledger.flows.ledger import Ledger
from flowledger.scheduler.runtimes.launch import child_environment
from flowledger.tasks.models import Task


def spawn(argv: Sequence[str], *, shell: bool, cwd: str | None, env: Mapping[str, str] | None,
          stdout: IO[Any] | int, stderr: IO[Any] | int, stdin: int = subprocess.DEVNULL,
          inherit_env: bool = True) -> subprocess.Popen[bytes]:
    """Start argv (no shell unless asked) in a new session, so a stop reaches its whole process group. The
    child gets this process's environment with `env` on top, or only `env` when `inherit_env` is False."""
    merged = child_environment(env, inherit=inherit_env)
    command: Sequence[str] | str = argv[0] if shell and len(argv) == 1 else list(argv)
    if shell and not isinstance(command, str):
        command = " ".join(command)
    return subprocess.Popen(command, shell=shell, cwd=cwd, env=merged, stdout=stdout, stderr=stderr, stdin=stdin,
                            start_new_session=True)


def signal_group(proc: subprocess.Popen[Any], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(ProcessLookupError, OSError):
        proc.send_signal(sig)


class Stopper:
    """SIGTERM once asked, SIGKILL when the grace runs out; `poll()` is called from the supervising loop."""

    def __init__(self, proc: subprocess.Popen[Any], grace_s: float) -> None:
        self.proc = proc
        self.grace_s = grace_s
        self.kill_at: float | None = None

    @property
    def requested(self) -> bool:
        return self.kill_at is not None

    def request(self) -> None:
        if self.kill_at is None:
            self.kill_at = time.monotonic() + self.grace_s
            signal_group(self.proc, signal.SIGTERM)

    def poll(self) -> None:
        if self.kill_at is not None and time.monotonic() >= self.kill_at and self.proc.poll() is None:
            signal_group(self.proc, signal.SIGKILL)
            self.kill_at = float("inf")


def exit_text(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exit code {code}"


def cancelled_in_db(ledger: Ledger, task_id: str) -> bool:
    """Whether another process recorded a cancel for this task (its runtime then stops the work)."""
    return ledger.runs.is_cancelled(task_id)


def wait_for_end(ledger: Ledger, lock: threading.Lock, ends: Mapping[str, threading.Event], task_id: str,
                 timeout: float | None) -> Task | None:
    """The task as stored once its run ended here (None on timeout); a task this runtime never ran is
    returned as stored at once. Shared by every runtime's `wait`."""
    with lock:
        done = ends.get(task_id)
    if done is not None and not done.wait(timeout):
        return None
    return ledger.tasks.get(task_id)
