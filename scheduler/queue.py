"""The work queue: `flowledger run` records a queued task with what it runs; a gateway claims it once.

The payload and the claim are kept by the run registry (tasks/runs/queue.py: written before the task, claimed
in one transaction with `SKIP LOCKED` / `BEGIN IMMEDIATE`); this module shapes the task that goes with them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from flowledger.flows.ledger import Ledger
from flowledger.scheduler.submission import check_submission, cli_task_fields, describe
from flowledger.tasks.core.errors import InvalidInputError
from flowledger.tasks.core.ids import new_id
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import NotifyPolicy, Runtime
from flowledger.tasks.runs.queue import Payload

__all__ = ["Payload", "claim", "describe", "enqueue", "get_payload"]


def enqueue(ledger: Ledger, argv: Sequence[str], *, label: str | None = None, session_key: str | None = None,
            timeout: timedelta | None = None, shell: bool = False, cwd: str | None = None,
            runtime: Runtime | str = Runtime.CLI, task_text: str | None = None, agent_id: str = "main",
            notify_policy: NotifyPolicy | str | None = None, requester_origin: Mapping[str, Any] | None = None
            ) -> Task:
    """Record queued work and what it runs; a gateway (or `run` in-process) claims it.

    `cli`: argv is the command (run id `cli:<task id>`, system scope unless a session key is given); it is
    `silent` unless `notify_policy` says otherwise, and a silent one's delivery is `not_applicable` (nothing is
    ever due, so nothing stays `pending`).
    `subagent` / `acp`: argv is the child (a `module:function` target or a command; for acp the agent's
    command) and `task_text` the task; a session key is required and a child session key is assigned.
    """
    rt = Runtime(runtime)
    if not argv or not all(isinstance(a, str) for a in argv) or not argv[0].strip():
        raise InvalidInputError("Nothing to run: give the command after `--`, e.g. `flowledger run -- echo hi`.")
    if rt == Runtime.CRON:
        raise InvalidInputError("Cron runs are started by their job's schedule, not queued.")
    if rt != Runtime.CLI and not session_key:
        raise InvalidInputError(f"A {rt.value} task needs the requester's session key.")
    check_submission(argv, label=label, session_key=session_key, task_text=task_text, shell=shell)
    task_id = new_id()
    ledger.runs.queue.add(task_id, argv, shell=shell, timeout=timeout, cwd=cwd)
    if rt == Runtime.CLI:
        task = ledger.tasks.create(**cli_task_fields(
            task_id, argv, label=label, session_key=session_key, shell=shell, task_text=task_text,
            notify_policy=notify_policy, requester_origin=requester_origin))
    else:
        task = ledger.tasks.create(
            runtime=rt, task=task_text or describe(argv, shell), task_id=task_id, run_id=f"{rt.value}:{task_id}",
            source_id=task_id, label=label, owner_key=session_key, requester_session_key=session_key,
            child_session_key=f"agent:{agent_id}:{rt.value}:{task_id}", agent_id=agent_id,
            notify_policy=notify_policy, requester_origin=requester_origin,
        )
    if rt == Runtime.CLI:
        # Committed: a gateway on this host claims it now, not at its next poll. Agent tasks are left to the poll:
        # `run --runtime acp` records the session's mode after this returns, and the claim must not come first.
        ledger.runs.queue.wake_gateways()
    return task


def get_payload(ledger: Ledger, task_id: str) -> Payload | None:
    return ledger.runs.queue.payload(task_id)


def claim(ledger: Ledger, gateway_id: str, limit: int = 1, *, task_id: str | None = None
          ) -> list[tuple[Task, Payload]]:
    """Claim up to `limit` queued tasks that carry a payload for `gateway_id`, oldest first; each is claimed
    exactly once (tasks/runs/queue.py)."""
    return ledger.runs.queue.claim(gateway_id, limit, task_id=task_id)
