"""The `cli` work queue: `flowledger run` records a queued task with its argv; a gateway claims it once.

The payload row is written before the task row, so a gateway never sees a queued `cli` task without
knowing what to run. A claim is one transaction: pick a queued task (PostgreSQL: `FOR UPDATE SKIP LOCKED`,
so two gateways never wait on each other; SQLite: `BEGIN IMMEDIATE` serialises writers), compare-and-set
it queued → running, stamp the payload with the claiming gateway and register the run context, so there is
no moment where the task runs without backing.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, insert, select, update

from flowledger.flows.ledger import Ledger
from flowledger.tasks import liveness, store
from flowledger.tasks.errors import InvalidInput
from flowledger.tasks.ids import new_id
from flowledger.tasks.models import Task
from flowledger.tasks.service import Changes
from flowledger.tasks.states import DeliveryStatus, NotifyPolicy, Runtime, TaskStatus
from flowledger.tasks.tables import task_payloads, task_runs


@dataclass(frozen=True, slots=True)
class Payload:
    task_id: str
    argv: list[str]
    shell: bool = False
    timeout: timedelta | None = None
    cwd: str | None = None
    claimed_by: str | None = None


def ensure_table(ledger: Ledger) -> None:
    """Databases created before the payload table existed get it here (the schema version is unchanged)."""
    task_payloads.create(ledger.db.engine, checkfirst=True)


def describe(argv: Sequence[str], shell: bool = False) -> str:
    return argv[0] if shell and len(argv) == 1 else shlex.join(argv)


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
        raise InvalidInput("Nothing to run: give the command after `--`, e.g. `flowledger run -- echo hi`.")
    if rt == Runtime.CRON:
        raise InvalidInput("Cron runs are started by their job's schedule, not queued.")
    task_id = new_id()
    timeout_ms = int(timeout.total_seconds() * 1000) if timeout is not None else None

    def write(conn: Connection) -> None:
        conn.execute(insert(task_payloads).values(task_id=task_id, argv_json=json.dumps(list(argv)), shell=shell,
                                                  timeout_ms=timeout_ms, cwd=cwd))

    ledger.db.transact(write)
    if rt == Runtime.CLI:
        policy = NotifyPolicy(notify_policy) if notify_policy else NotifyPolicy.SILENT
        return ledger.tasks.create(
            runtime=rt, task=task_text or describe(argv, shell), task_id=task_id, run_id=f"cli:{task_id}",
            source_id=task_id, label=label, owner_key=session_key, requester_session_key=session_key,
            notify_policy=policy, task_kind="command", requester_origin=requester_origin,
            delivery_status=DeliveryStatus.NOT_APPLICABLE if policy == NotifyPolicy.SILENT or not session_key
            else None,
        )
    if not session_key:
        raise InvalidInput(f"A {rt.value} task needs the requester's session key.")
    return ledger.tasks.create(
        runtime=rt, task=task_text or describe(argv, shell), task_id=task_id, run_id=f"{rt.value}:{task_id}",
        source_id=task_id, label=label, owner_key=session_key, requester_session_key=session_key,
        child_session_key=f"agent:{agent_id}:{rt.value}:{task_id}", agent_id=agent_id,
        notify_policy=notify_policy, requester_origin=requester_origin,
    )


def _payload(row: object) -> Payload:
    m = row._mapping  # type: ignore[attr-defined]
    return Payload(task_id=m["task_id"], argv=json.loads(m["argv_json"]), shell=bool(m["shell"]),
                   timeout=timedelta(milliseconds=m["timeout_ms"]) if m["timeout_ms"] else None,
                   cwd=m["cwd"], claimed_by=m["claimed_by"])


def get_payload(ledger: Ledger, task_id: str) -> Payload | None:
    with ledger.db.read() as conn:
        row = conn.execute(select(task_payloads).where(task_payloads.c.task_id == task_id)).first()
    return _payload(row) if row is not None else None


def claim(ledger: Ledger, gateway_id: str, limit: int = 1, *, task_id: str | None = None
          ) -> list[tuple[Task, Payload]]:
    """Claim up to `limit` queued tasks that carry a payload for `gateway_id`, oldest first; each is claimed
    exactly once."""
    if limit <= 0:
        return []
    claimed: list[tuple[Task, Payload]] = []

    def unit(conn: Connection, now: datetime) -> Changes:
        claimed.clear()
        stmt = (select(task_runs.c.task_id)
                .select_from(task_runs.join(task_payloads, task_payloads.c.task_id == task_runs.c.task_id))
                .where(and_(task_runs.c.status == TaskStatus.QUEUED.value, task_payloads.c.claimed_by.is_(None)))
                .order_by(task_runs.c.created_at, task_runs.c.seq).limit(limit))
        if task_id is not None:
            stmt = stmt.where(task_runs.c.task_id == task_id)
        if ledger.db.is_postgres:
            stmt = stmt.with_for_update(of=task_runs, skip_locked=True)
        changes: Changes = []
        for (tid,) in conn.execute(stmt).all():
            current = store.get(conn, tid)
            if current is None or current.run_id is None:
                continue
            new = current.replace(status=TaskStatus.RUNNING, started_at=current.started_at or now, last_event_at=now)
            change = ledger.tasks.apply(conn, current, new, expected={TaskStatus.QUEUED}, now=now)
            if change is None:
                continue
            conn.execute(update(task_payloads).where(task_payloads.c.task_id == tid)
                         .values(claimed_by=gateway_id, claimed_at=now))
            liveness.register_run(conn, current.run_id, gateway_id, now, task_id=tid)
            row = conn.execute(select(task_payloads).where(task_payloads.c.task_id == tid)).one()
            claimed.append((change.task, _payload(row)))
            changes.append(change)
        return changes

    ledger.tasks.run_unit(unit)
    return list(claimed)
