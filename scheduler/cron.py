"""Cron jobs: definitions persisted in `cron_jobs`, their APScheduler triggers, and their run records.

A job has either a 5-field cron `schedule` (with an optional IANA `tz`) or an `every` interval. Every
execution is a `cron` task with run id `cron:<job_id>:<started_ms>` and source id `<job_id>` (REFERENCE §1);
`cron_run_log` and the job's `last_*` columns are what durable cron recovery (REFERENCE §6.4) reads.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from flowledger.flows.ledger import Ledger
from flowledger.scheduler.queue import describe
from flowledger.tasks.core.clock import iso_z, to_ms
from flowledger.tasks.core.durations import format_duration
from flowledger.tasks.core.errors import InvalidInputError
from flowledger.tasks.core.ids import new_id
from flowledger.tasks.core.models import Task
from flowledger.tasks.runs import cron as stored
from flowledger.tasks.runs.cron import CronJobRecord

TIMED_OUT_ERROR = "cron: job execution timed out"
run_id_for = stored.run_id_for
# A run of a job without its own `timeout` (cron_jobs.timeout_ms NULL) is stopped after this long.
DEFAULT_TIMEOUT = timedelta(hours=1)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


@dataclass(frozen=True, slots=True)
class CronJob(CronJobRecord):
    """A stored job (its fields are the run registry's record) with what scheduling needs on top."""

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


def _job(record: CronJobRecord) -> CronJob:
    return CronJob(**{f.name: getattr(record, f.name) for f in fields(record)})


def validate(schedule: str | None, every: timedelta | None, tz: str | None,
             timeout: timedelta | None = None) -> None:
    if timeout is not None and timeout < timedelta(milliseconds=1):
        raise InvalidInputError(f"Invalid timeout {format_duration(timeout)}: must be longer than zero.")
    if (schedule is None) == (every is None):
        raise InvalidInputError("Give exactly one of --schedule \"<5-field cron>\" or --every <duration>.")
    if tz is not None:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidInputError(f"Unknown time zone {tz!r}: expected an IANA name such as Europe/Paris.") from None
    if schedule is not None:
        if len(schedule.split()) != 5:
            raise InvalidInputError(
                f"Invalid schedule {schedule!r}: expected 5 fields (minute hour day month weekday).")
        try:
            CronTrigger.from_crontab(schedule, timezone=tz or "UTC")
        except ValueError as exc:
            raise InvalidInputError(f"Invalid schedule {schedule!r}: {exc}.") from None


def add_job(ledger: Ledger, name: str, argv: Sequence[str], *, schedule: str | None = None,
            every: timedelta | None = None, tz: str | None = None, isolated: bool = False,
            agent_id: str = "main", timeout: timedelta | None = None) -> CronJob:
    """Persist a new job; `timeout` bounds each run (None: DEFAULT_TIMEOUT)."""
    if not _NAME.match(name or ""):
        raise InvalidInputError(f"Invalid job name {name!r}: letters, digits, '_', '.', ':' and '-', at most 128.")
    if not argv or not argv[0].strip():
        raise InvalidInputError("Nothing to run: give the command after `--`.")
    validate(schedule, every, tz, timeout)
    record = ledger.runs.cron.add(uuid.uuid4().hex[:12], name, argv, schedule=schedule, every=every, tz=tz,
                                  isolated=isolated, agent_id=agent_id, timeout=timeout)
    return _job(record)


def get_job(ledger: Ledger, name_or_id: str) -> CronJob | None:
    record = ledger.runs.cron.find(name_or_id)
    return _job(record) if record is not None else None


def list_jobs(ledger: Ledger) -> list[CronJob]:
    return [_job(r) for r in ledger.runs.cron.jobs()]


def remove_job(ledger: Ledger, name: str) -> CronJob | None:
    job = get_job(ledger, name)
    if job is None:
        return None
    ledger.runs.cron.delete(job.job_id)
    return job


def job_runs(ledger: Ledger, job: CronJob, limit: int | None = None) -> list[Task]:
    """The job's executions as `cron` tasks, newest first."""
    return ledger.runs.cron.job_tasks(job.job_id, limit)


def main_session_child_key(agent_id: str, job_id: str, started_at: datetime) -> str:
    """`agent:<agent>:cron:<jobSeg>:run:<startedMs>` with REFERENCE §1's segment rules."""
    return f"agent:{agent_id}:cron:{_segment(job_id, 'job')}:run:{_segment(str(to_ms(started_at)), 'run')}"


def _segment(value: str, fallback: str) -> str:
    cleaned = re.sub(r"[^a-z0-9_-]+", "-", value.lower()).strip("-")[:64]
    return cleaned or fallback


def isolated_session_key(agent_id: str, job_id: str) -> str:
    return f"agent:{agent_id}:cron:{job_id}:run:{new_id()}"


def format_every(job: CronJob) -> str:
    return f"every {format_duration(job.every)}" if job.every is not None else f"{job.schedule} ({job.tz or 'UTC'})"
