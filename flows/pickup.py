"""Which graph flows a driver takes next: queued ones first (oldest first), then running ones whose driver's lease
expired (adoption, docs/flows.md "If the driver dies").

`pick_up` claims or adopts up to `limit` flows and returns their controllers, each ready for `run()` on a
thread of the caller's choosing: a gateway drives many at once (scheduler/flow_driver.py). Claiming moves a
queued flow to running and adoption swaps `state.driver`, both revision-checked, so when several gateways share
a database each flow is taken by exactly one of them.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from flowledger.flows.controller import POLL_INTERVAL_S, GraphController, Launchers, ProgressCallback, driver_of
from flowledger.flows.ledger import Ledger
from flowledger.flows.models import GRAPH_CONTROLLER, Flow, FlowStatus
from flowledger.tasks.core.errors import InvalidInputError
from flowledger.tasks.runs import liveness

log = logging.getLogger(__name__)


def pick_up(ledger: Ledger, launcher: Launchers, limit: int, *, busy: Collection[str] = (),
            on_progress: ProgressCallback | None = None,
            poll_interval: float = POLL_INTERVAL_S) -> list[GraphController]:
    """Claim queued graph flows, then adopt abandoned running ones, up to `limit` in all; flows in `busy` (this
    driver's own) are skipped, as is any flow another driver took first."""
    taken: list[GraphController] = []
    if limit <= 0:
        return taken

    def controller_for(flow: Flow) -> GraphController | None:
        try:
            return GraphController(ledger, flow, launcher, on_progress=on_progress, poll_interval=poll_interval)
        except InvalidInputError as exc:  # not a graph flow after all (a hand-made state): never ours to drive
            log.warning("flow %s skipped: %s", flow.flow_id, exc.message)
            return None

    for flow in reversed(ledger.flows.list(FlowStatus.QUEUED, controller_id=GRAPH_CONTROLLER)):
        if len(taken) >= limit:
            return taken
        if flow.flow_id in busy:
            continue
        controller = controller_for(flow)
        if controller is not None and controller.claim():
            taken.append(controller)
    running = [f for f in ledger.flows.list(FlowStatus.RUNNING, controller_id=GRAPH_CONTROLLER)
               if f.flow_id not in busy]
    if not running or len(taken) >= limit:
        return taken
    with ledger.db.read() as conn:  # one lease read per pass, however many flows run
        fresh = liveness.fresh_gateways(conn, ledger.clock.now())
    for flow in reversed(running):
        if len(taken) >= limit:
            break
        driver = driver_of(flow)
        if driver is None or driver in fresh:  # no recorded driver: nothing says it is gone, so never taken over
            continue
        controller = controller_for(flow)
        if controller is not None and controller.adopt():
            taken.append(controller)
    return taken
