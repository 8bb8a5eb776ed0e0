"""Maintenance of the session registry: ACP session repair (REFERENCE §6.5 step 3 and the orphan pass) and
pruning of stale isolated-cron run rows (REFERENCE §6.6).

Closing an ACP session removes its registry row, bindings included: the row is the session's only durable
state here. Both passes walk the `sessions` table in keyset batches and count in preview; only `apply` writes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, select

from flowledger.tasks.core.db import Database
from flowledger.tasks.core.sessionkeys import cron_run_job_id
from flowledger.tasks.core.states import ACTIVE
from flowledger.tasks.core.tables import sessions, task_runs

SESSION_RETENTION = timedelta(days=7)
BATCH = 500


@dataclass
class SessionPruneCounts:
    retention_ms: int = int(SESSION_RETENTION.total_seconds() * 1000)
    running_cron_jobs: int = 0
    pruned: int = 0
    preserved_running: int = 0

    def to_json(self) -> dict[str, int]:
        return {"retention_ms": self.retention_ms, "running_cron_jobs": self.running_cron_jobs,
                "pruned": self.pruned}


@dataclass
class AcpRepairCounts:
    terminal_task_cleanup: int = 0
    orphaned_parent_task_cleanup: int = 0

    def to_json(self) -> dict[str, int]:
        return {"terminal_task_cleanup": self.terminal_task_cleanup,
                "orphaned_parent_task_cleanup": self.orphaned_parent_task_cleanup}


def _unbound(text: str | None) -> bool:
    """No conversation binding still open; an unreadable binding list counts as bound."""
    if text is None:
        return True
    try:
        bindings = json.loads(text)
    except ValueError:
        return False
    if not isinstance(bindings, list):
        return False
    return all(isinstance(b, dict) and b.get("status") == "ended" for b in bindings)


def acp_close_reason(row: Any, active_keys: set[str], owners: set[str]) -> str | None:
    """Why this ACP session row should be closed, or None to keep it (pure)."""
    if row.acp_json is None or row.session_key in active_keys:
        return None
    parents = {p for p in (row.spawned_by, row.parent_session_key) if p}
    if not parents:
        return None
    if row.mode != "oneshot" and not _unbound(row.bindings_json):
        return None
    return "terminal-task-cleanup" if parents & owners else "orphaned-parent-task-cleanup"


def repair_acp_sessions(db: Database, *, apply: bool) -> AcpRepairCounts:
    """Close parent-owned ACP sessions no active task uses: one-shot, or with no open binding."""
    counts = AcpRepairCounts()
    after = ""
    while True:
        with db.read() as conn:
            rows = conn.execute(select(sessions).where(and_(sessions.c.session_key > after,
                                                            sessions.c.acp_json.is_not(None)))
                                .order_by(sessions.c.session_key).limit(BATCH)).all()
            if not rows:
                return counts
            keys = [r.session_key for r in rows]
            users = conn.execute(select(task_runs.c.child_session_key, task_runs.c.status, task_runs.c.owner_key,
                                        task_runs.c.requester_session_key)
                                 .where(task_runs.c.child_session_key.in_(keys))).all()
        after = keys[-1]
        active = {u[0] for u in users if u[1] in {s.value for s in ACTIVE}}
        owners_by_key: dict[str, set[str]] = {}
        for u in users:
            owners_by_key.setdefault(u[0], set()).update(x for x in (u[2], u[3]) if x)
        close: list[str] = []
        for row in rows:
            reason = acp_close_reason(row, active, owners_by_key.get(row.session_key, set()))
            if reason is None:
                continue
            close.append(row.session_key)
            if reason == "terminal-task-cleanup":
                counts.terminal_task_cleanup += 1
            else:
                counts.orphaned_parent_task_cleanup += 1
        if apply and close:
            db.transact(_closer(close))


def _closer(keys: list[str]) -> Callable[[Connection], None]:
    return lambda conn: _close(conn, keys)


def _close(conn: Connection, keys: list[str]) -> None:
    # Re-check inside the write: a task may have started using the session since the read.
    busy = {r[0] for r in conn.execute(select(task_runs.c.child_session_key).where(and_(
        task_runs.c.child_session_key.in_(keys), task_runs.c.status.in_([s.value for s in ACTIVE]))))}
    doomed = [k for k in keys if k not in busy]
    if doomed:
        conn.execute(delete(sessions).where(sessions.c.session_key.in_(doomed)))


def prune_cron_run_sessions(db: Database, now: datetime, running_jobs: set[str], *, apply: bool,
                            retention: timedelta = SESSION_RETENTION) -> SessionPruneCounts:
    """Remove `agent:<id>:cron:<jobId>:run:<x>` rows not updated for more than `retention`, keeping rows of
    running jobs, protected rows and every non-cron row."""
    counts = SessionPruneCounts(retention_ms=int(retention.total_seconds() * 1000),
                                running_cron_jobs=len(running_jobs))
    cutoff = now - retention
    after = ""
    while True:
        with db.read() as conn:
            rows = conn.execute(select(sessions.c.session_key, sessions.c.protected, sessions.c.updated_at)
                                .where(and_(sessions.c.session_key > after,
                                            sessions.c.session_key.like("agent:%:cron:%:run:%")))
                                .order_by(sessions.c.session_key).limit(BATCH)).all()
        if not rows:
            return counts
        after = rows[-1][0]
        doomed: list[str] = []
        for key, protected, updated_at in rows:
            job = cron_run_job_id(key)
            if job is None or protected:
                continue
            if job.lower() in running_jobs:
                counts.preserved_running += 1
                continue
            if updated_at < cutoff:
                doomed.append(key)
        counts.pruned += len(doomed)
        if apply and doomed:
            db.transact(_pruner(doomed, cutoff))


def _pruner(keys: list[str], cutoff: datetime) -> Callable[[Connection], None]:
    def prune(conn: Connection) -> None:
        # The cutoff again inside the write: a row touched since the read is no longer stale.
        conn.execute(delete(sessions).where(and_(sessions.c.session_key.in_(keys), sessions.c.updated_at < cutoff)))

    return prune
