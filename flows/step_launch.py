"""Starting a graph flow's ready steps: their tasks, created together, and their hand-over to the runtimes.

All the steps a controller turn starts get their tasks in ONE transaction (`create_step_tasks`): each task is
created exactly as `FlowService.run_task` would create it (the flow's owner, origin and session scope, the
parent-flow link check, run-id dedupe, its own `queued` event row), and the flow's refusal (a cancel request, a
terminal flow) is read inside that same transaction. A crash leaves all of the turn's tasks or none of them.

The tasks then go to their launchers. A launcher that can take several at once (`BatchStepLauncher`) gets the
turn's steps in one call, so it can record their starts, and later the ends of those that finish together, in one
transaction each (tasks/core/batch_transitions.py); any other launcher gets one `start` per step, as before.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import Connection, bindparam, select

from flowledger.flows import context as submission
from flowledger.flows import store as flow_store
from flowledger.flows.definitions import StepDefinition
from flowledger.flows.ledger import Ledger
from flowledger.flows.models import FlowStatus, parse_sync_mode
from flowledger.flows.service import run_refusal
from flowledger.tasks.core.batch_transitions import create_many_in_one
from flowledger.tasks.core.errors import (
    FlowledgerError,
    InvalidInputError,
    InvalidPersistedValueError,
    ParentFlowLinkError,
    StorageUnavailableError,
)
from flowledger.tasks.core.ids import new_id
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import DeliveryStatus, NotifyPolicy, Runtime
from flowledger.tasks.core.tables import flow_runs

log = logging.getLogger("flowledger.flows.controller")  # the controller's log, wherever its code lives


class StepLauncher(Protocol):
    """Runs one step's task without blocking; it moves the task to running and then to a terminal status
    (succeeded/failed/timed_out/cancelled) through `ledger.tasks`. `shell=True` means `argv == [command]`."""

    def start(self, task: Task, argv: list[str], *, shell: bool, timeout: timedelta | None, cwd: str | None,
              env: dict[str, str] | None) -> None: ...


@dataclass(frozen=True, slots=True)
class StepLaunch:
    """One step's task and what `StepLauncher.start` would be called with (`options`: cwd, env, …)."""

    task: Task
    argv: list[str]
    shell: bool
    timeout: timedelta | None
    options: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class BatchStepLauncher(Protocol):
    """A launcher that starts several steps in one call (the steps one controller turn made ready), so it can
    record their starts in one transaction. Raising fails every step of the call, as `start` raising fails its
    one step."""

    def start_batch(self, launches: Sequence[StepLaunch]) -> None: ...


def starts_with_create(launcher: object) -> bool:
    """A batch launcher with `starts_with_create = True` has its steps recorded running in the transaction
    that creates their tasks (as the cli runtime records a start before it spawns anything), so its
    `start_batch` gets running tasks and records only their ends: one transaction per step batch fewer."""
    return isinstance(launcher, BatchStepLauncher) and getattr(launcher, "starts_with_create", False) is True


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
            raise InvalidInputError("A flow controller needs at least one step launcher.")
        return launcher.get(Runtime.CLI) or next(iter(launcher.values())), launcher
    return launcher, None


def launch_options(step: StepDefinition) -> dict[str, Any]:
    """What a step's runtime takes beyond the common arguments: an acp step's session mode."""
    return {"mode": step.session_mode} if step.session_mode is not None else {}


def agent_fields(step: StepDefinition) -> dict[str, Any]:
    """An agent step's task runs in a child session of its own, named after the attempt's task id."""
    if step.runtime == Runtime.CLI:
        return {}
    task_id = new_id()
    return {"task_id": task_id, "child_session_key": f"agent:main:{step.runtime.value}:{task_id}"}


def one_line(exc: BaseException) -> str:
    text = exc.message if isinstance(exc, FlowledgerError) else str(exc) or type(exc).__name__
    return " ".join(text.split())


@dataclass(frozen=True, slots=True)
class StepTasks:
    """What `create_step_tasks` did: the tasks in the order asked, or why the flow took none."""

    tasks: list[Task]
    refusal: str | None = None


def create_step_tasks(ledger: Ledger, flow_id: str, steps: Sequence[tuple[StepDefinition, str]], *,
                      start: bool = False) -> StepTasks:
    """Create the task of each (step, run id) as a silent child of the managed flow, all in one transaction that
    also reads the flow: its refusal (a cancel request, a terminal flow), owner and delivery origin. `start`:
    record them running in that same transaction (for a launcher that `starts_with_create`)."""
    tasks = ledger.tasks

    def drafts(conn: Connection) -> list[Task]:
        row = conn.execute(_OPEN_FLOW, {"b_flow_id": flow_id}).first()
        if row is None:
            raise _RefusedError("Flow not found.")
        head = flow_store.FlowHead(flow_id, parse_sync_mode(row.sync_mode), row.owner_key,
                                   _flow_status(flow_id, row.status), 0, row.cancel_requested_at)
        if (reason := run_refusal(head)) is not None:
            raise _RefusedError(reason)
        origin = flow_store.stored_origin(row.requester_origin_json)
        # Step tasks stay silent (not_applicable): the flow speaks for them (flows/notices.py).
        return [tasks.draft(runtime=step.runtime, task=step.agent_prompt or step.command, owner_key=head.owner_key,
                            scope_kind="session", parent_flow_id=flow_id, requester_origin=origin,
                            label=step.display_label, run_id=run_id, notify_policy=NotifyPolicy.SILENT,
                            delivery_status=DeliveryStatus.NOT_APPLICABLE, status="queued", **agent_fields(step))
                for step, run_id in steps]

    try:
        return StepTasks(create_many_in_one(tasks, drafts, start=start))
    except _RefusedError as exc:
        return StepTasks([], exc.reason)
    except ParentFlowLinkError as exc:
        return StepTasks([], exc.message)
    except StorageUnavailableError:
        return StepTasks([], "Task persistence failed.")


# What a step batch reads of its flow, in the creating transaction (built once: see tasks/core/store.py).
_OPEN_FLOW = select(flow_runs.c.owner_key, flow_runs.c.sync_mode, flow_runs.c.status, flow_runs.c.cancel_requested_at,
                    flow_runs.c.requester_origin_json).where(flow_runs.c.flow_id == bindparam("b_flow_id"))


def _flow_status(flow_id: str, value: str) -> FlowStatus:
    try:
        return FlowStatus(value)
    except ValueError:
        raise InvalidPersistedValueError("flow", flow_id, "status", value) from None


class _RefusedError(Exception):
    """The flow refused new children when the creating transaction read it: nothing is written."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def launch_steps(ledger: Ledger, flow_id: str,
                 launches: Sequence[tuple[StepLaunch, StepLauncher | None, str]]) -> None:
    """Hand each (launch, launcher, step id) to its runtime: runs of consecutive steps for one batch launcher
    in one `start_batch`, any other one by one. A launcher that cannot take a step fails that step, never the
    controller."""
    index = 0
    while index < len(launches):
        launch, launcher, step_id = launches[index]
        if isinstance(launcher, BatchStepLauncher):
            end = index + 1
            while end < len(launches) and launches[end][1] is launcher:
                end += 1
            group = launches[index:end]
            try:
                launcher.start_batch([item[0] for item in group])
            except Exception as exc:  # a launcher that cannot start the steps fails those steps
                for item in group:
                    _failed_to_start(ledger, flow_id, item[0].task, item[2], exc)
            index = end
            continue
        try:
            if launcher is None:
                raise InvalidInputError(f"no {launch.task.runtime.value} runtime here to run it")
            launcher.start(launch.task, list(launch.argv), shell=launch.shell, timeout=launch.timeout,
                           **launch.options)
        except Exception as exc:  # a launcher that cannot start the step fails that step, not the controller
            _failed_to_start(ledger, flow_id, launch.task, step_id, exc)
        index += 1


def _failed_to_start(ledger: Ledger, flow_id: str, task: Task, step_id: str, exc: BaseException) -> None:
    error = f"Step {step_id!r} could not start: {one_line(exc)}"
    log.warning("flow %s: task %s: %s", flow_id, task.task_id, error)
    if task.run_id:
        with contextlib.suppress(FlowledgerError):  # it ended meanwhile: the collect reads what it became
            ledger.tasks.fail(task.run_id, error=error)


def step_launch(step: StepDefinition, task: Task, context: submission.SubmissionContext | None) -> StepLaunch:
    """The launch of `task` for `step`: a detached flow's steps run in its submitter's directory and environment,
    nothing else."""
    options: dict[str, Any] = {"cwd": step.cwd, "env": dict(step.env) or None}
    if context is not None:
        options = {"cwd": context.step_cwd(step.cwd), "env": context.step_env(step.env), "inherit_env": False}
    return StepLaunch(task, list(step.run), step.shell, step.timeout, {**options, **launch_options(step)})
