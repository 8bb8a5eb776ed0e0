"""Running a flow in this process with live progress: what `tasks flow run` and `tasks flow retry` share."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowledger.cli.render import cut, err, safe
from flowledger.flows.models import Flow, FlowStatus
from flowledger.tasks.core.errors import OperationRefusedError
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import FAILURES, Runtime

if TYPE_CHECKING:  # the file format and the controller (SQLAlchemy) load when a flow runs
    from flowledger.flows.controller import StepEvent
    from flowledger.flows.definitions import FlowDefinition
    from flowledger.flows.ledger import Ledger


def origin_option(channel: str | None, to: str | None) -> dict[str, str] | None:
    """`--channel C --to T` as a requester origin; one without the other is a usage error."""
    if channel is None and to is None:
        return None
    if not (channel or "").strip() or not (to or "").strip():
        from flowledger.tasks.core.errors import InvalidInputError

        raise InvalidInputError("--channel and --to go together: give both (e.g. --channel webhook --to ops).")
    assert channel is not None and to is not None
    return {"channel": channel.strip(), "to": to.strip()}


def stored_definition(flow: Flow) -> FlowDefinition:
    """The definition a graph flow stored in its state (read back as a gateway would)."""
    from flowledger.flows.definitions import flow_from_document
    from flowledger.flows.steps import graph_state

    state = graph_state(flow)
    if state is None:
        raise OperationRefusedError(f"Flow {flow.flow_id} is not a graph flow.")
    return flow_from_document(state["definition"], source=f"flow {flow.flow_id}")


def drive_here(ledger: Ledger, *, live: bool, flow: Flow | None = None, definition: FlowDefinition | None = None,
               notify: str | None = None, origin: dict[str, str] | None = None) -> Flow:
    """Drive a graph flow to its end in this process, each step on its runtime: a new one from `definition`
    (defined running, driven by this process), or a retried `flow` (queued)."""
    try:
        from flowledger.scheduler.runtimes.acp import AcpRuntime
        from flowledger.scheduler.runtimes.cli import CliRuntime
        from flowledger.scheduler.runtimes.subagent import SubagentRuntime
    except ImportError as exc:
        raise OperationRefusedError(f"Cannot run flows here: the runtimes are unavailable ({exc}). "
                               "Use --detach to hand the flow to a gateway.") from None
    from flowledger.flows.controller import GraphController, StepLauncher, define_flow

    # One lease (the cli runtime's) backs every step this process runs, whatever its runtime.
    cli = CliRuntime(ledger)
    agents: dict[Runtime, SubagentRuntime | AcpRuntime] = {
        Runtime.SUBAGENT: SubagentRuntime(ledger, gateway_id=cli.gateway_id),
        Runtime.ACP: AcpRuntime(ledger, gateway_id=cli.gateway_id)}
    launchers: dict[Runtime, StepLauncher] = {Runtime.CLI: cli, **agents}
    for runtime, adapter in agents.items():  # a cancel in this process reaches the live agent
        ledger.tasks.cancel_adapters[runtime] = adapter
    if flow is None:
        assert definition is not None
        # One write: the whole submission, or none of it.
        flow = define_flow(ledger, definition, driving=cli, notify=notify, origin=origin)
    else:  # a retried flow, queued: the controller claims it
        definition = stored_definition(flow)
    progress = _LiveProgress(definition, flow) if live else None
    try:
        controller = GraphController(ledger, flow, launchers, on_progress=progress.update if progress else None)
        try:
            return controller.run()
        except KeyboardInterrupt:
            err(f"Interrupted: cancelling flow {flow.flow_id}.")
            ledger.flows.cancel(flow.flow_id)
            raise
    finally:
        if progress is not None:
            progress.close()
        for agent in agents.values():
            agent.shutdown()
        cli.shutdown()


def retry_line(event: StepEvent) -> str:
    """`↻ unit-tests attempt 2/3 failed: exit 1 — <last stderr line>`."""
    step = safe(event.step_id or "")
    error = (event.task.error if event.task else None) or ""
    head, _, rest = error.partition(": ")
    head = head.replace("exit code ", "exit ", 1) if head.startswith("exit code ") else head
    lines = [line for line in rest.strip().splitlines() if line.strip()]
    detail = f"{head} — {lines[-1].strip()}" if lines else head
    text = f"↻ {step} attempt {event.attempt}/{event.max_attempts} {event.status}"
    return safe(f"{text}: {detail}" if detail else text)


def run_summary(flow: Flow, tasks: list[Task]) -> list[str]:
    from flowledger.flows.steps import step_views, why_not_succeeded

    views = step_views(flow, tasks) or []
    counts = {status: sum(v.status == status for v in views) for status in ("succeeded", "cancelled")}
    failed = sum(v.status in {s.value for s in FAILURES} for v in views)
    attempts = sum(v.attempts for v in views)
    lines = [f"Flow {flow.flow_id} {flow.status.value}: {safe(flow.goal)}",
             f"Steps: {counts['succeeded']} succeeded · {failed} failed · {counts['cancelled']} cancelled · "
             f"{len(views)} steps ({attempts} attempts)"]
    why = why_not_succeeded(flow, views)
    if why:
        lines.append(f"Reason: {safe(why)}")
    lines.append(f"Details: flowledger tasks flow show {flow.flow_id}")
    lines.append(f"Logs: flowledger tasks flow logs {flow.flow_id}")
    if flow.status in (FlowStatus.FAILED, FlowStatus.CANCELLED, FlowStatus.LOST):
        lines.append(f"Retry: flowledger tasks flow retry {flow.flow_id}")
    return lines


class _LiveProgress:
    """A rich progress bar for the flow (steps, not attempts; red when the flow did not succeed) and one stderr
    line per step start, retry and end."""

    def __init__(self, definition: FlowDefinition, flow: Flow) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True, highlight=False)
        self.bar_column = BarColumn()
        self.progress = Progress(TextColumn("{task.description}"), self.bar_column, MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=self.console, transient=False)
        self.bar = self.progress.add_task(self._escape(cut(definition.goal, 60)), total=len(definition.steps))
        self.progress.start()
        self.console.print(f"Flow {flow.flow_id}: {self._escape(safe(definition.goal))}", markup=False)

    @staticmethod
    def _escape(text: str) -> str:
        from rich.markup import escape

        return escape(text)

    def update(self, event: StepEvent) -> None:
        self.progress.update(self.bar, completed=event.done, total=event.total)
        step = safe(event.step_id or "")
        task = event.task.task_id if event.task else ""
        if event.kind == "step_started":
            self.console.print(f"▶ {step} started (task {task})", markup=False)
        elif event.kind == "step_retry":
            self.console.print(retry_line(event), markup=False)
        elif event.kind == "step_finished":
            mark = "✔" if event.status == "succeeded" else "✖"
            self.console.print(f"{mark} {step} {event.status}", markup=False)
        elif event.kind == "flow_finished" and event.flow.status != FlowStatus.SUCCEEDED:
            # The bar ends red at the steps that succeeded: a failed flow never looks complete and green.
            state = event.flow.state if isinstance(event.flow.state, dict) else {}
            steps = state.get("steps") or {}
            succeeded = sum(1 for entry in steps.values() if entry.get("status") == "succeeded")
            self.bar_column.complete_style = self.bar_column.finished_style = "red"
            self.progress.update(self.bar, completed=succeeded)
            self.progress.refresh()

    def close(self) -> None:
        self.progress.stop()
