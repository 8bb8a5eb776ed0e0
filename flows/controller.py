"""The built-in graph controller: drives a managed flow made from a flow file (CONTRACT §5).

Each step becomes a child task of the flow (runtime from the step, label = the step's label or id, run id
`flow:<flow_id>:<step_id>:<attempt>` with attempts counted over every run of the flow, see flows/steps.py)
once every step it needs has succeeded; the `StepLauncher` of the step's runtime runs it and reports through
`ledger.tasks`, and the controller watches task statuses in the database. An agent step (`subagent`, `acp`)
is asked its prompt (the task's text; `run` is the agent's argv) and gets a child session of its own per attempt,
so `tasks cancel` can reach it from any process and a persistent ACP session is never reused by another step. A
step whose runtime has no launcher here, or that its launcher cannot start, fails at once with one line naming the
step.
Per-step status lives in the flow's `state`:

    {"version": 1, "definition": <the flow file as a document>, "driver": "<lease id of the driving process>",
     "context": {"cwd": "<submitter's directory>", "env": {…}},   # detached flows only (flows/context.py)
     "steps": {"<id>": {"status": "pending|running|succeeded|…", "attempts": n, "task_id": "…",
                        "base": <attempts in earlier runs>, "not_before": <epoch ms of the next attempt>}},
     "run": <1 + retries of the flow>, "history": [<one entry per retry, flows/retry.py>]}

so a controller in another process (the gateway, after `flow run --detach`) can pick the flow up. Readiness
bookkeeping is `flows.graph.Readiness`: finishing a step costs O(its out-edges). A failed step (after its
retries) stops new starts, cancels the steps not yet started, lets running ones end, then fails the flow with
the blocked fields naming the step. A cancel request on the flow stops everything and ends it cancelled.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from flowledger.flows import context as submission
from flowledger.flows import store as flow_store
from flowledger.flows.definitions import FlowDefinition, StepDefinition, flow_from_document
from flowledger.flows.graph import Readiness, StepStatus
from flowledger.flows.models import GRAPH_CONTROLLER, Flow, FlowStatus
from flowledger.flows.notices import FlowNotices, run_number
from flowledger.flows.steps import step_run_id
from flowledger.tasks.core import store as task_store
from flowledger.tasks.core.clock import coerce_time, to_ms
from flowledger.tasks.core.errors import FlowledgerError, FlowNotFound, InvalidInput
from flowledger.tasks.core.ids import new_id
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import ACTIVE, DeliveryStatus, NotifyPolicy, Runtime, TaskStatus, TerminalOutcome
from flowledger.tasks.runs import liveness

if TYPE_CHECKING:
    from flowledger.flows.ledger import Ledger

log = logging.getLogger(__name__)

STATE_VERSION = 1
POLL_INTERVAL_S = 0.02
# The state document grows with the flow; writing it at most this often keeps big flows O(steps) overall.
SAVE_EVERY_S = 0.25
_SAVE_ATTEMPTS = 20


class StepLauncher(Protocol):
    """Runs one step's task without blocking; it moves the task to running and then to a terminal status
    (succeeded/failed/timed_out/cancelled) through `ledger.tasks`. `shell=True` means `argv == [command]`."""

    def start(self, task: Task, argv: list[str], *, shell: bool, timeout: timedelta | None, cwd: str | None,
              env: dict[str, str] | None) -> None: ...


@runtime_checkable
class OrphanStopper(Protocol):
    """A launcher that can stop a run's process left behind by a dead driver (the scheduler's runtimes can:
    they know how they start processes); True when it stopped one. An adopter uses it before it retries."""

    def stop_orphan(self, run_id: str) -> bool: ...


# One launcher serves every step (as a gateway's cli runtime did), or one launcher per runtime; a step whose
# runtime has none fails at once.
Launchers = StepLauncher | Mapping[Runtime, StepLauncher]


def launchers_by_runtime(launcher: Launchers) -> tuple[StepLauncher, Mapping[Runtime, StepLauncher] | None]:
    """The launcher that vouches for the driver (the cli one when there are several) and the per-runtime map."""
    if isinstance(launcher, Mapping):
        if not launcher:
            raise InvalidInput("A flow controller needs at least one step launcher.")
        return launcher.get(Runtime.CLI) or next(iter(launcher.values())), launcher
    return launcher, None


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


def initial_state(definition: FlowDefinition,
                  context: submission.SubmissionContext | None = None) -> dict[str, Any]:
    snapshot = Readiness(definition).snapshot()
    state = {"version": STATE_VERSION, "definition": definition.to_document(), "steps": snapshot["steps"]}
    if context is not None:
        state["context"] = context.to_document()
    return state


def define_flow(ledger: Ledger, definition: FlowDefinition, context: submission.SubmissionContext | None = None,
                *, driving: StepLauncher | None = None, notify: NotifyPolicy | str | None = None,
                origin: Mapping[str, Any] | None = None) -> Flow:
    """Record the flow for a controller to drive: queued for a later one (e.g. the gateway's), or — `driving` —
    already running under that launcher's lease, for this process to drive at once. A detached flow carries its
    submission `context` (its steps then run there, with that environment). `notify` and `origin` (e.g. from
    the command line) override the file's `[flow] notify` and `origin`.

    The second is one insert, so a foreground submission commits whole or not at all: a flow first written
    queued and claimed in a second write was left queued when that write failed (a full disk), and a gateway
    later ran the flow its user had been told did not start (issue 12 item 4)."""
    state = initial_state(definition, context)
    status = FlowStatus.QUEUED
    if driving is not None:
        driver = _launcher_driver(ledger, driving)
        if driver is not None:
            state["driver"] = driver
        status = FlowStatus.RUNNING
    where = origin if origin is not None else definition.origin
    return ledger.flows.create_managed(definition.owner, GRAPH_CONTROLLER, definition.goal, status=status,
                                       notify_policy=notify or definition.notify, state=state,
                                       requester_origin=dict(where) if where is not None else None)


def run_flow(ledger: Ledger, definition: FlowDefinition, launcher: Launchers, *,
             on_progress: ProgressCallback | None = None, poll_interval: float = POLL_INTERVAL_S) -> Flow:
    """Define the flow and drive it to its end in this thread; returns the final flow."""
    flow = define_flow(ledger, definition, driving=launchers_by_runtime(launcher)[0])
    return GraphController(ledger, flow, launcher, on_progress=on_progress, poll_interval=poll_interval).run()


def resume_graph_flows(ledger: Ledger, launcher: Launchers, *, on_progress: ProgressCallback | None = None,
                       poll_interval: float = POLL_INTERVAL_S) -> list[Flow]:
    """Drive every queued graph flow, then every running one whose driver's lease expired (oldest first), to its
    end; a flow another process claimed or adopted first is skipped."""
    finished: list[Flow] = []
    for flow in reversed(ledger.flows.list(FlowStatus.QUEUED, controller_id=GRAPH_CONTROLLER)):
        controller = GraphController(ledger, flow, launcher, on_progress=on_progress, poll_interval=poll_interval)
        if controller.claim():
            finished.append(controller.run())
    running = ledger.flows.list(FlowStatus.RUNNING, controller_id=GRAPH_CONTROLLER)
    if not running:
        return finished
    with ledger.db.read() as conn:  # one lease read per pass, however many flows run
        fresh = liveness.fresh_gateways(conn, ledger.clock.now())
    for flow in reversed(running):
        driver = driver_of(flow)
        if driver is None or driver in fresh:  # no recorded driver: nothing says it is gone, so never taken over
            continue
        controller = GraphController(ledger, flow, launcher, on_progress=on_progress, poll_interval=poll_interval)
        if controller.adopt():
            finished.append(controller.run())
    return finished


def launch_options(step: StepDefinition) -> dict[str, Any]:
    """What a step's runtime takes beyond the common arguments: an acp step's session mode."""
    return {"mode": step.session_mode} if step.session_mode is not None else {}


def _agent_fields(step: StepDefinition) -> dict[str, Any]:
    """An agent step's task runs in a child session of its own, named after the attempt's task id."""
    if step.runtime == Runtime.CLI:
        return {}
    task_id = new_id()
    return {"task_id": task_id, "child_session_key": f"agent:main:{step.runtime.value}:{task_id}"}


def _one_line(exc: BaseException) -> str:
    text = exc.message if isinstance(exc, FlowledgerError) else str(exc) or type(exc).__name__
    return " ".join(text.split())


def driver_of(flow: Flow) -> str | None:
    state = flow.state if isinstance(flow.state, dict) else {}
    driver = state.get("driver")
    return driver if isinstance(driver, str) and driver else None


def _launcher_driver(ledger: Ledger, launcher: StepLauncher) -> str | None:
    """The lease id that vouches for this process: the launcher's (the cli runtime renews one), else the
    ledger's gateway id. Starting the launcher's backing first makes sure that lease is being renewed."""
    ensure = getattr(launcher, "ensure_backing", None)
    if callable(ensure):
        ensure()
    driver = getattr(launcher, "gateway_id", None) or ledger.gateway_id
    return driver if isinstance(driver, str) and driver else None


class _Displaced(Exception):
    """Another controller adopted the flow (our lease lapsed while we were still alive): stop driving it."""


class GraphController:
    def __init__(self, ledger: Ledger, flow: Flow, launcher: Launchers, *,
                 on_progress: ProgressCallback | None = None, poll_interval: float = POLL_INTERVAL_S) -> None:
        state = flow.state if isinstance(flow.state, dict) else None
        if state is None or state.get("version") != STATE_VERSION or "definition" not in state:
            raise InvalidInput(f"Flow {flow.flow_id} is not a graph flow (no step state).")
        self.ledger = ledger
        self.flow = flow
        self.launcher, self.launchers = launchers_by_runtime(launcher)
        self.context = submission.from_document(state.get("context"))
        self.on_progress = on_progress
        self.poll_interval = poll_interval
        self.definition = flow_from_document(state["definition"], source=f"flow {flow.flow_id}")
        self._document = self.definition.to_document()
        steps = state.get("steps") or {}
        self.readiness = Readiness.restore(self.definition, {"version": 1, "steps": steps})
        self.task_ids: dict[str, str] = {k: v["task_id"] for k, v in steps.items() if v.get("task_id")}
        # Attempts of earlier runs (a retried flow): run ids keep counting, the retries budget starts afresh.
        self.base: dict[str, int] = {k: int(v.get("base") or 0) for k, v in steps.items()}
        self.not_before: dict[str, datetime] = {}
        for step_id, entry in steps.items():
            at = coerce_time(entry.get("not_before"), "not_before") if entry.get("not_before") else None
            if at is not None:
                self.not_before[step_id] = at
        # Keys other parts keep in the state (the run number, the retry history, the submission context).
        self._extra = {k: v for k, v in state.items() if k not in ("version", "definition", "steps", "driver")}
        self.notices = FlowNotices(ledger)
        self._started_at: dict[str, Any] = {}
        self._claimed = flow.status == FlowStatus.RUNNING
        self._announced = False  # flow_started emitted (by claim, adopt, or run for a flow defined running)
        self.driver: str | None = driver_of(flow)
        counts = self.readiness.counts()
        self._done = sum(n for s, n in counts.items() if s not in (StepStatus.PENDING.value, StepStatus.RUNNING.value))
        self._saved_at = 0.0
        self._save_every = SAVE_EVERY_S
        self._dirty = False

    # --- lifecycle ------------------------------------------------------------------------------------

    def claim(self) -> bool:
        """Move the queued flow to running; False when another controller got there first."""
        if self._claimed:
            return True
        self.driver = _launcher_driver(self.ledger, self.launcher)
        result = self.ledger.flows.resume(self.flow.flow_id, self.flow.revision, status=FlowStatus.RUNNING,
                                          state=self.state())
        if not result.applied or result.flow is None:
            return False
        self.flow = result.flow
        self._claimed = True
        self._announce()
        return True

    def adopt(self) -> bool:
        """Take over a running flow whose driver died; False when another controller adopted it first (the
        driver swap is revision-checked, so exactly one adopter wins)."""
        previous = self.driver
        self.driver = _launcher_driver(self.ledger, self.launcher)
        result = self.ledger.flows.update(self.flow.flow_id, self.flow.revision, {"state": self.state()})
        if not result.applied or result.flow is None:
            self.driver = previous
            return False
        self.flow = result.flow
        self._claimed = True
        log.info("flow %s: adopted from driver %s by %s", self.flow.flow_id, previous, self.driver)
        self._reconcile()
        self._announce()
        return True

    def _announce(self) -> None:
        if not self._announced:
            self._announced = True
            self._emit("flow_started")

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
                launcher = self.launcher if self.launchers is None else self.launchers.get(task.runtime)
                if isinstance(launcher, OrphanStopper):
                    launcher.stop_orphan(task.run_id)
                try:
                    self.ledger.tasks.fail(task.run_id, error="lost: its flow driver stopped")
                except FlowledgerError as exc:  # it ended meanwhile; the collect reads what it became
                    log.info("flow %s: step %s not failed: %s", self.flow.flow_id, step_id, exc)

    def run(self) -> Flow:
        if not self.claim():
            return self.ledger.flows.get_by_id(self.flow.flow_id) or self.flow
        self._announce()  # a flow defined running (define_flow's `driving`) was never claimed
        try:
            return self._drive()
        except _Displaced:
            log.warning("flow %s: adopted by another driver; this one stops", self.flow.flow_id)
            return self._reload()

    def _drive(self) -> Flow:
        while True:
            ended, changed = self.turn()
            if ended is not None:
                return ended
            if not changed:
                time.sleep(self.poll_interval)

    def turn(self) -> tuple[Flow | None, bool]:
        """One pass of the driving loop on a claimed flow: (the ended flow or None, whether anything changed).
        Tests drive a flow pass by pass with a FrozenClock; `run()` loops over it."""
        with self.ledger.db.read() as conn:  # the head only: the state document can be large
            head = flow_store.head(conn, self.flow.flow_id)
        if head is None:
            raise FlowNotFound(self.flow.flow_id)
        if head.cancel_requested_at is not None or head.is_link_terminal:
            return self._stop(), True
        changed = self._collect()
        if self.readiness.is_done():
            return self._conclude(), True
        changed = self._start_ready() or changed
        if changed:
            self._save()
        elif self._dirty:
            self._save(force=True)
        return None, changed

    # --- steps ----------------------------------------------------------------------------------------

    def _ready_now(self) -> list[str]:
        """The ready steps to start now: a step waiting out its retry_delay keeps no slot and is skipped."""
        now = self.ledger.clock.now()
        waiting = {s for s, at in self.not_before.items() if now < at}
        running = len(self.readiness.running())
        picked = self.readiness.next_to_start(running_count=running - len(waiting))
        slots = self.readiness.max_parallel - running
        return [s for s in picked if s not in waiting][:max(0, slots)]

    def _start_ready(self) -> bool:
        started = False
        for step_id in self._ready_now():
            step = self.definition.step(step_id)
            attempt = self.base.get(step_id, 0) + self.readiness.attempts(step_id) + 1
            # Step tasks stay silent (not_applicable): the flow speaks for them (flows/notices.py).
            result = self.ledger.flows.run_task(
                self.flow.flow_id, runtime=step.runtime, task=step.agent_prompt or step.command,
                label=step.display_label, run_id=step_run_id(self.flow.flow_id, step.id, attempt),
                notify_policy=NotifyPolicy.SILENT, delivery_status=DeliveryStatus.NOT_APPLICABLE, status="queued",
                refresh=False, **_agent_fields(step))
            if not result.created or result.task is None:
                log.info("flow %s: step %s not started: %s", self.flow.flow_id, step_id, result.reason)
                return started  # a cancel request or a terminal flow: the loop notices next turn
            task = result.task
            self.not_before.pop(step_id, None)
            self.readiness.mark_started(step_id)
            self.task_ids[step_id] = task.task_id
            self._started_at[step_id] = self.ledger.clock.now()
            self._emit("step_started", step_id, task)
            self._launch(step, task)
            started = True
        return started

    def _launch(self, step: StepDefinition, task: Task) -> None:
        """Hand the step's task to its runtime; one that cannot take it fails the step, never the controller."""
        launcher = self.launcher if self.launchers is None else self.launchers.get(step.runtime)
        options: dict[str, Any] = {"cwd": step.cwd, "env": dict(step.env) or None}
        if self.context is not None:  # a detached flow: the submitter's directory and environment, nothing else
            options = {"cwd": self.context.step_cwd(step.cwd), "env": self.context.step_env(step.env),
                       "inherit_env": False}
        try:
            if launcher is None:
                raise InvalidInput(f"no {step.runtime.value} runtime here to run it")
            launcher.start(task, list(step.run), shell=step.shell, timeout=step.timeout, **options,
                           **launch_options(step))
        except Exception as exc:  # a launcher that cannot start the step fails that step, not the controller
            error = f"Step {step.id!r} could not start: {_one_line(exc)}"
            log.warning("flow %s: task %s: %s", self.flow.flow_id, task.task_id, error)
            if task.run_id:
                with contextlib.suppress(FlowledgerError):  # it ended meanwhile: the collect reads what it became
                    self.ledger.tasks.fail(task.run_id, error=error)

    def _running_tasks(self) -> dict[str, Task]:
        running = self.readiness.running()
        out: dict[str, Task] = {}
        with self.ledger.db.read() as conn:
            for step_id in running:
                task = task_store.get(conn, self.task_ids[step_id])
                if task is not None:
                    out[step_id] = task
        return out

    def _collect(self) -> bool:
        """Fold finished step tasks into the readiness tracker; True when anything changed."""
        changed = False
        now = self.ledger.clock.now()
        for step_id, task in self._running_tasks().items():
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

    # --- ending ---------------------------------------------------------------------------------------

    def _conclude(self) -> Flow:
        outcome = self.readiness.outcome()
        self._save(force=True)
        if outcome == StepStatus.SUCCEEDED:
            result = self._retrying(lambda f: self.ledger.flows.finish(f.flow_id, f.revision, current_step=None))
        else:
            failed = self.readiness.failed_steps() or [s for s, st in self.readiness.statuses().items()
                                                       if st == StepStatus.CANCELLED]
            step_id = failed[0] if failed else None
            blocked_task = self.task_ids.get(step_id) if step_id else None
            summary = self._failure_summary(step_id, blocked_task)
            result = self._retrying(lambda f: self.ledger.flows.fail(
                f.flow_id, f.revision, current_step=None, blocked_task_id=blocked_task, blocked_summary=summary))
        flow = result or self._reload()
        self.flow = flow
        self.notices.flow_ended(flow, self.run_number)
        self._emit("flow_finished")
        return flow

    def _failure_summary(self, step_id: str | None, task_id: str | None) -> str:
        if step_id is None:
            return "A step did not succeed."
        status = self.readiness.status(step_id).value.replace("_", " ")
        task = self.ledger.tasks.get(task_id) if task_id else None
        detail = f": {task.error}" if task is not None and task.error else ""
        return f"Step {step_id} {status}{detail}"

    def _stop(self) -> Flow:
        """A cancel request (or someone else ended the flow): nothing new starts, running steps are cancelled."""
        for pending in self.readiness.steps_not_started():
            self._finish(pending, StepStatus.CANCELLED)
        self._save(force=True)
        while True:
            flow = self._reload()
            if flow.cancel_requested_at is not None and not flow.is_link_terminal:
                self.ledger.flows.cancel(flow.flow_id)
            self._collect()
            if not self.readiness.running():
                break
            time.sleep(self.poll_interval)
        self._save(force=True)
        flow = self._reload()
        if flow.cancel_requested_at is not None and not flow.is_link_terminal:
            flow = self.ledger.flows.cancel(flow.flow_id).flow or self._reload()
        self.flow = flow
        if flow.is_link_terminal:
            self.notices.flow_ended(flow, self.run_number)
        self._emit("flow_finished")
        return flow

    # --- persistence ----------------------------------------------------------------------------------

    @property
    def run_number(self) -> int:
        return run_number(self.flow)

    def state(self) -> dict[str, Any]:
        steps = self.readiness.snapshot()["steps"]
        for step_id, task_id in self.task_ids.items():
            steps[step_id]["task_id"] = task_id
        for step_id, base in self.base.items():
            if base:
                steps[step_id]["base"] = base
        for step_id, at in self.not_before.items():
            steps[step_id]["not_before"] = to_ms(at)
        state: dict[str, Any] = {**self._extra, "version": STATE_VERSION, "definition": self._document,
                                 "steps": steps}
        if self.driver is not None:
            state["driver"] = self.driver
        if self.context is not None:
            state["context"] = self.context.to_document()
        return state

    def _reload(self) -> Flow:
        flow = self.ledger.flows.get_by_id(self.flow.flow_id)
        if flow is None:
            raise FlowNotFound(self.flow.flow_id)
        self.flow = flow
        return flow

    def _retrying(self, op: Callable[[Flow], Any]) -> Flow | None:
        """Run a revision-checked op on the latest flow; a cancel request racing us only costs a retry."""
        for _ in range(_SAVE_ATTEMPTS):
            flow = self._reload()
            result = op(flow)
            if result.applied:
                self.flow = result.flow
                return result.flow  # type: ignore[no-any-return]
            if result.reason != "revision_conflict":
                raise FlowledgerError(f"Flow {flow.flow_id} update failed: {result.reason}.")
        return None

    def _save(self, *, force: bool = False) -> Flow:
        """Write the step state and current step; between forced saves, at most every SAVE_EVERY_S."""
        if not force and time.monotonic() - self._saved_at < self._save_every:
            self._dirty = True
            return self.flow
        began = time.monotonic()
        self._dirty = False
        running = self.readiness.running()
        patch = {"state": self.state(), "current_step": ", ".join(running) if running else None}

        def op(f: Flow) -> Any:
            if driver_of(f) != self.driver:
                raise _Displaced(f.flow_id)
            return self.ledger.flows.update(f.flow_id, f.revision, patch)

        saved = self._retrying(op) or self.flow
        self._saved_at = time.monotonic()
        # A big state costs more to write: space saves so they take at most a tenth of the controller's time.
        self._save_every = max(SAVE_EVERY_S, 9 * (self._saved_at - began))
        return saved

    def _emit(self, kind: str, step_id: str | None = None, task: Task | None = None,
              status: str | None = None) -> None:
        if self.on_progress is None:
            return
        attempt = self.readiness.attempts(step_id) if step_id else 0
        limit = self.definition.step(step_id).retries + 1 if step_id else 0
        try:
            self.on_progress(StepEvent(kind, self.flow, step_id, task, status, self._done,
                                       len(self.readiness.order), attempt, limit))
        except Exception:  # a broken progress display must not stop the flow
            log.exception("flow %s: progress callback failed", self.flow.flow_id)
