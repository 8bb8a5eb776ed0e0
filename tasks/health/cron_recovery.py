"""Durable cron recovery (REFERENCE §6.4): before an active cron task may be marked lost, the cron run log
and then the job's last-run state are asked whether that very run already finished.

`decide` is pure; `load` fetches the run-log entries and job rows for a whole batch in two queries.
Recovery needs neither the grace nor authority, so the offline CLI recovers too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, and_, select

from flowledger.tasks.core.clock import from_ms, to_ms
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import ACTIVE, Runtime, TaskStatus
from flowledger.tasks.core.tables import cron_jobs, cron_run_log

CRON_TIMEOUT_ERROR = "cron: job execution timed out"
_FINISHED = frozenset({"ok", "skipped", "error"})
_IN_CHUNK = 500


@dataclass(frozen=True, slots=True)
class RunLogEntry:
    job_id: str
    action: str
    run_at: datetime
    status: str | None
    error: str | None
    summary: str | None
    duration_ms: int | None
    ts: datetime


@dataclass(frozen=True, slots=True)
class JobState:
    job_id: str
    last_run_at: datetime | None
    last_status: str | None
    last_error: str | None
    last_duration_ms: int | None


@dataclass(frozen=True, slots=True)
class Recovery:
    status: TaskStatus
    ended_at: datetime
    error: str | None
    summary: str | None

    def apply_to(self, task: Task) -> Task:
        return task.replace(status=self.status, ended_at=self.ended_at, last_event_at=self.ended_at,
                            error=self.error if self.error is not None else task.error,
                            terminal_summary=self.summary or task.terminal_summary)


def parse_run(task: Task) -> tuple[str, datetime] | None:
    """(job id, started at) of an active cron task whose run id reads `cron:<jobId>:<startedAtMs>`."""
    if task.runtime != Runtime.CRON or task.status not in ACTIVE or not task.run_id:
        return None
    run_id = task.run_id.strip()
    if not run_id.startswith("cron:"):
        return None
    job_id, sep, started = run_id[len("cron:"):].rpartition(":")
    if not sep or not job_id or not started.isdigit():
        return None
    if task.source_id and task.source_id != job_id:
        return None
    return job_id, from_ms(int(started))


def _status(run_status: str, error: str | None) -> TaskStatus:
    if run_status in ("ok", "skipped"):
        return TaskStatus.SUCCEEDED
    return TaskStatus.TIMED_OUT if error == CRON_TIMEOUT_ERROR else TaskStatus.FAILED


def decide(task: Task, entries: Iterable[RunLogEntry], job: JobState | None) -> Recovery | None:
    """The terminal state durable history records for this run, else None."""
    parsed = parse_run(task)
    if parsed is None:
        return None
    job_id, started = parsed
    last: RunLogEntry | None = None
    for entry in entries:
        if (entry.job_id == job_id and entry.action == "finished" and entry.run_at == started
                and entry.status in _FINISHED):
            last = entry
    if last is not None and last.status is not None:
        ended = started + timedelta(milliseconds=max(0, last.duration_ms)) if last.duration_ms is not None \
            else last.ts
        return Recovery(_status(last.status, last.error), ended, last.error, last.summary)
    if job is not None and job.last_run_at == started and job.last_status in _FINISHED:
        ended = started + timedelta(milliseconds=max(0, job.last_duration_ms or 0))
        return Recovery(_status(job.last_status, job.last_error), ended, job.last_error, None)
    return None


def load(conn: Connection, tasks: Iterable[Task]) -> dict[str, Recovery]:
    """Recoveries for every recoverable task of a batch, keyed by task id."""
    runs = {t.task_id: (t, parsed) for t in tasks if (parsed := parse_run(t)) is not None}
    if not runs:
        return {}
    pairs = {(job, to_ms(at)) for _, (job, at) in runs.values()}
    jobs = sorted({job for job, _ in pairs})
    entries: dict[str, list[RunLogEntry]] = {}
    states: dict[str, JobState] = {}
    for start in range(0, len(jobs), _IN_CHUNK):
        chunk = jobs[start:start + _IN_CHUNK]
        times = sorted({at for job, at in pairs if job in chunk})
        stmt = select(cron_run_log).where(and_(cron_run_log.c.job_id.in_(chunk), cron_run_log.c.run_at.in_(times),
                                               cron_run_log.c.action == "finished")).order_by(cron_run_log.c.id)
        for r in conn.execute(stmt):
            entries.setdefault(r.job_id, []).append(RunLogEntry(r.job_id, r.action, r.run_at, r.status, r.error,
                                                                r.summary, r.duration_ms, r.ts))
        for r in conn.execute(select(cron_jobs).where(cron_jobs.c.job_id.in_(chunk))):
            states[r.job_id] = JobState(r.job_id, r.last_run_at, r.last_status, r.last_error, r.last_duration_ms)
    out: dict[str, Recovery] = {}
    for task_id, (task, (job, _)) in runs.items():
        found = decide(task, entries.get(job, []), states.get(job))
        if found is not None:
            out[task_id] = found
    return out
