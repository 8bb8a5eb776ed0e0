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

The controller's parts: this module drives the loop (claim, adopt, turns, the end, the saved state);
flows/step_launch.py creates a turn's step tasks in one transaction and hands them to the launchers (a
`BatchStepLauncher` gets them in one call); flows/step_outcomes.py folds finished tasks back in (retries and
their timing, the timeout backstop, steps a dead driver left); flows/graph_state.py writes a new flow's state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from flowledger.flows import context as submission
from flowledger.flows import store as flow_store
from flowledger.flows.definitions import FlowDefinition, StepDefinition, flow_from_document
from flowledger.flows.graph import Readiness, StepStatus
from flowledger.flows.graph_state import STATE_VERSION, define_flow, driver_of, initial_state, launcher_driver
from flowledger.flows.ledger import Ledger
from flowledger.flows.models import GRAPH_CONTROLLER, Flow, FlowStatus
from flowledger.flows.notices import FlowNotices, run_number
from flowledger.flows.step_launch import (
    BatchStepLauncher,
    Launchers,
    OrphanStopper,
    StepLaunch,
    StepLauncher,
    create_step_tasks,
    launch_options,
    launch_steps,
    launchers_by_runtime,
    starts_with_create,
    step_launch,
)
from flowledger.flows.step_outcomes import ProgressCallback, StepEvent, StepOutcomes, step_status_of
from flowledger.flows.steps import step_run_id
from flowledger.tasks.core.clock import coerce_time, to_ms
from flowledger.tasks.core.errors import FlowledgerError, FlowNotFoundError, InvalidInputError
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import Runtime
from flowledger.tasks.runs import liveness

# The controller's public names, wherever they live now (the split of issue 13 kept every import working).
__all__ = ["POLL_INTERVAL_S", "SAVE_EVERY_S", "STATE_VERSION", "BatchStepLauncher", "GraphController", "Launchers",
           "OrphanStopper", "ProgressCallback", "StepEvent", "StepLaunch", "StepLauncher", "define_flow",
           "driver_of", "initial_state", "launch_options", "launchers_by_runtime", "resume_graph_flows", "run_flow",
           "step_status_of"]

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.02
# The state document grows with the flow; writing it at most this often keeps big flows O(steps) overall.
SAVE_EVERY_S = 0.25
_SAVE_ATTEMPTS = 20


def run_flow(ledger: Ledger, definition: FlowDefinition, launcher: Launchers, *,
             on_progress: ProgressCallback | None = None, poll_interval: float = POLL_INTERVAL_S) -> Flow:
    """Define the flow and drive it to its end in this thread; returns the final flow."""
    flow = define_flow(ledger, definition, driving=launchers_by_runtime(launcher)[0])
    return GraphController(ledger, flow, launcher, on_progress=on_progress, poll_interval=poll_interval,
                           definition=definition).run()


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


class _DisplacedError(Exception):
    """Another controller adopted the flow (our lease lapsed while we were still alive): stop driving it."""


class GraphController(StepOutcomes):
    def __init__(self, ledger: Ledger, flow: Flow, launcher: Launchers, *,
                 on_progress: ProgressCallback | None = None, poll_interval: float = POLL_INTERVAL_S,
                 definition: FlowDefinition | None = None) -> None:
        """`definition`: the one the flow's state was written from, when the caller holds it (`run_flow`):
        parsing the stored document again costs more than driving a big flow's steps."""
        state = flow.state if isinstance(flow.state, dict) else None
        if state is None or state.get("version") != STATE_VERSION or "definition" not in state:
            raise InvalidInputError(f"Flow {flow.flow_id} is not a graph flow (no step state).")
        self.ledger = ledger
        self.flow = flow
        self.launcher, self.launchers = launchers_by_runtime(launcher)
        self.context = submission.from_document(state.get("context"))
        self.on_progress = on_progress
        self.poll_interval = poll_interval
        self.definition = definition or flow_from_document(state["definition"], source=f"flow {flow.flow_id}")
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
        self.driver = launcher_driver(self.ledger, self.launcher)
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
        self.driver = launcher_driver(self.ledger, self.launcher)
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

    def run(self) -> Flow:
        if not self.claim():
            return self.ledger.flows.get_by_id(self.flow.flow_id) or self.flow
        self._announce()  # a flow defined running (define_flow's `driving`) was never claimed
        try:
            return self._drive()
        except _DisplacedError:
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
        with self.ledger.db.read() as conn:  # the head only (the state document can be large), then the tasks
            head = flow_store.head(conn, self.flow.flow_id)
            going = head is not None and head.cancel_requested_at is None and not head.is_link_terminal
            running = self._running_tasks(conn) if going else None
        if head is None:
            raise FlowNotFoundError(self.flow.flow_id)
        if running is None:
            return self._stop(), True
        changed = self._collect(running)
        if self.readiness.is_done():
            return self._conclude(), True
        changed = self._start_ready() or changed
        if changed:
            self._save()
        elif self._dirty:
            self._save(force=True)
        return None, changed

    # --- steps ----------------------------------------------------------------------------------------

    def _start_ready(self) -> bool:
        """Start every step ready now. Steps for a batch launcher get their tasks in one transaction and go to
        it in one call; any other step is created and launched alone, so a cancel request made while one step
        starts (its launcher may take a while) is seen before the next step's task is created."""
        ready = [self.definition.step(step_id) for step_id in self._ready_now()]
        together = [s for s in ready if isinstance(self._launcher_for(s.runtime), BatchStepLauncher)]
        started = False
        for step in ready:
            if step not in together:
                if not self._start_steps([step]):
                    return started
                started = True
        for at_create in (False, True):  # steps whose launcher records their start, then those it leaves to us
            group = [s for s in together if starts_with_create(self._launcher_for(s.runtime)) == at_create]
            if group:
                started = self._start_steps(group, start=at_create) or started
        return started

    def _start_steps(self, steps: list[StepDefinition], *, start: bool = False) -> bool:
        """Create the steps' tasks in one transaction (`start`: recorded running in it too), then hand them to
        their launchers; False when the flow refused them (a cancel request or a terminal flow: the loop
        notices next turn)."""
        run_ids = [step_run_id(self.flow.flow_id, step.id,
                               self.base.get(step.id, 0) + self.readiness.attempts(step.id) + 1) for step in steps]
        made = create_step_tasks(self.ledger, self.flow.flow_id, list(zip(steps, run_ids, strict=True)),
                                 start=start)
        if made.refusal is not None:
            log.info("flow %s: step %s not started: %s", self.flow.flow_id, ", ".join(s.id for s in steps),
                     made.refusal)
            return False
        launches = []
        for step, task in zip(steps, made.tasks, strict=True):
            self.not_before.pop(step.id, None)
            self.readiness.mark_started(step.id)
            self.task_ids[step.id] = task.task_id
            self._started_at[step.id] = self.ledger.clock.now()
            self._emit("step_started", step.id, task)
            launches.append((step_launch(step, task, self.context), self._launcher_for(step.runtime), step.id))
        launch_steps(self.ledger, self.flow.flow_id, launches)
        return True

    def _launcher_for(self, runtime: Runtime) -> StepLauncher | None:
        return self.launcher if self.launchers is None else self.launchers.get(runtime)

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
            raise FlowNotFoundError(self.flow.flow_id)
        self.flow = flow
        return flow

    def _retrying(self, op: Callable[[Flow], Any]) -> Flow | None:
        """Run a revision-checked op on the latest flow; a cancel request racing us only costs a retry."""
        # First on the flow as we last wrote it: task writes never move a managed flow's revision, so only
        # another flow writer (a cancel request, an adopter) makes this a conflict, and then we read the latest.
        # Reading the whole flow first on every save cost more than the save (its state document is large).
        flow = self.flow
        for _ in range(_SAVE_ATTEMPTS):
            result = op(flow)
            if result.applied:
                self.flow = result.flow
                return result.flow  # type: ignore[no-any-return]
            if result.reason != "revision_conflict":
                raise FlowledgerError(f"Flow {flow.flow_id} update failed: {result.reason}.")
            flow = self._reload()
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
                raise _DisplacedError(f.flow_id)
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
