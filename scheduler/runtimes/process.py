"""Child-process plumbing shared by the runtimes: start in its own process group, stop with SIGTERM then
SIGKILL after a grace, and describe how it ended."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from flowledger.flows.ledger import Ledger
from flowledger.scheduler.logs import log_dir, log_paths, open_log
from flowledger.tasks.core.childenv import child_environment
from flowledger.tasks.core.errors import FlowledgerError, StorageUnavailableError
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import Runtime


def spawn(argv: Sequence[str], *, shell: bool, cwd: str | None, env: Mapping[str, str] | None,
          stdout: IO[Any] | int, stderr: IO[Any] | int, stdin: int = subprocess.DEVNULL,
          inherit_env: bool = True) -> subprocess.Popen[bytes]:
    """Start argv (no shell unless asked) in a new session, so a stop reaches its whole process group. The
    child gets this process's environment (never its FLOWLEDGER_* variables: the database URL may hold a
    password) with `env` on top, or only `env` when `inherit_env` is False (a detached flow's step)."""
    merged = child_environment(env, base=None if inherit_env else {})
    command: Sequence[str] | str = argv[0] if shell and len(argv) == 1 else list(argv)
    if shell and not isinstance(command, str):
        command = " ".join(command)
    return subprocess.Popen(command, shell=shell, cwd=cwd, env=merged, stdout=stdout, stderr=stderr, stdin=stdin,
                            start_new_session=True)


def start_error(argv: Sequence[str], cwd: str | None, exc: OSError) -> str:
    """Why a child could not start, naming what was missing: the working directory or the program (issue 12
    item 15 — a missing cwd used to read as the program not being found)."""
    if cwd is not None and (exc.filename == cwd or not os.path.isdir(cwd)):
        return f"cannot start {argv[0]!r}: working directory {cwd!r} does not exist or is not a directory"
    return f"cannot start {argv[0]!r}: {exc.strerror or exc}"


def open_logs_or_fail(ledger: Ledger, task: Task, run_id: str, runtime: Runtime) -> tuple[IO[Any], IO[Any]]:
    """The task's stdout and stderr log files, opened before it is marked running. When they cannot be (the
    logs directory is not writable, the disk is full) the task ends `failed` at once — never left running until
    the lost grace — and StorageUnavailableError says why (exit 3 from the CLI, issue 12 item 6)."""
    out_path, err_path = log_paths(ledger.state_dir, task.task_id)
    opened: list[IO[Any]] = []
    try:
        log_dir(ledger.state_dir)
        for path in (out_path, err_path):
            opened.append(open_log(path))
    except OSError as exc:
        for fh in opened:
            fh.close()
        problem = f"cannot write its output in {out_path.parent}: {exc.strerror or exc}"
        with contextlib.suppress(FlowledgerError):
            ledger.tasks.fail(run_id, error=problem, runtime=runtime)
        raise StorageUnavailableError(f"Storage unavailable: task {task.task_id} {problem}") from None
    return opened[0], opened[1]


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


CHECK_CANCEL_EVERY_S = 0.2
WAIT_SLICE_S = 0.05


def supervise(proc: subprocess.Popen[Any], stopper: Stopper, *, on_stop: Callable[[str], None],
              expired: Callable[[], bool] | None = None, cancelled: Callable[[], bool] | None = None) -> int:
    """The one supervise loop of the process-backed runtimes (cli, subagent, cron): wait for `proc` to end and
    return its exit code, stopping it (SIGTERM, SIGKILL after the grace) when `expired()` says its time is up
    or `cancelled()` (asked every CHECK_CANCEL_EVERY_S) that a cancel was recorded by any process. Each decision
    is reported once through `on_stop("timeout" | "cancel")` at the moment it is made; which one decides the
    recorded status is the runtime's rule. A stop requested elsewhere (`stopper.request()`: cancel, shutdown)
    is carried through to SIGKILL by the same loop."""
    timed_out = was_cancelled = False
    next_check = time.monotonic()
    while True:
        try:
            return proc.wait(timeout=WAIT_SLICE_S)
        except subprocess.TimeoutExpired:
            pass
        if not timed_out and expired is not None and expired():
            timed_out = True
            on_stop("timeout")
            stopper.request()
        if not was_cancelled and cancelled is not None and time.monotonic() >= next_check:
            next_check = time.monotonic() + CHECK_CANCEL_EVERY_S
            if cancelled():
                was_cancelled = True
                on_stop("cancel")
                stopper.request()
        stopper.poll()


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
