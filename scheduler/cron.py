"""Cron jobs: definitions persisted in `cron_jobs`, their APScheduler triggers, and their run records.

A job has either a 5-field cron `schedule` (with an optional IANA `tz`) or an `every` interval. Every
execution is a `cron` task with run id `cron:<job_id>:<started_ms>` and source id `<job_id>` (REFERENCE §1);
`cron_run_log` and the job's `last_*` columns are what durable cron recovery (REFERENCE §6.4) reads.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Connection, and_, delete, insert, select

from flowledger.flows.ledger import Ledger
from flowledger.scheduler.queue import describe
from flowledger.tasks import liveness, store
from flowledger.tasks.clock import iso_z, to_ms
from flowledger.tasks.durations import format_duration
from flowledger.tasks.errors import InvalidInput, OperationRefused
from flowledger.tasks.ids import new_id
from flowledger.tasks.models import Task
from flowledger.tasks.states import Runtime
from flowledger.tasks.tables import cron_jobs, cron_run_log, task_runs

TIMED_OUT_ERROR = "cron: job execution timed out"
# A run of a job without its own `timeout` (cron_jobs.timeout_ms NULL) is stopped after this long.
DEFAULT_TIMEOUT = timedelta(hours=1)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


@dataclass(frozen=True, slots=True)
class CronJob:
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
    timeout: timedelta | None = None  # None: DEFAULT_TIMEOUT

    @property
    def effective_timeout(self) -> timedelta:
        return self.timeout if self.timeout is not None else DEFAULT_TIMEOUT

    @property
    def signature(self) -> tuple[Any, ...]:
        """What the scheduler must reload on when it changes."""
        return (self.schedule, self.every, self.tz)

    def trigger(self, start: datetime | None = None) -> BaseTrigger:
        if self.every is not None:
            return IntervalTrigger(seconds=self.every.total_seconds(), start_date=start, timezone="UTC")
        assert self.schedule is not None
        return CronTrigger.from_crontab(self.schedule, timezone=self.tz or "UTC")

    def next_run_at(self, now: datetime) -> datetime | None:
        if self.every is not None:
            base = self.last_run_at or self.created_at
            nxt = base + self.every
            return nxt if nxt > now else now
        fire: datetime | None = self.trigger().get_next_fire_time(None, now)
        return fire

    def describe(self) -> str:
        return describe(self.argv)

    @property
    def zone(self) -> str | None:
        """The zone a `schedule` is read in (UTC unless `--tz` named one); None for `every` jobs."""
        return (self.tz or "UTC") if self.schedule is not None else None

    def local_text(self, moment: datetime | None) -> str | None:
        """`moment` as ISO-8601 with the offset of the job's zone, e.g. `2026-12-03T09:00:00-05:00`."""
        if moment is None or self.zone is None:
            return None
        return moment.astimezone(ZoneInfo(self.zone)).isoformat(timespec="seconds")

    def to_json(self, now: datetime) -> dict[str, Any]:
        return {
            "name": self.name, "job_id": self.job_id, "schedule": self.schedule,
            "every": format_duration(self.every) if self.every is not None else None, "tz": self.zone,
            "isolated": self.isolated, "argv": list(self.argv), "next_run_at": iso_z(self.next_run_at(now)),
            "next_run_local": self.local_text(self.next_run_at(now)),
            "last_run_at": iso_z(self.last_run_at), "last_status": self.last_status,
            "timeout_ms": _ms(self.timeout) if self.timeout is not None else None,
        }


def _ms(value: timedelta) -> int:
    return int(value.total_seconds() * 1000)


def _job(row: Any) -> CronJob:
    m = row._mapping
    return CronJob(job_id=m["job_id"], name=m["name"], schedule=m["schedule"],
                   every=timedelta(milliseconds=m["every_ms"]) if m["every_ms"] else None, tz=m["tz"],
                   isolated=bool(m["isolated"]), argv=json.loads(m["argv_json"]), agent_id=m["agent_id"],
                   created_at=m["created_at"], running_at=m["running_at"], last_run_at=m["last_run_at"],
                   last_status=m["last_status"], last_error=m["last_error"], last_duration_ms=m["last_duration_ms"],
                   timeout=timedelta(milliseconds=m["timeout_ms"]) if m["timeout_ms"] is not None else None)


def validate(schedule: str | None, every: timedelta | None, tz: str | None,
             timeout: timedelta | None = None) -> None:
    if timeout is not None and timeout < timedelta(milliseconds=1):
        raise InvalidInput(f"Invalid timeout {format_duration(timeout)}: must be longer than zero.")
    if (schedule is None) == (every is None):
        raise InvalidInput("Give exactly one of --schedule \"<5-field cron>\" or --every <duration>.")
    if tz is not None:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidInput(f"Unknown time zone {tz!r}: expected an IANA name such as Europe/Paris.") from None
    if schedule is not None:
        if len(schedule.split()) != 5:
            raise InvalidInput(f"Invalid schedule {schedule!r}: expected 5 fields (minute hour day month weekday).")
        try:
            CronTrigger.from_crontab(schedule, timezone=tz or "UTC")
        except ValueError as exc:
            raise InvalidInput(f"Invalid schedule {schedule!r}: {exc}.") from None


def add_job(ledger: Ledger, name: str, argv: Sequence[str], *, schedule: str | None = None,
            every: timedelta | None = None, tz: str | None = None, isolated: bool = False,
            agent_id: str = "main", timeout: timedelta | None = None) -> CronJob:
    """Persist a new job; `timeout` bounds each run (None: DEFAULT_TIMEOUT)."""
    if not _NAME.match(name or ""):
        raise InvalidInput(f"Invalid job name {name!r}: letters, digits, '_', '.', ':' and '-', at most 128.")
    if not argv or not argv[0].strip():
        raise InvalidInput("Nothing to run: give the command after `--`.")
    validate(schedule, every, tz, timeout)
    now = ledger.clock.now()
    job_id = uuid.uuid4().hex[:12]

    def unit(conn: Connection) -> None:
        if conn.execute(select(cron_jobs.c.job_id).where(cron_jobs.c.name == name)).first() is not None:
            raise OperationRefused(f"Cron job already exists: {name}.")
        conn.execute(insert(cron_jobs).values(
            job_id=job_id, name=name, schedule=schedule, every_ms=_ms(every) if every else None,
            tz=tz, isolated=isolated, argv_json=json.dumps(list(argv)), agent_id=agent_id, created_at=now,
            timeout_ms=_ms(timeout) if timeout is not None else None))

    ledger.db.transact(unit)
    job = get_job(ledger, job_id)
    assert job is not None
    return job


def get_job(ledger: Ledger, name_or_id: str) -> CronJob | None:
    with ledger.db.read() as conn:
        row = conn.execute(select(cron_jobs).where(cron_jobs.c.name == name_or_id)).first()
        if row is None:
            row = conn.execute(select(cron_jobs).where(cron_jobs.c.job_id == name_or_id)).first()
    return _job(row) if row is not None else None


def list_jobs(ledger: Ledger) -> list[CronJob]:
    with ledger.db.read() as conn:
        return [_job(r) for r in conn.execute(select(cron_jobs).order_by(cron_jobs.c.name))]


def remove_job(ledger: Ledger, name: str) -> CronJob | None:
    job = get_job(ledger, name)
    if job is None:
        return None
    ledger.db.transact(lambda conn: conn.execute(delete(cron_jobs).where(cron_jobs.c.job_id == job.job_id)))
    return job


def job_runs(ledger: Ledger, job: CronJob, limit: int | None = None) -> list[Task]:
    """The job's executions as `cron` tasks, newest first."""
    stmt = store.task_select().where(and_(task_runs.c.runtime == Runtime.CRON.value,
                                          task_runs.c.source_id == job.job_id)).order_by(*store.NEWEST_FIRST)
    if limit is not None:
        stmt = stmt.limit(limit)
    with ledger.db.read() as conn:
        return [store.row_to_task(r) for r in conn.execute(stmt)]


def run_id_for(job_id: str, started_at: datetime) -> str:
    return f"cron:{job_id}:{to_ms(started_at)}"


def main_session_child_key(agent_id: str, job_id: str, started_at: datetime) -> str:
    """`agent:<agent>:cron:<jobSeg>:run:<startedMs>` with REFERENCE §1's segment rules."""
    return f"agent:{agent_id}:cron:{_segment(job_id, 'job')}:run:{_segment(str(to_ms(started_at)), 'run')}"


def _segment(value: str, fallback: str) -> str:
    cleaned = re.sub(r"[^a-z0-9_-]+", "-", value.lower()).strip("-")[:64]
    return cleaned or fallback


def isolated_session_key(agent_id: str, job_id: str) -> str:
    return f"agent:{agent_id}:cron:{job_id}:run:{new_id()}"


def record_run_end(conn: Connection, job_id: str, started_at: datetime, *, status: str, error: str | None,
                   summary: str | None, duration_ms: int, now: datetime) -> None:
    """Append the finished entry to the run log and update the job state, in the caller's transaction."""
    conn.execute(insert(cron_run_log).values(job_id=job_id, action="finished", run_at=started_at, status=status,
                                             error=error, summary=summary, duration_ms=duration_ms, ts=now))
    conn.execute(cron_jobs.update().where(cron_jobs.c.job_id == job_id).values(
        running_at=None, last_run_at=started_at, last_status=status, last_error=error,
        last_duration_ms=duration_ms))


def running_job_ids(conn: Connection) -> set[str]:
    return {r[0].lower() for r in conn.execute(select(cron_jobs.c.job_id).where(cron_jobs.c.running_at.is_not(None)))}


def format_every(job: CronJob) -> str:
    return f"every {format_duration(job.every)}" if job.every is not None else f"{job.schedule} ({job.tz or 'UTC'})"


def release_stale_running(conn: Connection, now: datetime) -> list[str]:
    """Clear `running_at` of jobs whose run is no longer live (its gateway died mid-run).

    `running_at` is what an authoritative sweep reads as "the cron runtime tracks this job as active"; left
    set by a dead gateway it would keep that job's task backed forever. The runner writes `running_at` and
    the run context in one transaction, so a live run always has both.
    """
    live = liveness.live_run_ids(conn, now)
    released = []
    rows = conn.execute(select(cron_jobs.c.job_id, cron_jobs.c.running_at).where(cron_jobs.c.running_at.is_not(None)))
    for job_id, running_at in rows.all():
        if run_id_for(job_id, running_at) not in live:
            conn.execute(cron_jobs.update().where(and_(cron_jobs.c.job_id == job_id,
                                                       cron_jobs.c.running_at == running_at)).values(running_at=None))
            released.append(job_id)
    return released
