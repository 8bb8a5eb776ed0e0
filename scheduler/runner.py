"""`flowledger run`: record a queued `cli` task and see it through — handed to a running gateway, or run
in this process when there is none. Either way the ledger records everything."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flowledger.flows.ledger import Ledger
from flowledger.scheduler import queue
from flowledger.scheduler.lease import gateway_running
from flowledger.scheduler.runtimes.cli import CliRuntime
from flowledger.tasks.models import Task
from flowledger.tasks.states import is_terminal

POLL_S = 0.1


@dataclass
class RunOutcome:
    task: Task
    handled_by: str  # "gateway" | "in-process" | "queued"


def run_command(ledger: Ledger, argv: Sequence[str], *, label: str | None = None, session_key: str | None = None,
                timeout: timedelta | None = None, detach: bool = False, shell: bool = False,
                kill_grace: timedelta = timedelta(seconds=5), notify_policy: str | None = None,
                requester_origin: Mapping[str, Any] | None = None) -> RunOutcome:
    queue.ensure_table(ledger)
    task = queue.enqueue(ledger, argv, label=label, session_key=session_key, timeout=timeout, shell=shell,
                         notify_policy=notify_policy, requester_origin=requester_origin)
    if gateway_running(ledger):
        if detach:
            return RunOutcome(task, "gateway")
        return RunOutcome(_follow(ledger, task.task_id), "gateway")
    if detach:
        return RunOutcome(task, "queued")
    runtime = CliRuntime(ledger, kill_grace=kill_grace)
    try:
        runtime.ensure_backing()
        claimed = queue.claim(ledger, runtime.gateway_id, 1, task_id=task.task_id)
        if not claimed:  # a gateway appeared and took it: follow the record instead
            return RunOutcome(_follow(ledger, task.task_id), "gateway")
        current, payload = claimed[0]
        runtime.start(current, payload.argv, shell=payload.shell, timeout=payload.timeout, cwd=payload.cwd)
        done = runtime.wait(task.task_id)
        return RunOutcome(done or ledger.tasks.require(task.task_id), "in-process")
    finally:
        runtime.shutdown(reason="Cancelled: `flowledger run` was interrupted.")


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
