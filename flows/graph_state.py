"""A graph flow's stored step state: writing a new flow down for a controller, and who drives it.

The state lives in the flow's `state` document (its layout is described in flows/controller.py); this module
writes the first one (`define_flow`) and reads the driver's lease id back (`driver_of`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flowledger.flows import context as submission
from flowledger.flows.definitions import FlowDefinition
from flowledger.flows.graph import Readiness
from flowledger.flows.models import GRAPH_CONTROLLER, Flow, FlowStatus
from flowledger.flows.step_launch import StepLauncher
from flowledger.tasks.core.states import NotifyPolicy

if TYPE_CHECKING:
    from flowledger.flows.ledger import Ledger

STATE_VERSION = 1


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
        driver = launcher_driver(ledger, driving)
        if driver is not None:
            state["driver"] = driver
        status = FlowStatus.RUNNING
    where = origin if origin is not None else definition.origin
    return ledger.flows.create_managed(definition.owner, GRAPH_CONTROLLER, definition.goal, status=status,
                                       notify_policy=notify or definition.notify, state=state,
                                       requester_origin=dict(where) if where is not None else None)


def driver_of(flow: Flow) -> str | None:
    state = flow.state if isinstance(flow.state, dict) else {}
    driver = state.get("driver")
    return driver if isinstance(driver, str) and driver else None


def launcher_driver(ledger: Ledger, launcher: StepLauncher) -> str | None:
    """The lease id that vouches for this process: the launcher's (the cli runtime renews one), else the
    ledger's gateway id. Starting the launcher's backing first makes sure that lease is being renewed."""
    ensure = getattr(launcher, "ensure_backing", None)
    if callable(ensure):
        ensure()
    driver = getattr(launcher, "gateway_id", None) or ledger.gateway_id
    return driver if isinstance(driver, str) and driver else None
