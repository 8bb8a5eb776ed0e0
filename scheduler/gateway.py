"""The gateway: the long-running process that runs background work and keeps the ledger healthy.

APScheduler (a BackgroundScheduler) pulls the triggers: the maintenance sweep every 60 s (first after 5 s,
with the catch-up of unsettled deliveries), heartbeat wakes every second, a PASSIVE WAL checkpoint every
30 min, cron-run session pruning, the cron jobs themselves and a cron reload every 2 s (so added/removed
jobs are picked up within 5 s). A lease row, renewed every 30 s, tells
every other process that the runs this gateway owns are live. A queue thread claims queued work (woken by a
submitter on this host, else every 0.25 s), and the flow
driver (flow_driver.py) drives detached graph flows, many at once, every step on the runtime it names.
Only the leader (see leader.py) sweeps and fires cron jobs; every gateway claims queued work and, at start
and on the sweep's cadence, kills this host's children of gateways whose lease expired (orphans.py).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from datetime import timedelta
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from flowledger.flows.controller import StepLauncher
from flowledger.flows.definitions import STEP_RUNTIMES
from flowledger.flows.health import MaintenanceReport
from flowledger.flows.ledger import Ledger
from flowledger.scheduler import cron, cron_control, knobs, queue
from flowledger.scheduler.flow_driver import FlowDriver
from flowledger.scheduler.lease import LeaseKeeper, new_gateway_id
from flowledger.scheduler.registry import tombstone_orphans
from flowledger.scheduler.runtimes import orphans
from flowledger.scheduler.runtimes.acp import AcpRuntime
from flowledger.scheduler.runtimes.base import RuntimeImpl
from flowledger.scheduler.runtimes.cli import CliRuntime
from flowledger.scheduler.runtimes.cron import CronRunner
from flowledger.scheduler.runtimes.subagent import SubagentRuntime
from flowledger.tasks.core.clock import SystemClock
from flowledger.tasks.core.errors import FlowledgerError
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import Runtime
from flowledger.tasks.delivery import dispatch as delivery
from flowledger.tasks.delivery.generation import generation_hooks

log = logging.getLogger(__name__)
CRON_PREFIX = "cron:"
MISFIRE_GRACE_S = 30
# How often the queue loop looks for work nobody woke it for: submissions from another host, a lost wake-up.
QUEUE_POLL_S = 0.25


class Gateway:
    def __init__(self, ledger: Ledger, *, gateway_id: str | None = None,
                 kill_grace: timedelta = timedelta(seconds=5), max_flows: int | None = None,
                 queue_poll_s: float = QUEUE_POLL_S) -> None:
        self.ledger = ledger
        self.gateway_id = gateway_id or ledger.gateway_id or new_gateway_id("gw")
        self.lease = LeaseKeeper(ledger, self.gateway_id)
        self.leader = ledger.runs.leadership()
        self._wake = threading.Event()
        self.queue_poll_s = queue_poll_s
        # A submitter on this host wakes the queue loop once its task is committed (tasks/runs/wakeup.py).
        self.wakeups = ledger.runs.queue.wake_listener(self._wake.set)
        # Writes in the gateway (its flow drivers, runtimes) never send: the notices loop does.
        delivery.defer_delivery(ledger.tasks)
        self.cli = CliRuntime(ledger, gateway_id=self.gateway_id, kill_grace=kill_grace, on_finish=self._wake.set)
        self.cron = CronRunner(ledger, self.gateway_id, kill_grace=kill_grace)
        self.subagent = SubagentRuntime(ledger, gateway_id=self.gateway_id, kill_grace=kill_grace)
        self.acp = AcpRuntime(ledger, gateway_id=self.gateway_id, kill_grace=kill_grace)
        self.runtimes: dict[Runtime, RuntimeImpl] = {Runtime.CLI: self.cli, Runtime.SUBAGENT: self.subagent,
                                                     Runtime.ACP: self.acp, Runtime.CRON: self.cron}
        # What a flow step may run on: every runtime but cron (a schedule, not a step).
        step_runtimes: dict[Runtime, StepLauncher] = {rt: self.runtimes[rt] for rt in STEP_RUNTIMES}
        self.flows = FlowDriver(ledger, step_runtimes, cap=max_flows or knobs.max_flows())
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(4), "cron": ThreadPoolExecutor(8)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": MISFIRE_GRACE_S},
            timezone="UTC",
        )
        self._cron_loaded: dict[str, tuple[Any, ...]] = {}
        self._stopping = threading.Event()
        self._queue_thread: threading.Thread | None = None
        self.sweeps = 0
        self.queue_waits = 0  # how many times the queue loop has gone to wait for a wake-up or its poll

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        # Before our own lease is renewed: a previous incarnation under the same id counts if it expired.
        self.reap_orphans()
        self.lease.start()
        self._install_runtimes()
        tombstone_orphans(self.ledger, self.gateway_id)
        self.leader.try_acquire()
        # APScheduler fires on the wall clock whatever clock the ledger reads (tests freeze that one).
        now = SystemClock().now()
        s = self.scheduler
        s.add_job(self.sweep, "interval", seconds=knobs.sweep_every().total_seconds(), id="sweep",
                  next_run_time=now + knobs.sweep_first_after())
        s.add_job(self.prune_sessions, "interval", seconds=knobs.SESSION_PRUNE_EVERY.total_seconds(),
                  id="session-prune", next_run_time=now + knobs.sweep_first_after())
        s.add_job(self.reap_orphans, "interval", seconds=knobs.sweep_every().total_seconds(), id="orphans",
                  next_run_time=now + knobs.sweep_first_after())
        s.add_job(self.fire_wakes, "interval", seconds=1, id="heartbeat-wakes")
        s.add_job(self.send_notices, "interval", seconds=1, id="notices", next_run_time=now)
        s.add_job(self.checkpoint, "interval", seconds=knobs.CHECKPOINT_EVERY.total_seconds(), id="checkpoint")
        s.add_job(self.sync_cron_jobs, "interval", seconds=knobs.CRON_RELOAD_EVERY.total_seconds(), id="cron-sync",
                  next_run_time=now)
        s.start()
        self.wakeups.start()
        self._queue_thread = threading.Thread(target=self._queue_loop, name="queue", daemon=True)
        self._queue_thread.start()
        self.flows.start()
        log.info("gateway %s serving (leader=%s)", self.gateway_id, self.leader.held)

    def _install_runtimes(self) -> None:
        self.ledger.tasks.cancel_adapters.update(self.runtimes)

    def stop(self) -> None:
        """Stop firing, stop running work (recorded cancelled), release the lease. Idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._wake.set()
        with contextlib.suppress(Exception):
            self.scheduler.shutdown(wait=False)
        self.wakeups.stop()
        if self._queue_thread is not None:
            self._queue_thread.join(timeout=5)
        self.flows.stop()
        for runtime in self.runtimes.values():  # cli last: its lease-free shutdown waits longest
            if runtime is not self.cli:
                with contextlib.suppress(Exception):
                    runtime.shutdown()
        self.cli.shutdown()
        self.lease.stop(release=True)
        self.leader.release()
        log.info("gateway %s stopped", self.gateway_id)

    # --- scheduled jobs -----------------------------------------------------------------------------

    def sweep(self) -> None:
        if not self.leader.try_acquire():
            return
        try:
            tombstone_orphans(self.ledger, self.gateway_id)
            for job_id in self.ledger.runs.cron.release_stale_running():
                log.info("cron job %s: its run's gateway is gone; no longer running", job_id)
            self._deliver_pending()
            self._retry_generation_fallbacks()
            report = self.ledger.maintenance(apply=True)
            self.sweeps += 1
            log.info("sweep done: %s", _counts(report))
        except FlowledgerError as exc:
            log.warning("sweep failed: %s", exc.message)

    def reap_orphans(self) -> None:
        """Every gateway, leader or not: an orphan can only be killed from its own host."""
        try:
            orphans.reap_orphans(self.ledger)
        except FlowledgerError as exc:
            log.warning("orphan check failed: %s", exc.message)
        except OSError:  # /proc surprises must not stop the gateway from serving
            log.exception("orphan check failed")

    def _deliver_pending(self) -> None:
        hooks = delivery.delivery_hooks(self.ledger.tasks)
        if hooks is None:
            return
        try:
            settled = hooks.deliver_pending()
            if settled:
                log.info("settled %d pending deliveries", settled)
            pruned = hooks.prune_outbox()
            if pruned:
                log.info("pruned %d settled notices", pruned)
        except Exception:  # one bad channel must not stop the sweep
            log.exception("pending deliveries failed")

    def send_notices(self) -> None:
        """The outbox (tasks/delivery/outbox.py): every writer records its notices, the gateway sends them."""
        hooks = delivery.delivery_hooks(self.ledger.tasks)
        if hooks is None:
            return
        try:
            sent = hooks.send_outbox()
            if sent:
                log.info("sent %d notices", sent)
        except FlowledgerError as exc:
            log.warning("notices failed: %s", exc.message)
        except Exception:  # one bad channel must not stop the loop
            log.exception("notices failed")

    def _retry_generation_fallbacks(self) -> None:
        """Generation jobs whose direct fallback failed (tasks/delivery/generation.py): try the missing items again."""
        hooks = generation_hooks(self.ledger.tasks)
        if hooks is None:
            return
        try:
            sent = hooks.retry_unsent()
            if sent:
                log.info("sent %d generated item(s) a failed fallback had left", sent)
        except Exception:  # one bad channel must not stop the sweep
            log.exception("generation fallbacks failed")

    def fire_wakes(self) -> None:
        """Immediate heartbeat wakes: run the configured heartbeat hook once per pending wake."""
        hooks = delivery.delivery_hooks(self.ledger.tasks)
        if hooks is None or not self.leader.try_acquire():
            return
        try:
            fired = hooks.fire_wakes()
            if fired:
                log.info("fired %d heartbeat wakes", fired)
        except Exception:
            log.exception("heartbeat wakes failed")

    def prune_sessions(self) -> None:
        """Isolated cron-run session rows older than 7 days go; running jobs' rows stay (REFERENCE §6.6)."""
        if not self.leader.try_acquire():
            return
        try:
            pruned = self.ledger.runs.cron.prune_run_sessions()
            if pruned:
                log.info("pruned %d cron run sessions", pruned)
        except FlowledgerError as exc:
            log.warning("session pruning failed: %s", exc.message)

    def checkpoint(self) -> None:
        self.ledger.runs.checkpoint("PASSIVE")

    def sync_cron_jobs(self) -> None:
        """Load added jobs, drop removed ones, reschedule changed ones (run every 2 s)."""
        self.leader.try_acquire()
        try:
            paused = cron_control.paused_at(self.ledger)  # a paused job stays known but is not scheduled
            jobs = {j.job_id: j for j in cron.list_jobs(self.ledger) if j.job_id not in paused}
            triggered = cron_control.take_triggers(self.ledger) if self.leader.held else []
        except FlowledgerError as exc:
            log.warning("cron reload failed: %s", exc.message)
            return
        for job_id in triggered:  # `cron trigger NAME`: one run now, on the cron executor like a scheduled one
            self.scheduler.add_job(self._fire_cron, args=[job_id], executor="cron", id=f"cron-trigger:{job_id}",
                                   replace_existing=True)
            log.info("cron job %s triggered", job_id)
        for job_id in list(self._cron_loaded):
            if job_id not in jobs or jobs[job_id].signature != self._cron_loaded[job_id]:
                with contextlib.suppress(Exception):
                    self.scheduler.remove_job(CRON_PREFIX + job_id)
                del self._cron_loaded[job_id]
                log.info("cron job %s unloaded", job_id)
        now = SystemClock().now()
        for job_id, job in jobs.items():
            if job_id in self._cron_loaded:
                continue
            start = now + job.every if job.every is not None else None
            self.scheduler.add_job(self._fire_cron, job.trigger(start), args=[job_id], id=CRON_PREFIX + job_id,
                                   executor="cron", name=job.name)
            self._cron_loaded[job_id] = job.signature
            log.info("cron job %s (%s) loaded: %s", job.name, job_id, cron.format_every(job))

    def _fire_cron(self, job_id: str) -> None:
        if self._stopping.is_set() or not self.leader.try_acquire():
            return
        try:
            self.cron.run_job(job_id)
        except FlowledgerError as exc:
            log.warning("cron job %s run failed: %s", job_id, exc.message)

    # --- the work queue -----------------------------------------------------------------------------

    def running_count(self) -> int:
        return sum(r.running_count() for rt, r in self.runtimes.items() if rt != Runtime.CRON)

    def _launch(self, task: Task, payload: queue.Payload) -> None:
        launcher = self.runtimes.get(task.runtime)
        if launcher is None:
            assert task.run_id is not None
            self.ledger.tasks.fail(task.run_id, error=f"no {task.runtime.value} runtime in this gateway")
            return
        try:
            if launcher is self.cli:  # the claim made it running and registered its run: no second time
                self.cli.start(task, payload.argv, shell=payload.shell, timeout=payload.timeout, cwd=payload.cwd,
                               claimed=True)
            else:
                launcher.start(task, payload.argv, shell=payload.shell, timeout=payload.timeout, cwd=payload.cwd)
        except FlowledgerError as exc:
            log.warning("task %s could not start: %s", task.task_id, exc.message)
            if task.run_id:
                self.cli.forget(task.run_id)  # the claim registered the run; nothing runs it
                with contextlib.suppress(FlowledgerError):
                    self.ledger.tasks.fail(task.run_id, error=exc.message)

    def _queue_loop(self) -> None:
        limit = knobs.max_parallel_runs()
        while not self._stopping.is_set():
            claimed = 0
            try:
                free = limit - self.running_count()
                for task, payload in queue.claim(self.ledger, self.gateway_id, free):
                    claimed += 1
                    log.info("task %s claimed by %s", task.task_id, self.gateway_id)
                    self._launch(task, payload)
            except FlowledgerError as exc:
                log.warning("queue poll failed: %s", exc.message)
            except Exception:
                log.exception("queue poll failed")
            if claimed == 0 or self.running_count() >= limit:
                # A finished run and a submitter on this host set _wake, so a free slot is refilled and new work
                # is claimed at once; otherwise poll. Cleared before the next claim: a wake-up that arrives
                # during that claim is kept for the wait after it, never lost.
                self.queue_waits += 1
                self._wake.wait(self.queue_poll_s)
                self._wake.clear()


def _counts(report: MaintenanceReport) -> str:
    return str(report.maintenance.to_json())
