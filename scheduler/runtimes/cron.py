"""The `cron` runtime: one execution of a cron job, recorded as a `cron` task (system scope, silent).

The runner keeps the in-memory set of active runs, which only a gateway is authoritative for; the durable
side is the run context (while running), `cron_jobs.running_at`, then the run-log entry and job state written
before the task turns terminal, so a crash in between is repaired by durable cron recovery.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flowledger.flows import resources
from flowledger.flows.ledger import Ledger
from flowledger.scheduler import cron
from flowledger.scheduler.logs import log_dir, log_paths, open_log, tail
from flowledger.scheduler.runtimes import orphans
from flowledger.scheduler.runtimes.base import SHUTDOWN_REASON
from flowledger.scheduler.runtimes.launch import LaunchFailedError
from flowledger.scheduler.runtimes.orphans import RUN_MARKER
from flowledger.scheduler.runtimes.process import Stopper, exit_text, spawn, start_error, supervise
from flowledger.tasks.core.clock import to_ms
from flowledger.tasks.core.errors import FlowledgerError
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.service import CANCELLED_BY_OPERATOR
from flowledger.tasks.core.states import NotifyPolicy, Runtime, ScopeKind, TaskStatus
from flowledger.tasks.runs import cron_followup

log = logging.getLogger(__name__)
DEFAULT_TIMEOUT = cron.DEFAULT_TIMEOUT
CHECK_CANCEL_EVERY_S = 0.2
# An isolated run waits for its sub-agents at least this long (the reference's 30 s floor), polling every 0.5 s.
FOLLOWUP_MIN_S = 30.0
FOLLOWUP_POLL_S = 0.5


@dataclass
class _Active:
    task: Task
    stopper: Stopper | None = None
    cancel_text: str | None = None
    cancelled: bool = False


class CronRunner:
    def __init__(self, ledger: Ledger, gateway_id: str, *, kill_grace: timedelta = timedelta(seconds=5),
                 timeout: timedelta = DEFAULT_TIMEOUT, timer: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 cleanup_timeout: timedelta = timedelta(seconds=resources.CLEANUP_TIMEOUT_S)) -> None:
        """`timeout` applies to jobs without their own; `timer` measures it and `sleep` paces the wait for an
        isolated run's sub-agents (tests drive both by hand)."""
        self.ledger = ledger
        self.gateway_id = gateway_id
        self.kill_grace = kill_grace
        self.timeout = timeout
        self.timer = timer
        self.sleep = sleep
        self.cleanup_timeout = cleanup_timeout
        # The thread releasing each ended isolated run's tracked resources (flows/resources.py), by run id.
        self.releases: dict[str, threading.Thread] = {}
        self._active: dict[str, _Active] = {}  # run id -> active run
        self._lock = threading.Lock()

    def is_job_active(self, job_id: str) -> bool:
        with self._lock:
            return any(a.task.source_id == job_id for a in self._active.values())

    def active_run_ids(self) -> set[str]:
        with self._lock:
            return set(self._active)

    def run_job(self, job_id: str) -> Task | None:
        """Execute one run of `job_id` to its end (called from an APScheduler worker thread)."""
        job = cron.get_job(self.ledger, job_id)
        if job is None:
            return None
        started = self.ledger.clock.now()
        run_id = cron.run_id_for(job.job_id, started)
        if job.isolated:
            child = cron.isolated_session_key(job.agent_id, job.job_id)
        else:
            child = cron.main_session_child_key(job.agent_id, job.job_id, started)

        self.ledger.runs.cron.begin_run(job.job_id, run_id, self.gateway_id, started, agent_id=job.agent_id,
                                        isolated_session=child if job.isolated else None)
        task = self.ledger.tasks.create(
            runtime=Runtime.CRON, task=job.describe(), label=job.name, run_id=run_id, source_id=job.job_id,
            scope_kind=ScopeKind.SYSTEM, child_session_key=child, agent_id=job.agent_id, status=TaskStatus.RUNNING,
            started_at=started, notify_policy=NotifyPolicy.SILENT, task_kind="cron-job",
        )
        active = _Active(task=task)
        with self._lock:
            self._active[run_id] = active
        log.info("task %s cron job %s (%s) started run %s", task.task_id, job.name, job.job_id, run_id)
        try:
            self._execute(job, task, active)
        finally:
            with self._lock:
                self._active.pop(run_id, None)
            self.ledger.runs.release_run(run_id)
        return self.ledger.tasks.get(task.task_id)

    def _execute(self, job: cron.CronJob, task: Task, active: _Active) -> None:
        assert task.run_id is not None
        out_path, err_path = log_paths(self.ledger.state_dir, task.task_id)
        log_dir(self.ledger.state_dir)
        t0 = self.timer()
        timed_out = False
        with open_log(out_path) as out_fh, open_log(err_path) as err_fh:
            try:
                proc = spawn(job.argv, shell=False, cwd=None, stdout=out_fh, stderr=err_fh, env={
                    "FLOWLEDGER_TASK_ID": task.task_id, RUN_MARKER: task.run_id,
                    "FLOWLEDGER_CRON_JOB": job.name, "FLOWLEDGER_SESSION_KEY": task.child_session_key or ""})
                code: int | None = None
            except OSError as exc:
                proc = None
                code = 127
                err_fh.write(f"{start_error(job.argv, None, exc)}\n".encode())
            if proc is not None:
                self._record_pid(job, task, proc.pid)
                active.stopper = Stopper(proc, self.kill_grace.total_seconds())
                if active.cancelled:
                    active.stopper.request()
                deadline = t0 + (job.timeout if job.timeout is not None else self.timeout).total_seconds()

                def stopped(why: str) -> None:  # a recorded cancel decides over a timeout (see _finish)
                    nonlocal timed_out
                    if why == "timeout":
                        timed_out = True
                    else:
                        active.cancelled = True

                code = supervise(proc, active.stopper, on_stop=stopped, expired=lambda: self.timer() >= deadline,
                                 cancelled=lambda: self._cancelled_in_db(task.task_id))
        assert code is not None
        summary = tail(out_path, max_lines=1)[:500] or None
        if job.isolated and code == 0 and not timed_out and not active.cancelled:
            budget = (job.timeout if job.timeout is not None else self.timeout).total_seconds()
            summary = self._await_followup(task, summary, deadline=max(t0 + budget, self.timer() + FOLLOWUP_MIN_S))
        duration_ms = int((self.timer() - t0) * 1000)
        self._finish(job, task, active, code, timed_out, duration_ms, summary)

    def _await_followup(self, task: Task, initial: str | None, *, deadline: float) -> str | None:
        """An isolated run that spawned sub-agents (or says it did) waits for them, then takes their follow-up as
        its result instead of a stale acknowledgement (tasks/runs/cron_followup.py)."""
        key, since = task.child_session_key, task.started_at
        if not key or since is None:
            return initial

        def read() -> list[Task]:
            return self.ledger.runs.cron.spawned_by_run(key, since)

        try:
            spawned = read()
            waited = cron_followup.active_count(spawned) > 0 or cron_followup.expects_followup(initial)
            if waited:
                log.info("task %s: isolated cron run waits for %d sub-agent(s)", task.task_id,
                         cron_followup.active_count(spawned))
            while cron_followup.active_count(spawned) and self.timer() < deadline:
                self.sleep(FOLLOWUP_POLL_S)
                spawned = read()
        except FlowledgerError:
            log.exception("task %s: could not read the run's sub-agents", task.task_id)
            return initial
        return cron_followup.settle(initial, spawned, waited=waited)

    def _record_pid(self, job: cron.CronJob, task: Task, pid: int) -> None:
        """The child's pid in the run context, so a later gateway can stop it should this one die
        (scheduler/runtimes/orphans.py); best effort, like the cli runtime's."""
        assert task.run_id is not None and task.started_at is not None
        with contextlib.suppress(FlowledgerError):
            self.ledger.runs.register_run(task.run_id, self.gateway_id, task_id=task.task_id, pid=pid)
        log.info("task %s cron job %s started pid %s", task.task_id, job.name, pid)

    def _cancelled_in_db(self, task_id: str) -> bool:
        return self.ledger.runs.is_cancelled(task_id)

    def _finish(self, job: cron.CronJob, task: Task, active: _Active, code: int, timed_out: bool,
                duration_ms: int, summary: str | None) -> None:
        assert task.run_id is not None and task.started_at is not None
        _, err_path = log_paths(self.ledger.state_dir, task.task_id)
        if active.cancelled:
            status, error = "error", active.cancel_text or CANCELLED_BY_OPERATOR
        elif timed_out:
            status, error = "error", cron.TIMED_OUT_ERROR
        elif code == 0:
            status, error = "ok", None
        else:
            err_tail = tail(err_path)
            status, error = "error", exit_text(code) + (f": {err_tail}" if err_tail else "")
        started_at = task.started_at
        self.ledger.runs.cron.record_end(job.job_id, started_at, status=status, error=error, summary=summary,
                                         duration_ms=duration_ms)
        if job.isolated and task.child_session_key:
            self.ledger.runs.update_session(task.child_session_key)
        if active.cancelled:
            self.ledger.tasks.fail(task.run_id, error=error, status=TaskStatus.CANCELLED, runtime=Runtime.CRON)
        elif timed_out:
            self.ledger.tasks.fail(task.run_id, error=error, status=TaskStatus.TIMED_OUT, runtime=Runtime.CRON)
        elif status == "ok":
            self.ledger.tasks.complete(task.run_id, summary=summary, runtime=Runtime.CRON)
        else:
            self.ledger.tasks.fail(task.run_id, error=error, runtime=Runtime.CRON)
        log.info("task %s cron job %s finished %s in %d ms (run %s, started %d)", task.task_id, job.name, status,
                 duration_ms, task.run_id, to_ms(started_at))
        if job.isolated:  # after the terminal status: a hanging cleanup must not delay or mask it
            released = resources.finish_session(self.ledger, task.child_session_key,
                                                timeout_s=self.cleanup_timeout.total_seconds())
            if released is not None:
                with self._lock:
                    self.releases[task.run_id] = released

    # --- CancelAdapter for Runtime.CRON -------------------------------------------------------------

    def cancel(self, task: Task, reason: str | None) -> str | None:
        """Stop the run if this gateway runs it; otherwise the registry records the cancel (whichever
        gateway runs it sees the cancelled status and stops it; a run nobody owns just ends)."""
        with self._lock:
            active = self._active.get(task.run_id or "")
        if active is not None:
            active.cancelled = True
            active.cancel_text = reason
            if active.stopper is not None:
                active.stopper.request()
        return None

    def start(self, task: Task, argv: list[str], *, shell: bool = False, timeout: timedelta | None = None,
              cwd: str | None = None, env: dict[str, str] | None = None, inherit_env: bool = True,
              **options: Any) -> None:
        """A cron run starts from its job's schedule (`run_job`), never from a queued task or a flow step."""
        raise LaunchFailedError("cron runs start from their job's schedule (flowledger cron add), not as queued work")

    def running_count(self) -> int:
        with self._lock:
            return len(self._active)

    def wait(self, task_id: str, timeout: float | None = None) -> Task | None:
        """The task once its run ended here (None on timeout); the stored task at once if it is not running."""
        deadline = time.monotonic() + timeout if timeout is not None else None
        while any(a.task.task_id == task_id for a in self._snapshot()):
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(0.05)
        return self.ledger.tasks.get(task_id)

    def _snapshot(self) -> list[_Active]:
        with self._lock:
            return list(self._active.values())

    def stop_orphan(self, run_id: str) -> bool:
        """Stop `run_id`'s process left behind by a dead supervisor, when provably that run (orphans.py)."""
        return orphans.stop_orphan(self.ledger, run_id)

    def shutdown(self, reason: str = SHUTDOWN_REASON) -> None:
        """Stop every active run and wait (up to the grace and a margin) until each has been recorded."""
        with self._lock:
            actives = list(self._active.values())
        for active in actives:
            self.cancel(active.task, reason)
        deadline = time.monotonic() + self.kill_grace.total_seconds() + 5
        while self.active_run_ids() and time.monotonic() < deadline:
            time.sleep(0.05)
