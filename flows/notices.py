"""What a graph flow tells its owner (CONTRACT §7): its end, once per run, and under `state_changes` each step
attempt's end. The texts are documented in docs/delivery.md.

The driver only records a notice (tasks/delivery/outbox.py) and returns; a sender delivers it through §5b's channels to
the flow's `origin`, or queues it to the owner session when the flow has no direct route. Each notice has its own
idempotency key (`flow:<id>:run:<n>:end`, `flow:<id>:step:<step>:<attempt>`), so a driver that repeats itself —
an adopted flow, a retried write — never announces twice. Nothing here may stop the driver: failures are logged.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from flowledger.flows.models import Flow, FlowStatus
from flowledger.tasks.core.errors import FlowledgerError
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import NotifyPolicy
from flowledger.tasks.delivery import outbox
from flowledger.tasks.delivery.dispatch import delivery_hooks
from flowledger.tasks.delivery.rules import Owner, direct_possible

if TYPE_CHECKING:
    from flowledger.flows.ledger import Ledger

log = logging.getLogger(__name__)

_ENDINGS = {FlowStatus.SUCCEEDED: "succeeded", FlowStatus.FAILED: "failed", FlowStatus.CANCELLED: "was cancelled",
            FlowStatus.LOST: "was lost"}


def _one_line(text: str | None, limit: int = 300) -> str:
    line = " ".join((text or "").split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def flow_end_text(flow: Flow) -> str:
    """`Flow <goal> succeeded.` / `… failed: <why>.` / `… was cancelled.` with the flow id to look it up."""
    ending = _ENDINGS.get(flow.status, flow.status.value)
    why = f": {_one_line(flow.blocked_summary)}" if flow.status == FlowStatus.FAILED and flow.blocked_summary else ""
    return f"Flow \"{_one_line(flow.goal, 200)}\" {ending}{why}. (flow {flow.flow_id})"


def step_end_text(flow: Flow, step_id: str, attempt: int, task: Task) -> str:
    """`Flow <goal>: step <id> attempt <n> <status>[: <error>].`"""
    error = f": {_one_line(task.error)}" if task.error else ""
    return (f"Flow \"{_one_line(flow.goal, 200)}\": step {step_id} attempt {attempt} "
            f"{task.status.value.replace('_', ' ')}{error}. (flow {flow.flow_id})")


def run_number(flow: Flow) -> int:
    """Which run of a graph flow this is: 1, then one more per retry (flows/retry.py)."""
    state = flow.state if isinstance(flow.state, dict) else {}
    run = state.get("run")
    return run if isinstance(run, int) and run > 0 else 1


class FlowNotices:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def flow_ended(self, flow: Flow, run: int) -> None:
        """The end of one run of the flow, unless its policy is `silent`."""
        if flow.notify_policy == NotifyPolicy.SILENT or not flow.is_link_terminal:
            return
        self._record(flow, f"flow:{flow.flow_id}:run:{run}:end", flow.status.value, flow_end_text(flow))

    def graph_flow_ended(self, flow: Flow) -> None:
        """The end of a graph flow that no driver announced (a queued flow cancelled); the same key as the
        driver's, so a flow both end is announced once."""
        if isinstance(flow.state, dict) and "definition" in flow.state:
            self.flow_ended(flow, run_number(flow))

    def step_attempt_ended(self, flow: Flow, step_id: str, attempt: int, task: Task) -> None:
        """One step attempt's end, under `state_changes` only."""
        if flow.notify_policy != NotifyPolicy.STATE_CHANGES:
            return
        self._record(flow, f"flow:{flow.flow_id}:step:{step_id}:{attempt}", task.status.value,
                     step_end_text(flow, step_id, attempt, task))

    def _record(self, flow: Flow, key: str, status: str, text: str) -> None:
        origin = flow.requester_origin
        owner = Owner(flow.owner_key, origin, flow.flow_id)
        direct = direct_possible(owner)
        try:
            pending = self.ledger.db.transact(lambda conn: outbox.record(
                conn, self.ledger.clock.now(), key=key, kind=outbox.MESSAGE, subject_id=flow.flow_id,
                subject_status=status, session_key=flow.owner_key, origin=origin, text=text, fallback=True,
                direct=direct))
            hooks = delivery_hooks(self.ledger.tasks)
            if pending and hooks is not None:
                hooks.kick()
        except FlowledgerError as exc:
            log.warning("flow %s: notice %s not recorded: %s", flow.flow_id, key, exc.message)
