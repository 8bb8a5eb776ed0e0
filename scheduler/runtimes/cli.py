"""The `cli` runtime: a task owns a child process (CONTRACT §5b).

Exit 0 → succeeded; non-zero → failed (`exit code N` and the tail of stderr); over its timeout →
timed_out; cancelled — by `cancel()` or by the task turning `cancelled` in the database, e.g. a
`flowledger tasks cancel` from another process — SIGTERM, then SIGKILL after the grace → cancelled.
Each run holds a durable run context under a gateway id; without a gateway (an in-process
`flowledger run`), the runtime holds a short-lived lease of its own so every process sees the run as live.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import IO, Any

from flowledger.flows.ledger import Ledger
from flowledger.scheduler.lease import LeaseKeeper, new_gateway_id
from flowledger.scheduler.logs import log_paths, tail
from flowledger.scheduler.runtimes import orphans
from flowledger.scheduler.runtimes.base import SHUTDOWN_REASON
from flowledger.scheduler.runtimes.launch import check_launchable, refuse_options
from flowledger.scheduler.runtimes.orphans import RUN_MARKER
from flowledger.scheduler.runtimes.process import (
    Stopper,
    exit_text,
    open_logs_or_fail,
    spawn,
    start_error,
    supervise,
    wait_for_end,
)
from flowledger.tasks.core.durations import format_duration
from flowledger.tasks.core.errors import FlowledgerError, InvalidInputError, StorageUnavailableError
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.service import CANCELLED_BY_OPERATOR
from flowledger.tasks.core.states import Runtime, TaskStatus

log = logging.getLogger(__name__)
WATCH_EVERY_S = 0.2
# How long a claimed run's thread waits for its child to end before recording the pid (see _supervise).
PID_AFTER_S = 0.02


@dataclass
class _Run:
    task: Task
    run_id: str
    proc: subprocess.Popen[bytes]
    stopper: Stopper
    deadline: float | None
    files: list[IO[Any]]
    done: threading.Event = field(default_factory=threading.Event)
    stop_reason: str | None = None  # "cancel" | "timeout" | "shutdown"
    cancel_text: str | None = None
    failure: FlowledgerError | None = None  # why its end could not be recorded as it happened


class CliRuntime:
    def __init__(self, ledger: Ledger, *, gateway_id: str | None = None,
                 kill_grace: timedelta = timedelta(seconds=5), on_finish: Callable[[], None] | None = None) -> None:
        self.ledger = ledger
        self.kill_grace = kill_grace
        self.on_finish = on_finish  # e.g. wake the gateway's queue loop: a slot is free
        self._lease: LeaseKeeper | None = None
        self.gateway_id = gateway_id or new_gateway_id("run")
        self._own_lease = gateway_id is None
        self._runs: dict[str, _Run] = {}
        self._launching: dict[str, threading.Event] = {}  # claimed runs whose child is being started
        self._stopping = False
        self._stopping_reason = SHUTDOWN_REASON
        self._finished: dict[str, threading.Event] = {}
        self._failures: dict[str, FlowledgerError] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._watcher: threading.Thread | None = None

    # --- starting -----------------------------------------------------------------------------------

    def start(self, task: Task, argv: list[str], *, shell: bool = False, timeout: timedelta | None = None,
              cwd: str | None = None, env: dict[str, str] | None = None, inherit_env: bool = True,
              claimed: bool = False, **options: Any) -> None:
        """Start argv for `task` and return at once; a thread supervises the child to its end. Raises
        LaunchFailedError, having recorded nothing, when the program or the directory is not there.

        `claimed`: `task` is what this runtime's own queue claim returned (tasks/runs/queue.py): that one
        transaction already made it `running` and registered its run context under this gateway, so the two
        transactions that would do it again are skipped (the pid is still recorded once the child runs). Its
        log files are opened and its child started on the run's own thread after this returns: a failure there
        is recorded on the task (`failed`, as on the caller's thread before) and its run context released."""
        if not argv:
            raise InvalidInputError(f"Task {task.task_id} has nothing to run.")
        refuse_options("cli", options)
        check_launchable(argv, shell=shell, cwd=cwd, env=env, inherit_env=inherit_env)
        if claimed and (task.status != TaskStatus.RUNNING or task.run_id is None):
            raise InvalidInputError(f"Task {task.task_id} is {task.status.value}: not a claimed run.")
        run_id = task.run_id or self._assign_run_id(task)
        self.ensure_backing()
        if claimed:
            self._launch_claimed(task, run_id, argv, shell=shell, timeout=timeout, cwd=cwd, env=env,
                                 inherit_env=inherit_env)
            return
        out_fh, err_fh = self._open_logs(task, run_id)
        try:
            self.ledger.runs.register_run(run_id, self.gateway_id, task_id=task.task_id)
            self.ledger.tasks.start(run_id, runtime=Runtime.CLI)
        except BaseException:
            out_fh.close()
            err_fh.close()
            raise
        run = self._spawn(task, run_id, argv, shell=shell, timeout=timeout, cwd=cwd, env=env,
                          inherit_env=inherit_env, files=(out_fh, err_fh))
        if run is None:
            self._finished.setdefault(task.task_id, threading.Event()).set()
            return
        self._record_pid(run)
        threading.Thread(target=self._supervise, args=(run, timeout, False), name=f"cli-{task.task_id[:8]}",
                         daemon=True).start()

    def _launch_claimed(self, task: Task, run_id: str, argv: list[str], **how: Any) -> None:
        """A claimed run is launched on its own thread: the gateway's single queue loop only claims and hands
        over, so it claims the next free slot's task while this one's log files are opened and its child is
        forked (both were on the queue loop's serial path: half its profile samples with instant commands). The run
        counts as running from here (`running_count`), so the queue loop never claims past its limit; a
        shutdown that begins meanwhile stops the child as soon as it is started (`_spawn`)."""
        done = threading.Event()
        with self._lock:
            self._launching[task.task_id] = done
            self._finished[task.task_id] = done
        threading.Thread(target=self._run_claimed, args=(task, run_id, argv, how, done),
                         name=f"cli-{task.task_id[:8]}", daemon=True).start()

    def _run_claimed(self, task: Task, run_id: str, argv: list[str], how: dict[str, Any],
                     done: threading.Event) -> None:
        run: _Run | None = None
        try:
            files = open_logs_or_fail(self.ledger, task, run_id, Runtime.CLI)  # failing, it records the failure
            run = self._spawn(task, run_id, argv, files=files, done=done, **how)
        except FlowledgerError as exc:  # what the queue loop did when this ran on it (Gateway._launch)
            log.warning("task %s could not start: %s", task.task_id, exc.message)
            self._release(run_id)  # the claim registered the run; nothing runs it
            with contextlib.suppress(FlowledgerError):
                self.ledger.tasks.fail(run_id, error=exc.message, runtime=Runtime.CLI)
        finally:
            if run is None:  # never started: the slot is free again (before `wait` returns)
                with self._lock:
                    self._launching.pop(task.task_id, None)
                done.set()
                if self.on_finish is not None:
                    self.on_finish()
        if run is not None:
            self._supervise(run, how["timeout"], True)

    def _spawn(self, task: Task, run_id: str, argv: list[str], *, shell: bool, timeout: timedelta | None,
               cwd: str | None, env: dict[str, str] | None, inherit_env: bool, files: tuple[IO[Any], IO[Any]],
               done: threading.Event | None = None) -> _Run | None:
        """Start the child of a run recorded running and register it here; None (its failure recorded, its run
        context released) when it could not start."""
        out_fh, err_fh = files
        extra = {"FLOWLEDGER_TASK_ID": task.task_id, RUN_MARKER: run_id, **(env or {})}
        try:
            proc = spawn(argv, shell=shell, cwd=cwd, env=extra, stdout=out_fh, stderr=err_fh,
                         inherit_env=inherit_env)
        except OSError as exc:
            out_fh.close()
            err_fh.close()
            log.info("task %s could not start %r: %s", task.task_id, argv[0], exc)
            self.ledger.tasks.fail(run_id, error=start_error(argv, cwd, exc), runtime=Runtime.CLI)
            self._release(run_id)
            return None
        deadline = time.monotonic() + timeout.total_seconds() if timeout is not None else None
        run = _Run(task=task, run_id=run_id, proc=proc, stopper=Stopper(proc, self.kill_grace.total_seconds()),
                   deadline=deadline, files=[out_fh, err_fh], done=done or threading.Event())
        with self._lock:
            self._launching.pop(task.task_id, None)
            self._runs[task.task_id] = run
            self._finished[task.task_id] = run.done
            stopping = self._stopping
        if stopping:  # the gateway began to shut down while this child was being started
            self._stop(task.task_id, "shutdown", self._stopping_reason)
        log.info("task %s started pid %s run %s", task.task_id, proc.pid, run_id)
        return run

    def _open_logs(self, task: Task, run_id: str) -> tuple[IO[Any], IO[Any]]:
        try:
            return open_logs_or_fail(self.ledger, task, run_id, Runtime.CLI)
        except StorageUnavailableError:
            self._finished.setdefault(task.task_id, threading.Event()).set()
            raise

    def _assign_run_id(self, task: Task) -> str:
        run_id = f"cli:{task.task_id}"
        self.ledger.runs.assign_run_id(task, run_id)
        return run_id

    def ensure_backing(self) -> None:
        with self._lock:
            if self._own_lease and self._lease is None:
                self._lease = LeaseKeeper(self.ledger, self.gateway_id)
                self._lease.start()
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._watch, name="cli-watcher", daemon=True)
                self._watcher.start()

    # --- supervising --------------------------------------------------------------------------------

    def _record_pid(self, run: _Run) -> None:
        with contextlib.suppress(FlowledgerError):
            self.ledger.runs.register_run(run.run_id, self.gateway_id, task_id=run.task.task_id, pid=run.proc.pid)

    def _supervise(self, run: _Run, timeout: timedelta | None, claimed: bool) -> None:
        def stopped(why: str) -> None:
            run.stop_reason = run.stop_reason or why  # the first reason decides (a cancel beats a later timeout)

        deadline = run.deadline
        if claimed and not _ended_within(run.proc, PID_AFTER_S):
            # A claimed run's pid goes into its run context here, on the run's own thread, rather than in
            # start(): the gateway's queue loop launches the next claimed task meanwhile instead of waiting on
            # this write. The context exists since the claim; the pid only lets a later gateway reap the child
            # if this one dies, and it is still recorded before the run's end is. A child that already ended
            # (an instant command) leaves nothing to reap: its pid is not written at all.
            self._record_pid(run)
        try:
            # Cancels recorded elsewhere reach every run at once through the watcher thread (one read for all).
            code = supervise(run.proc, run.stopper, on_stop=stopped,
                             expired=None if deadline is None else lambda: time.monotonic() >= deadline)
            for fh in run.files:
                with contextlib.suppress(OSError):  # a full disk fails the last flush: the child has ended anyway
                    fh.close()
            self._record_end(run, code, timeout)
        except Exception as exc:  # the record must still end; one line here, the details at debug level
            log.debug("task %s supervision failed", run.task.task_id, exc_info=True)
            run.failure = exc if isinstance(exc, FlowledgerError) else StorageUnavailableError(
                f"Storage unavailable: task {run.task.task_id} could not be recorded: {type(exc).__name__}")
            # A full disk: a checkpoint lets the next write reuse the WAL from its start instead of growing it,
            # so the task can still end `failed` rather than wait for the lost grace.
            self.ledger.runs.checkpoint_quietly()
            with contextlib.suppress(FlowledgerError):
                self.ledger.tasks.fail(run.run_id, error=f"cli runtime error: {run.failure.message}",
                                       runtime=Runtime.CLI)
            with self._lock:
                self._failures[run.task.task_id] = run.failure
        finally:
            self._release(run.run_id)
            with self._lock:
                self._runs.pop(run.task.task_id, None)
            run.done.set()
            if self.on_finish is not None:
                self.on_finish()

    def _record_end(self, run: _Run, code: int, timeout: timedelta | None) -> None:
        tid = run.task.task_id
        if run.stop_reason == "timeout":
            limit = format_duration(timeout) if timeout is not None else "its timeout"
            self.ledger.tasks.fail(run.run_id, error=f"timed out after {limit}", status=TaskStatus.TIMED_OUT,
                                   runtime=Runtime.CLI)
            log.info("task %s timed out", tid)
        elif run.stop_reason in ("cancel", "shutdown"):
            self.ledger.tasks.fail(run.run_id, error=run.cancel_text or CANCELLED_BY_OPERATOR,
                                   status=TaskStatus.CANCELLED, runtime=Runtime.CLI)
            log.info("task %s cancelled (%s)", tid, exit_text(code))
        elif code == 0:
            out_path, _ = log_paths(self.ledger.state_dir, tid)
            last = tail(out_path, max_lines=1)
            self.ledger.tasks.complete(run.run_id, summary=last[:500] or None, runtime=Runtime.CLI)
            log.info("task %s succeeded", tid)
        else:
            _, err_path = log_paths(self.ledger.state_dir, tid)
            stderr_tail = tail(err_path)
            error = exit_text(code) + (f": {stderr_tail}" if stderr_tail else "")
            self.ledger.tasks.fail(run.run_id, error=error, runtime=Runtime.CLI)
            log.info("task %s failed: %s", tid, exit_text(code))

    def _watch(self) -> None:
        """Notice cancellations recorded by other processes and stop those children."""
        while not self._closed.wait(WATCH_EVERY_S):
            with self._lock:
                ids = list(self._runs)
            if not ids:
                continue
            for task_id in self.ledger.runs.cancelled_among(ids):
                self._stop(task_id, "cancel", None)

    def _stop(self, task_id: str, why: str, text: str | None) -> bool:
        with self._lock:
            run = self._runs.get(task_id)
        if run is None:
            return False
        if run.stop_reason is None:
            run.stop_reason = why
            run.cancel_text = text
        run.stopper.request()
        return True

    def forget(self, run_id: str) -> None:
        """Drop the run context of a run that never started (its claim registered it)."""
        self._release(run_id)

    def _release(self, run_id: str) -> None:
        self.ledger.runs.release_run(run_id)

    # --- control ------------------------------------------------------------------------------------

    def cancel(self, task: Task, reason: str | None) -> str | None:
        """CancelAdapter: stop our child if we run it; otherwise let the registry record the cancel (a
        gateway that runs it notices and stops it)."""
        self._stop(task.task_id, "cancel", reason)
        return None

    def stop_orphan(self, run_id: str) -> bool:
        """Stop `run_id`'s process left behind by a dead supervisor, when provably that run (orphans.py)."""
        return orphans.stop_orphan(self.ledger, run_id)

    def owns(self, task_id: str) -> bool:
        with self._lock:
            return task_id in self._runs

    def running_count(self) -> int:
        with self._lock:
            return len(self._runs) + len(self._launching)

    def wait(self, task_id: str, timeout: float | None = None) -> Task | None:
        return wait_for_end(self.ledger, self._lock, self._finished, task_id, timeout)

    def failure(self, task_id: str) -> FlowledgerError | None:
        """Why a run's end could not be recorded as it happened (storage), else None."""
        with self._lock:
            return self._failures.get(task_id)

    def shutdown(self, reason: str = SHUTDOWN_REASON, *, wait_s: float | None = None) -> None:
        """Stop every child (SIGTERM, SIGKILL after the grace), record them cancelled, drop the lease."""
        with self._lock:
            self._stopping, self._stopping_reason = True, reason
            runs = list(self._runs.values())
            launching = list(self._launching.values())
        for run in runs:
            self._stop(run.task.task_id, "shutdown", reason)
        limit = wait_s if wait_s is not None else self.kill_grace.total_seconds() + 5
        for done in [run.done for run in runs] + launching:
            done.wait(limit)
        self._closed.set()
        if self._lease is not None:
            self._lease.stop(release=True)
            self._lease = None


def _ended_within(proc: subprocess.Popen[bytes], seconds: float) -> bool:
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return False
    return True
