"""Cron jobs as stored, and the bookkeeping of their runs (REFERENCE §6.4's durable cron recovery reads it).

A run writes `cron_jobs.running_at` and its run context together when it begins, then the run-log entry and
the job's `last_*` columns (clearing `running_at`) before its task turns terminal, so a crash in between is
repaired by cron recovery. The schedule itself (triggers, next fire times) is the scheduler's business.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, insert, select

from flowledger.tasks.core import store
from flowledger.tasks.core.clock import Clock, to_ms
from flowledger.tasks.core.db import Database
from flowledger.tasks.core.errors import OperationRefusedError
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import Runtime
from flowledger.tasks.core.tables import cron_jobs, cron_run_log, task_runs
from flowledger.tasks.runs import liveness
from flowledger.tasks.runs.cron_controls import CronControls
from flowledger.tasks.sessions import sweep as session_sweep


def run_id_for(job_id: str, started_at: datetime) -> str:
    return f"cron:{job_id}:{to_ms(started_at)}"


def _ms(value: timedelta | None) -> int | None:
    return int(value.total_seconds() * 1000) if value is not None else None


@dataclass(frozen=True, slots=True)
class CronJobRecord:
    """One `cron_jobs` row."""

    job_id: str
    name: str
    schedule: str | None
    every: timedelta | None
    tz: str | None
    isolated: bool
    argv: list[str]
    agent_id: str
    created_at: datetime
    running_at: datetime | None = None
    last_run_at: datetime | None = None
    last_status: str | None = None
    last_error: str | None = None
    last_duration_ms: int | None = None
    timeout: timedelta | None = None


def _record(row: Any) -> CronJobRecord:
    m = row._mapping
    return CronJobRecord(
        job_id=m["job_id"], name=m["name"], schedule=m["schedule"],
        every=timedelta(milliseconds=m["every_ms"]) if m["every_ms"] else None, tz=m["tz"],
        isolated=bool(m["isolated"]), argv=json.loads(m["argv_json"]), agent_id=m["agent_id"],
        created_at=m["created_at"], running_at=m["running_at"], last_run_at=m["last_run_at"],
        last_status=m["last_status"], last_error=m["last_error"], last_duration_ms=m["last_duration_ms"],
        timeout=timedelta(milliseconds=m["timeout_ms"]) if m["timeout_ms"] is not None else None)


class CronRuns:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self.controls = CronControls(db, clock)  # pause, resume, trigger

    # --- jobs -----------------------------------------------------------------------------------------

    def add(self, job_id: str, name: str, argv: Sequence[str], *, schedule: str | None, every: timedelta | None,
            tz: str | None, isolated: bool, agent_id: str, timeout: timedelta | None) -> CronJobRecord:
        """Store a new job (one transaction); OperationRefusedError when the name is taken."""
        now = self.clock.now()

        def unit(conn: Connection) -> None:
            if conn.execute(select(cron_jobs.c.job_id).where(cron_jobs.c.name == name)).first() is not None:
                raise OperationRefusedError(f"Cron job already exists: {name}.")
            conn.execute(insert(cron_jobs).values(
                job_id=job_id, name=name, schedule=schedule, every_ms=_ms(every) if every else None, tz=tz,
                isolated=isolated, argv_json=json.dumps(list(argv)), agent_id=agent_id, created_at=now,
                timeout_ms=_ms(timeout)))

        self.db.transact(unit)
        job = self.find(job_id)
        assert job is not None
        return job

    def find(self, name_or_id: str) -> CronJobRecord | None:
        """The job with this name, else with this id."""
        with self.db.read() as conn:
            row = conn.execute(select(cron_jobs).where(cron_jobs.c.name == name_or_id)).first()
            if row is None:
                row = conn.execute(select(cron_jobs).where(cron_jobs.c.job_id == name_or_id)).first()
        return _record(row) if row is not None else None

    def jobs(self) -> list[CronJobRecord]:
        with self.db.read() as conn:
            return [_record(r) for r in conn.execute(select(cron_jobs).order_by(cron_jobs.c.name))]

    def delete(self, job_id: str) -> None:
        self.db.transact(lambda conn: conn.execute(delete(cron_jobs).where(cron_jobs.c.job_id == job_id)))

    def job_tasks(self, job_id: str, limit: int | None = None) -> list[Task]:
        """The job's executions as `cron` tasks, newest first."""
        stmt = store.task_select().where(and_(task_runs.c.runtime == Runtime.CRON.value,
                                              task_runs.c.source_id == job_id)).order_by(*store.NEWEST_FIRST)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.db.read() as conn:
            return [store.row_to_task(r) for r in conn.execute(stmt)]

    # --- runs -----------------------------------------------------------------------------------------

    def begin_run(self, job_id: str, run_id: str, gateway_id: str, started: datetime, *, agent_id: str,
                  isolated_session: str | None = None) -> None:
        """Mark the job running and register the run's context (and an isolated run's session row), in one
        transaction: a live run always has both `running_at` and its context."""
        def unit(conn: Connection) -> None:
            conn.execute(cron_jobs.update().where(cron_jobs.c.job_id == job_id).values(running_at=started))
            liveness.register_run(conn, run_id, gateway_id, started)
            if isolated_session is not None:
                liveness.upsert_session(conn, isolated_session, started, agent_id=agent_id, kind="cron",
                                        spawned_by=f"cron:{job_id}", gateway_id=gateway_id, ended_at=None)

        self.db.transact(unit)

    def record_end(self, job_id: str, started_at: datetime, *, status: str, error: str | None,
                   summary: str | None, duration_ms: int) -> None:
        """Append the run's `finished` log entry and update the job's `last_*` state (clearing `running_at`), in
        one transaction, before the run's task turns terminal."""
        now = self.clock.now()

        def unit(conn: Connection) -> None:
            conn.execute(insert(cron_run_log).values(job_id=job_id, action="finished", run_at=started_at,
                                                     status=status, error=error, summary=summary,
                                                     duration_ms=duration_ms, ts=now))
            conn.execute(cron_jobs.update().where(cron_jobs.c.job_id == job_id).values(
                running_at=None, last_run_at=started_at, last_status=status, last_error=error,
                last_duration_ms=duration_ms))

        self.db.transact(unit)

    def spawned_by_run(self, session_key: str, since: datetime) -> list[Task]:
        """The sub-agent tasks an isolated run's session spawned since it started (tasks/runs/cron_followup.py)."""
        from flowledger.tasks.runs import cron_followup

        with self.db.read() as conn:
            return cron_followup.descendants(conn, session_key, since)

    def running_job_ids(self) -> set[str]:
        with self.db.read() as conn:
            return {r[0].lower() for r in conn.execute(
                select(cron_jobs.c.job_id).where(cron_jobs.c.running_at.is_not(None)))}

    def release_stale_running(self) -> list[str]:
        """Clear `running_at` of jobs whose run is no longer live (its gateway died mid-run), in one
        transaction; the job ids released.

        `running_at` is what an authoritative sweep reads as "the cron runtime tracks this job as active"; left
        set by a dead gateway it would keep that job's task backed forever."""
        now = self.clock.now()

        def unit(conn: Connection) -> list[str]:
            live = liveness.live_run_ids(conn, now)
            released = []
            rows = conn.execute(select(cron_jobs.c.job_id, cron_jobs.c.running_at)
                                .where(cron_jobs.c.running_at.is_not(None)))
            for job_id, running_at in rows.all():
                if run_id_for(job_id, running_at) not in live:
                    conn.execute(cron_jobs.update().where(and_(
                        cron_jobs.c.job_id == job_id, cron_jobs.c.running_at == running_at)).values(running_at=None))
                    released.append(job_id)
            return released

        return self.db.transact(unit)

    def prune_run_sessions(self) -> int:
        """Isolated cron-run session rows older than 7 days go; running jobs' rows stay (REFERENCE §6.6). How
        many were pruned (batched transactions, session_sweep)."""
        counts = session_sweep.prune_cron_run_sessions(self.db, self.clock.now(), self.running_job_ids(),
                                                       apply=True)
        return counts.pruned
