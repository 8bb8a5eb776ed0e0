"""The graph controller hands each step to the runtime its file names, with the flow's submission context,
on both engines; a step whose runtime is not served, or whose launcher refuses it, fails at once naming the
step. A recording launcher per runtime stands in for the real runtimes (tests/e2e run those)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flowledger import Ledger, Task
from flowledger.flows.context import SubmissionContext
from flowledger.flows.controller import GraphController, StepLauncher, define_flow
from flowledger.flows.definitions import parse_flow
from flowledger.flows.models import FlowStatus
from flowledger.tasks.core.errors import InvalidInput
from flowledger.tasks.core.states import Runtime, TaskStatus

FLOW = """
[flow]
goal = "mixed"
[[step]]
id = "build"
run = ["./build.sh"]
cwd = "src"
env = { STEP = "1" }
[[step]]
id = "review"
runtime = "subagent"
needs = ["build"]
run = ["reviewer"]
[[step]]
id = "ask"
runtime = "acp"
needs = ["build"]
prompt = "What changed?"
mode = "persistent"
run = ["agent", "--stdio"]
"""


class Recording:
    """Starts nothing: records the call and ends the task succeeded (or refuses, when told to)."""

    def __init__(self, ledger: Ledger, refuse: str | None = None) -> None:
        self.ledger = ledger
        self.refuse = refuse
        self.calls: list[tuple[Task, list[str], dict[str, Any]]] = []

    def start(self, task: Task, argv: list[str], *, shell: bool, timeout: timedelta | None, cwd: str | None,
              env: dict[str, str] | None, **options: Any) -> None:
        self.calls.append((task, argv, {"cwd": cwd, "env": env, **options}))
        if self.refuse is not None:
            raise InvalidInput(self.refuse)
        assert task.run_id is not None
        self.ledger.tasks.start(task.run_id)
        self.ledger.tasks.complete(task.run_id)


def _drive(ledger: Ledger, launchers: dict[Runtime, StepLauncher],
           context: SubmissionContext | None = None) -> Any:
    flow = define_flow(ledger, parse_flow(FLOW), context)
    return GraphController(ledger, flow, launchers, poll_interval=0.001).run()


def test_each_step_runs_on_its_own_runtime_with_the_submission_context(ledger: Ledger) -> None:
    cli, sub, acp = Recording(ledger), Recording(ledger), Recording(ledger)
    context = SubmissionContext("/work/repo", {"PATH": "/usr/bin", "STEP": "0"})
    flow = _drive(ledger, {Runtime.CLI: cli, Runtime.SUBAGENT: sub, Runtime.ACP: acp}, context)
    assert flow.status == FlowStatus.SUCCEEDED
    [(build, argv, options)] = cli.calls
    assert build.runtime == Runtime.CLI and argv == ["./build.sh"]
    assert options == {"cwd": "/work/repo/src", "env": {"PATH": "/usr/bin", "STEP": "1"}, "inherit_env": False}
    [(review, _, options)] = sub.calls
    assert review.runtime == Runtime.SUBAGENT and review.task == "review"  # a subagent's prompt: its label
    assert review.child_session_key == f"agent:main:subagent:{review.task_id}"
    assert options["cwd"] == "/work/repo" and options["inherit_env"] is False
    [(ask, argv, options)] = acp.calls
    assert ask.runtime == Runtime.ACP and ask.task == "What changed?" and argv == ["agent", "--stdio"]
    assert ask.child_session_key == f"agent:main:acp:{ask.task_id}" and options["mode"] == "persistent"
    assert flow.state["context"] == context.to_document()  # stored for any later driver (adoption, retry)


def test_a_foreground_flow_keeps_the_drivers_directory_and_environment(ledger: Ledger) -> None:
    cli, sub, acp = Recording(ledger), Recording(ledger), Recording(ledger)
    _drive(ledger, {Runtime.CLI: cli, Runtime.SUBAGENT: sub, Runtime.ACP: acp})
    [(_, _, options)] = cli.calls
    assert options == {"cwd": "src", "env": {"STEP": "1"}}


def test_a_step_without_a_runtime_here_fails_at_once_naming_the_step(ledger: Ledger) -> None:
    cli, sub = Recording(ledger), Recording(ledger, refuse="program 'reviewer' not found on PATH")
    flow = _drive(ledger, {Runtime.CLI: cli, Runtime.SUBAGENT: sub})
    assert flow.status == FlowStatus.FAILED
    tasks = {t.label: t for t in ledger.flows.linked_tasks(flow.flow_id)}
    assert tasks["review"].status == TaskStatus.FAILED
    assert tasks["review"].error == "Step 'review' could not start: program 'reviewer' not found on PATH"
    assert tasks["ask"].status == TaskStatus.FAILED
    assert tasks["ask"].error == "Step 'ask' could not start: no acp runtime here to run it"
    assert not [t for t in tasks.values() if t.status in (TaskStatus.QUEUED, TaskStatus.RUNNING)]
