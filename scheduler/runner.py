"""`flowledger run`: record a queued task and see it through — handed to a running gateway, or run in this
process when there is none. Either way the ledger records everything.

A `cli` run executes argv. An agent run (`subagent`, `acp`) starts argv as the agent and asks it `prompt` (the
task's text) in a child session of its own under `session_key` (default the main agent's session); an acp run's
`mode` is recorded with that session so whichever runtime claims the task runs it so."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flowledger.flows.definitions import ACP_MODES
from flowledger.flows.ledger import Ledger
from flowledger.scheduler import queue
from flowledger.scheduler.lease import gateway_running
from flowledger.scheduler.runtimes.acp import AcpRuntime, reserve_session
from flowledger.scheduler.runtimes.cli import CliRuntime
from flowledger.scheduler.runtimes.launch import LaunchFailedError
from flowledger.scheduler.runtimes.subagent import SubagentRuntime
from flowledger.tasks.core.errors import InvalidInputError
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import Runtime, is_terminal

POLL_S = 0.1
AGENT_SESSION = "agent:main:main"  # the requester of an agent run given no --session


@dataclass
class RunOutcome:
    task: Task
    handled_by: str  # "gateway" | "in-process" | "queued"


def run_command(ledger: Ledger, argv: Sequence[str], *, label: str | None = None, session_key: str | None = None,
                timeout: timedelta | None = None, detach: bool = False, shell: bool = False,
                kill_grace: timedelta = timedelta(seconds=5), runtime: Runtime | str = Runtime.CLI,
                prompt: str | None = None, mode: str | None = None, notify_policy: str | None = None,
                requester_origin: Mapping[str, Any] | None = None) -> RunOutcome:
    rt = Runtime(runtime)
    prompt = agent_prompt(rt, prompt, label, mode)
    if rt == Runtime.CLI:
        task = queue.enqueue(ledger, argv, label=label, session_key=session_key, timeout=timeout, shell=shell,
                             notify_policy=notify_policy, requester_origin=requester_origin)
    else:
        task = queue.enqueue(ledger, argv, label=label, session_key=session_key or AGENT_SESSION, timeout=timeout,
                             shell=shell, runtime=rt, task_text=prompt, notify_policy=notify_policy,
                             requester_origin=requester_origin)
        if rt == Runtime.ACP:
            reserve_session(ledger, task, mode or "oneshot")
    if gateway_running(ledger):
        if detach:
            return RunOutcome(task, "gateway")
        return RunOutcome(_follow(ledger, task.task_id), "gateway")
    if detach:
        return RunOutcome(task, "queued")
    cli = CliRuntime(ledger, kill_grace=kill_grace)  # its lease backs the run, whatever the runtime
    agent = _agent_runtime(ledger, rt, cli.gateway_id, kill_grace)
    try:
        cli.ensure_backing()
        claimed = queue.claim(ledger, cli.gateway_id, 1, task_id=task.task_id)
        if not claimed:  # a gateway appeared and took it: follow the record instead
            return RunOutcome(_follow(ledger, task.task_id), "gateway")
        current, payload = claimed[0]
        runner = agent or cli
        try:
            runner.start(current, payload.argv, shell=payload.shell, timeout=payload.timeout, cwd=payload.cwd)
        except LaunchFailedError as exc:  # nothing started: the claim's run context goes, the task fails
            assert current.run_id is not None
            cli.forget(current.run_id)
            ledger.tasks.fail(current.run_id, error=f"cannot start: {exc.message}", runtime=rt)
            return RunOutcome(ledger.tasks.require(task.task_id), "in-process")
        done = runner.wait(task.task_id)
        failure = cli.failure(task.task_id)
        if failure is not None:  # e.g. the disk filled up: exit 3 with that one line, not the task's status
            raise failure
        return RunOutcome(done or ledger.tasks.require(task.task_id), "in-process")
    finally:
        if agent is not None:
            agent.shutdown(reason="Cancelled: `flowledger run` was interrupted.")
        cli.shutdown(reason="Cancelled: `flowledger run` was interrupted.")


def agent_prompt(runtime: Runtime, prompt: str | None, label: str | None, mode: str | None) -> str | None:
    """The prompt an agent run asks (a subagent's defaults to its label); refuses what the runtime cannot use."""
    if runtime == Runtime.CRON:
        raise InvalidInputError("Cron runs are started by their job's schedule: use `flowledger cron add`.")
    if mode is not None and runtime != Runtime.ACP:
        raise InvalidInputError(f"--mode is for --runtime acp (a {runtime.value} run has no ACP session).")
    if mode is not None and mode not in ACP_MODES:
        raise InvalidInputError(f"Invalid --mode {mode!r}: expected one of {'|'.join(ACP_MODES)}.")
    if runtime == Runtime.CLI:
        if prompt is not None:
            raise InvalidInputError("--prompt is for --runtime acp|subagent (a cli run runs its command).")
        return None
    text = prompt if prompt is not None else (label if runtime == Runtime.SUBAGENT else None)
    if text is None or not text.strip():
        raise InvalidInputError(f"--runtime {runtime.value} needs --prompt TEXT (what the agent is asked).")
    return text


def _agent_runtime(ledger: Ledger, runtime: Runtime, gateway_id: str,
                   kill_grace: timedelta) -> SubagentRuntime | AcpRuntime | None:
    if runtime == Runtime.SUBAGENT:
        return SubagentRuntime(ledger, gateway_id=gateway_id, kill_grace=kill_grace)
    if runtime == Runtime.ACP:
        return AcpRuntime(ledger, gateway_id=gateway_id, kill_grace=kill_grace)
    return None


def _follow(ledger: Ledger, task_id: str) -> Task:
    """Wait for the gateway to finish the task; an interrupt cancels it (the gateway stops the child)."""
    try:
        return _wait_in_db(ledger, task_id)
    except KeyboardInterrupt:
        ledger.tasks.cancel(task_id, "Cancelled: `flowledger run` was interrupted.")
        raise


def _wait_in_db(ledger: Ledger, task_id: str) -> Task:
    while True:
        task = ledger.tasks.require(task_id)
        if is_terminal(task.status):
            return task
        time.sleep(POLL_S)
