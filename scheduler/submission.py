"""What `flowledger run` records for a command, without the database: the task text, the create fields of a
`cli` task, and which leases are gateways'.

Shared by scheduler/queue.py (the full path) and the lean SQLite door (cli/lean_writes.py), so `run --detach`
records the same task whichever door took it. No SQLAlchemy here.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from flowledger.tasks.core.draft_rules import TaskDraft
from flowledger.tasks.core.limits import check_label, check_session_key, check_text, escape_undecodable
from flowledger.tasks.core.states import DeliveryStatus, NotifyPolicy, Runtime

# A gateway's lease id starts so; an in-process `run` holds a lease under another prefix and claims only its own.
GATEWAY_PREFIX = "gw-"


def describe(argv: Sequence[str], shell: bool = False) -> str:
    """The task text for a command; bytes that were not UTF-8 are shown as `\\xNN` (the argv itself keeps them)."""
    return escape_undecodable(argv[0] if shell and len(argv) == 1 else shlex.join(argv))


def check_submission(argv: Sequence[str], *, label: str | None, session_key: str | None,
                     task_text: str | None, shell: bool) -> None:
    """The limits the task's create checks, checked before the payload is written: a refused task must not leave
    its payload row behind (the submission is whole or nothing)."""
    check_text(task_text or describe(argv, shell), "Task text")
    check_label(label.strip() if label else None)
    check_session_key(session_key.strip() if session_key else None)


def cli_task_fields(task_id: str, argv: Sequence[str], *, label: str | None, session_key: str | None, shell: bool,
                    task_text: str | None, notify_policy: NotifyPolicy | str | None,
                    requester_origin: Mapping[str, Any] | None) -> TaskDraft:
    """The create fields of a queued `cli` command: run id `cli:<task id>`, system scope unless a session key is
    given, `silent` unless told otherwise, and a silent one's delivery `not_applicable` (nothing is ever due)."""
    policy = NotifyPolicy(notify_policy) if notify_policy else NotifyPolicy.SILENT
    return TaskDraft(
        runtime=Runtime.CLI, task=task_text or describe(argv, shell), task_id=task_id, run_id=f"cli:{task_id}",
        source_id=task_id, label=label, owner_key=session_key, requester_session_key=session_key,
        notify_policy=policy, task_kind="command", requester_origin=requester_origin,
        delivery_status=DeliveryStatus.NOT_APPLICABLE if policy == NotifyPolicy.SILENT or not session_key
        else None,
    )


def any_gateway(lease_ids: Iterable[str]) -> bool:
    """Whether one of these fresh leases is a gateway's (which will claim queued work)."""
    return any(g.startswith(GATEWAY_PREFIX) for g in lease_ids)
