"""The durable run queue: what a queued task runs (its payload), and claiming it exactly once.

The payload row is written before the task row, so a gateway never sees a queued task without knowing what to
run. A claim is one transaction: pick queued tasks that carry an unclaimed payload, oldest first (PostgreSQL:
`FOR UPDATE SKIP LOCKED`, so two gateways never wait on each other; SQLite: the write transaction's `BEGIN
IMMEDIATE` serialises claimers), compare-and-set each queued → running, stamp its payload with the claiming
gateway and register its run context, so there is no moment where a claimed task runs without backing.
Once the task is committed, its submitter wakes the gateways on this host (`wake_gateways`, wakeup.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, insert, select, update

from flowledger.tasks.core import store
from flowledger.tasks.core.clock import Clock
from flowledger.tasks.core.db import Database
from flowledger.tasks.core.hooks import Changes
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.service import TaskService
from flowledger.tasks.core.states import TaskStatus
from flowledger.tasks.core.tables import task_payloads, task_runs
from flowledger.tasks.runs import liveness, wakeup
from flowledger.tasks.runs.payload_rows import payload_values


@dataclass(frozen=True, slots=True)
class Payload:
    task_id: str
    argv: list[str]
    shell: bool = False
    timeout: timedelta | None = None
    cwd: str | None = None
    claimed_by: str | None = None


def _payload(row: Any) -> Payload:
    m = row._mapping
    return Payload(task_id=m["task_id"], argv=json.loads(m["argv_json"]), shell=bool(m["shell"]),
                   timeout=timedelta(milliseconds=m["timeout_ms"]) if m["timeout_ms"] else None,
                   cwd=m["cwd"], claimed_by=m["claimed_by"])


class RunQueue:
    def __init__(self, db: Database, clock: Clock, tasks: TaskService) -> None:
        self.db = db
        self.clock = clock
        self.tasks = tasks

    def add(self, task_id: str, argv: Sequence[str], *, shell: bool = False, timeout: timedelta | None = None,
            cwd: str | None = None) -> None:
        """Record what `task_id` will run (one transaction), before the task itself is created."""
        values = payload_values(task_id, argv, shell=shell, timeout=timeout, cwd=cwd)
        self.db.transact(lambda conn: conn.execute(insert(task_payloads).values(**values)))

    def wake_gateways(self) -> int:
        """Once a queued task is committed: cut short the poll of every gateway of this database on this host
        (wakeup.py), so it claims now rather than at its next poll. No database read; never raises for a gateway
        that cannot be reached (it polls). How many were reached."""
        return wakeup.wake(wakeup.database_identity(self.db.engine.url))

    def wake_listener(self, on_wake: Callable[[], None]) -> wakeup.WakeListener:
        """What a gateway listens on for `wake_gateways` (not started)."""
        return wakeup.WakeListener(wakeup.database_identity(self.db.engine.url), on_wake)

    def payload(self, task_id: str) -> Payload | None:
        with self.db.read() as conn:
            row = conn.execute(select(task_payloads).where(task_payloads.c.task_id == task_id)).first()
        return _payload(row) if row is not None else None

    def claim(self, gateway_id: str, limit: int = 1, *, task_id: str | None = None) -> list[tuple[Task, Payload]]:
        """Claim up to `limit` queued tasks that carry an unclaimed payload for `gateway_id` (only `task_id`
        when given), oldest first, in one transaction; each task is claimed by exactly one caller however many
        gateways claim at once. The claimed tasks are `running`, their run contexts registered."""
        if limit <= 0:
            return []
        claimed: list[tuple[Task, Payload]] = []

        def unit(conn: Connection, now: datetime) -> Changes:
            claimed.clear()  # the database may run this unit again after a lock error
            stmt = (select(task_runs.c.task_id)
                    .select_from(task_runs.join(task_payloads, task_payloads.c.task_id == task_runs.c.task_id))
                    .where(and_(task_runs.c.status == TaskStatus.QUEUED.value,
                                task_payloads.c.claimed_by.is_(None)))
                    .order_by(task_runs.c.created_at, task_runs.c.seq).limit(limit))
            if task_id is not None:
                stmt = stmt.where(task_runs.c.task_id == task_id)
            if self.db.is_postgres:
                stmt = stmt.with_for_update(of=task_runs, skip_locked=True)
            changes: Changes = []
            for (tid,) in conn.execute(stmt).all():
                current = store.get(conn, tid)
                if current is None or current.run_id is None:
                    continue
                new = current.replace(status=TaskStatus.RUNNING, started_at=current.started_at or now,
                                      last_event_at=now)
                change = self.tasks.apply(conn, current, new, expected={TaskStatus.QUEUED}, now=now)
                if change is None:
                    continue
                conn.execute(update(task_payloads).where(task_payloads.c.task_id == tid)
                             .values(claimed_by=gateway_id, claimed_at=now))
                liveness.register_run(conn, current.run_id, gateway_id, now, task_id=tid)
                row = conn.execute(select(task_payloads).where(task_payloads.c.task_id == tid)).one()
                claimed.append((change.task, _payload(row)))
                changes.append(change)
            return changes

        self.tasks.run_unit(unit)
        return list(claimed)
