"""Leases, run contexts, child sessions, cancel checks and orphans: what a gateway and its runtimes persist.

A gateway holds a lease row it renews; each run it starts has a run context naming the gateway (and, once the
child exists, its pid). A run is live while its gateway's lease is fresh (CONTRACT §6.7), for every process
that reads the database. Every write method below is one transaction; reads never take a write lock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, and_, delete, select, update

from flowledger.tasks.core.clock import Clock
from flowledger.tasks.core.db import Database
from flowledger.tasks.core.errors import FlowledgerError
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.service import TaskService
from flowledger.tasks.core.states import ACTIVE, TaskStatus
from flowledger.tasks.core.tables import gateway_leases, run_contexts, sessions, task_runs
from flowledger.tasks.runs import liveness
from flowledger.tasks.runs.cron import CronRuns
from flowledger.tasks.runs.leader import Leadership
from flowledger.tasks.runs.queue import RunQueue

RESUMABLE_KINDS = ("subagent", "acp")


@dataclass(frozen=True, slots=True)
class Orphan:
    """A run context with a pid whose gateway's lease has expired."""

    run_id: str
    gateway_id: str
    task_id: str | None
    pid: int
    host: str
    owner_pid: int
    owner_started_at: datetime


@dataclass(frozen=True, slots=True)
class RunOwner:
    """Who runs `run_id`: its gateway, the host that gateway's lease names, and the child's pid if recorded."""

    gateway_id: str
    host: str | None
    pid: int | None


@dataclass(frozen=True, slots=True)
class Tombstoned:
    task_id: str
    session_key: str
    gateway_id: str


def tombstone_text(gateway_id: str) -> str:
    return f"restart recovery: gateway {gateway_id} stopped and the child could not be resumed"


class RunRegistry:
    def __init__(self, db: Database, clock: Clock, tasks: TaskService, state_dir: Path) -> None:
        self.db = db
        self.state_dir = state_dir
        self.clock = clock
        self.tasks = tasks
        self.queue = RunQueue(db, clock, tasks)
        self.cron = CronRuns(db, clock)

    # --- leases ---------------------------------------------------------------------------------------

    def renew_lease(self, gateway_id: str, *, host: str, pid: int, ttl: timedelta) -> None:
        """Create or extend `gateway_id`'s lease to now + ttl (one transaction); a released lease revives."""
        now = self.clock.now()
        self.db.transact(lambda conn: liveness.renew_lease(conn, gateway_id, now, host=host, pid=pid, ttl=ttl))

    def release_lease(self, gateway_id: str) -> None:
        """End the lease now (a clean stop): its runs stop counting as live at once."""
        now = self.clock.now()
        self.db.transact(lambda conn: liveness.release_lease(conn, gateway_id, now))

    def fresh_gateways(self) -> set[str]:
        """Ids of every gateway (or in-process runner) whose lease is fresh now."""
        now = self.clock.now()
        with self.db.read() as conn:
            return liveness.fresh_gateways(conn, now)

    # --- run contexts ---------------------------------------------------------------------------------

    def register_run(self, run_id: str, gateway_id: str, *, task_id: str | None = None,
                     pid: int | None = None) -> None:
        """Record (or re-point) the run context of `run_id` under `gateway_id`, with the child's pid once known."""
        now = self.clock.now()
        self.db.transact(lambda conn: liveness.register_run(conn, run_id, gateway_id, now, task_id=task_id,
                                                            pid=pid))

    def release_run(self, run_id: str) -> None:
        """Forget the run context (the run ended). Never raises: a failed release only leaves a context that
        stops counting once its gateway's lease lapses."""
        with contextlib.suppress(FlowledgerError):
            self.db.transact(lambda conn: liveness.release_run(conn, run_id))

    def begin_child(self, task: Task, gateway_id: str, *, kind: str, **session: Any) -> None:
        """A subagent or acp child: its session row (kind, parent = the requester, owned by `gateway_id`,
        tombstone and end cleared, plus `session` fields such as `mode` and `acp`) and its run context, together in one
        transaction, so a child never has one without the other."""
        assert task.child_session_key is not None and task.run_id is not None
        key, run_id, now = task.child_session_key, task.run_id, self.clock.now()

        def unit(conn: Connection) -> None:
            liveness.upsert_session(conn, key, now, agent_id=task.agent_id, kind=kind,
                                    parent_session_key=task.requester_session_key or task.owner_key,
                                    spawned_by=task.owner_key, gateway_id=gateway_id, tombstone=None,
                                    **{"ended_at": None, **session})
            liveness.register_run(conn, run_id, gateway_id, now, task_id=task.task_id)

        self.db.transact(unit)

    def update_session(self, session_key: str, **fields: Any) -> None:
        """Update (or create) a session row's fields and its `updated_at`; best effort, never raises."""
        now = self.clock.now()
        with contextlib.suppress(FlowledgerError):
            self.db.transact(lambda conn: liveness.upsert_session(conn, session_key, now, **fields))

    def session_mode(self, session_key: str) -> str | None:
        """The `mode` recorded on a session row (`oneshot`/`persistent`), None when there is no row or mode: how
        a runtime learns the mode an acp run was submitted with (`flowledger run --mode`)."""
        with self.db.read() as conn:
            session = liveness.get_session(conn, session_key, case_insensitive=False)
        return session.mode if session is not None else None

    def assign_run_id(self, task: Task, run_id: str) -> None:
        """Give a task without one its run id (guarded on its current status, one transaction)."""
        def unit(conn: Connection, now: datetime) -> Any:
            change = self.tasks.apply(conn, task, task.replace(run_id=run_id), expected={task.status}, now=now)
            return [change] if change else []

        self.tasks.run_unit(unit)

    # --- cancel checks --------------------------------------------------------------------------------

    def cancelled_among(self, task_ids: Collection[str]) -> set[str]:
        """Which of these tasks are recorded `cancelled` (by any process): their runtime then stops the work.
        A read that fails answers "none" (the next check asks again)."""
        if not task_ids:
            return set()
        try:
            with self.db.read() as conn:
                rows = conn.execute(select(task_runs.c.task_id).where(and_(
                    task_runs.c.task_id.in_(list(task_ids)), task_runs.c.status == TaskStatus.CANCELLED.value)))
                return {r[0] for r in rows}
        except FlowledgerError:
            return set()

    def is_cancelled(self, task_id: str) -> bool:
        return task_id in self.cancelled_among([task_id])

    # --- orphans --------------------------------------------------------------------------------------

    def expired_runs(self) -> list[Orphan]:
        """Run contexts with a pid whose gateway lease has expired (expires_at <= now), oldest first."""
        now = self.clock.now()
        stmt = select(run_contexts.c.run_id, run_contexts.c.gateway_id, run_contexts.c.task_id, run_contexts.c.pid,
                      gateway_leases.c.host, gateway_leases.c.pid, gateway_leases.c.started_at).select_from(
            run_contexts.join(gateway_leases, gateway_leases.c.gateway_id == run_contexts.c.gateway_id)
        ).where(and_(gateway_leases.c.expires_at <= now, run_contexts.c.pid.is_not(None))
                ).order_by(run_contexts.c.started_at)
        with self.db.read() as conn:
            return [Orphan(*row) for row in conn.execute(stmt).all()]

    def run_owner(self, run_id: str) -> RunOwner | None:
        """The gateway, host and pid of `run_id`'s context (None without a context or a lease row)."""
        stmt = (select(run_contexts.c.gateway_id, gateway_leases.c.host, run_contexts.c.pid)
                .select_from(run_contexts.join(gateway_leases,
                                               gateway_leases.c.gateway_id == run_contexts.c.gateway_id))
                .where(run_contexts.c.run_id == run_id))
        with self.db.read() as conn:
            row = conn.execute(stmt).first()
        return RunOwner(row[0], row[1], int(row[2]) if row[2] else None) if row is not None else None

    def forget_orphan(self, orphan: Orphan) -> None:
        """Delete a handled orphan's run context, unless another gateway re-registered that run since."""
        self.db.transact(lambda conn: conn.execute(delete(run_contexts).where(and_(
            run_contexts.c.run_id == orphan.run_id, run_contexts.c.gateway_id == orphan.gateway_id,
            run_contexts.c.pid == orphan.pid))))

    def tombstone_orphans(self, current_gateway: str) -> list[Tombstoned]:
        """Subagent/acp children whose gateway's lease is gone cannot be resumed (their process died with it):
        tombstone their session rows (one transaction), so the sweep marks their active tasks lost."""
        def unit(conn: Connection) -> list[Tombstoned]:
            now = self.clock.now()
            fresh = liveness.fresh_gateways(conn, now) | {current_gateway}
            rows = conn.execute(select(sessions.c.session_key, sessions.c.gateway_id).where(and_(
                sessions.c.kind.in_(RESUMABLE_KINDS), sessions.c.tombstone.is_(None),
                sessions.c.gateway_id.is_not(None)))).all()
            done: list[Tombstoned] = []
            for key, gateway_id in rows:
                if gateway_id in fresh:
                    continue
                active = conn.execute(select(task_runs.c.task_id).where(and_(
                    task_runs.c.child_session_key == key,
                    task_runs.c.status.in_([s.value for s in ACTIVE])))).first()
                if active is None:
                    continue
                conn.execute(update(sessions).where(sessions.c.session_key == key)
                             .values(tombstone=tombstone_text(gateway_id), updated_at=now))
                done.append(Tombstoned(active[0], key, gateway_id))
            return done

        return self.db.transact(unit)

    # --- housekeeping ---------------------------------------------------------------------------------

    def leadership(self) -> Leadership:
        """A handle on the leader lock (leader.py); each gateway holds one."""
        return Leadership(self.db, self.state_dir)

    def checkpoint_quietly(self) -> None:
        """After a write failed for want of space: a checkpoint that never waits nor speaks (SQLite), so the next
        write can reuse the WAL from its start and a task can still end `failed`."""
        self.db.checkpoint_quietly()

    def checkpoint(self, mode: str = "PASSIVE") -> None:
        """A WAL checkpoint on SQLite (PASSIVE never waits on readers); nothing elsewhere. Never raises."""
        self.db.checkpoint(mode)
