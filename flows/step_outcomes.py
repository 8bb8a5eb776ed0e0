"""How a graph controller folds its steps' task outcomes back into the flow: a finished task ends its step or
schedules a retry (with its `retry_delay`), a step past its timeout is failed as a backstop, a ready step
waiting out its delay keeps no parallel slot, and a step a dead driver left running without a live run is
failed (its orphaned process stopped first) so it retries as usual.

`StepOutcomes` is the half of `GraphController` (flows/controller.py) that reads tasks and never starts one; it
is a mixin so the controller's state stays in one object that one saved `state` document describes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam

from flowledger.flows.definitions import FlowDefinition
from flowledger.flows.graph import Readiness, StepStatus
from flowledger.flows.models import Flow
from flowledger.flows.notices import FlowNotices
from flowledger.flows.step_launch import OrphanStopper, StepLauncher
from flowledger.tasks.core import store as task_store
from flowledger.tasks.core.errors import FlowledgerError
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import ACTIVE, Runtime, TaskStatus, TerminalOutcome
from flowledger.tasks.core.tables import task_runs
from flowledger.tasks.runs import liveness

if TYPE_CHECKING:
    from flowledger.flows.ledger import Ledger

log = logging.getLogger("flowledger.flows.controller")  # the controller's log, wherever its code lives


@dataclass(frozen=True, slots=True)
class StepEvent:
    """A progress notice: kind is flow_started, step_started, step_retry, step_finished or flow_finished."""

    kind: str
    flow: Flow
    step_id: str | None = None
    task: Task | None = None
    status: str | None = None
    done: int = 0
    total: int = 0
    attempt: int = 0  # step events: this run's attempt number, and how many this run may make
    max_attempts: int = 0


ProgressCallback = Callable[[StepEvent], None]


def step_status_of(task: Task) -> StepStatus | None:
    """What a step's task says about the step; None while it is still active."""
    if task.status in ACTIVE:
        return None
    if task.status == TaskStatus.SUCCEEDED:
        return StepStatus.FAILED if task.terminal_outcome == TerminalOutcome.BLOCKED else StepStatus.SUCCEEDED
    if task.status == TaskStatus.TIMED_OUT:
        return StepStatus.TIMED_OUT
    if task.status == TaskStatus.CANCELLED:
        return StepStatus.CANCELLED
    return StepStatus.FAILED  # failed, lost


class StepOutcomes:
    """Collecting finished steps, retry timing and the timeout backstop, over the controller's state."""

    ledger: Ledger
    flow: Flow
    definition: FlowDefinition
    readiness: Readiness
    notices: FlowNotices
    task_ids: dict[str, str]
    base: dict[str, int]  # attempts of earlier runs of the flow, per step
    not_before: dict[str, datetime]  # a step waiting out its retry_delay starts no earlier than this
    _started_at: dict[str, Any]
    _done: int

    def _emit(self, kind: str, step_id: str | None = None, task: Task | None = None,
              status: str | None = None) -> None:
        raise NotImplementedError

    def _launcher_for(self, runtime: Runtime) -> StepLauncher | None:
        raise NotImplementedError

    def _reconcile(self) -> None:
        """Steps the dead driver left running: a task that ended is folded in by the next collect; one still
        active but no longer backed by a live run lost its supervisor, so its orphaned process (if this host
        can prove which it is) is stopped and the step fails (and retries as usual)."""
        now = self.ledger.clock.now()
        for step_id, task in self._running_tasks().items():
            if task.status not in ACTIVE or task.run_id is None:
                continue
            with self.ledger.db.read() as conn:
                live = liveness.run_is_live(conn, task.run_id, now)
            if not live:
                # A step process outlives its SIGKILLed gateway (it has a session of its own): a retry must
                # not run alongside it, nor its work land after the retry's.
                launcher = self._launcher_for(task.runtime)
                if isinstance(launcher, OrphanStopper):
                    launcher.stop_orphan(task.run_id)
                try:
                    self.ledger.tasks.fail(task.run_id, error="lost: its flow driver stopped")
                except FlowledgerError as exc:  # it ended meanwhile; the collect reads what it became
                    log.info("flow %s: step %s not failed: %s", self.flow.flow_id, step_id, exc)

    def _failure_summary(self, step_id: str | None, task_id: str | None) -> str:
        if step_id is None:
            return "A step did not succeed."
        status = self.readiness.status(step_id).value.replace("_", " ")
        task = self.ledger.tasks.get(task_id) if task_id else None
        detail = f": {task.error}" if task is not None and task.error else ""
        return f"Step {step_id} {status}{detail}"

    def _ready_now(self) -> list[str]:
        """The ready steps to start now: a step waiting out its retry_delay keeps no slot and is skipped."""
        now = self.ledger.clock.now()
        waiting = {s for s, at in self.not_before.items() if now < at}
        running = len(self.readiness.running())
        picked = self.readiness.next_to_start(running_count=running - len(waiting))
        slots = self.readiness.max_parallel - running
        return [s for s in picked if s not in waiting][:max(0, slots)]

    def _running_tasks(self, conn: Connection | None = None) -> dict[str, Task]:
        """The tasks of the running steps, read in one statement (a turn of a wide flow has many); in `conn`'s
        transaction when given (the turn reads them with the flow's head: one transaction, not two)."""
        wanted = {self.task_ids[step_id]: step_id for step_id in self.readiness.running()}
        if not wanted:
            return {}
        if conn is None:
            with self.ledger.db.read() as own:
                return self._running_tasks(own)
        found = {task.task_id: task for task in _tasks_by_id(conn, list(wanted))}
        return {step_id: found[task_id] for task_id, step_id in wanted.items() if task_id in found}

    def _collect(self, running: dict[str, Task] | None = None) -> bool:
        """Fold finished step tasks into the readiness tracker; True when anything changed. `running`: the
        running steps' tasks when the caller just read them (`_running_tasks`)."""
        changed = False
        now = self.ledger.clock.now()
        for step_id, task in (self._running_tasks() if running is None else running).items():
            status = step_status_of(task)
            if status is None:
                self._enforce_timeout(step_id, task, now)
                continue
            changed = True
            attempt = self.readiness.attempts(step_id)
            self.notices.step_attempt_ended(self.flow, step_id, self.base.get(step_id, 0) + attempt, task)
            if self.readiness.can_retry(step_id, status):
                self.readiness.mark_retry(step_id)
                wait = self.definition.step(step_id).retry_wait(attempt)
                if wait:
                    self.not_before[step_id] = (task.ended_at or now) + wait
                self._emit("step_retry", step_id, task, status.value)
                continue
            self._finish(step_id, status)
            self._emit("step_finished", step_id, task, status.value)
            if self.readiness.halted:
                for pending in self.readiness.steps_not_started():
                    self._finish(pending, StepStatus.CANCELLED)
        for step_id in self.readiness.running():
            if step_id not in self.task_ids:  # pragma: no cover - a state written by a broken controller
                self._finish(step_id, StepStatus.FAILED)
                changed = True
        return changed

    def _finish(self, step_id: str, status: StepStatus) -> None:
        if self.readiness.status(step_id) != status:
            self.readiness.mark_finished(step_id, status)
            self._done += 1

    def _enforce_timeout(self, step_id: str, task: Task, now: Any) -> None:
        """The launcher owns timeouts; this is the backstop when it missed one (measured on the ledger clock)."""
        timeout = self.definition.step(step_id).timeout
        started = task.started_at or self._started_at.get(step_id)
        if timeout is None or started is None or task.status != TaskStatus.RUNNING or task.run_id is None:
            return
        if now - started >= timeout:
            self.ledger.tasks.fail(task.run_id, error=f"step timed out after {timeout}", status="timed_out")


# Built once (an expanding IN): building a Core statement costs more than running it.
_BY_IDS = task_store.task_select().where(task_runs.c.task_id.in_(bindparam("b_ids", expanding=True)))
_CHUNK = 500  # ids per statement: well under every engine's bound-parameter limit


def _tasks_by_id(conn: Connection, task_ids: list[str]) -> list[Task]:
    out: list[Task] = []
    for start in range(0, len(task_ids), _CHUNK):
        out += [task_store.row_to_task(row) for row in conn.execute(_BY_IDS, {"b_ids": task_ids[start:start + _CHUNK]})]
    return out
