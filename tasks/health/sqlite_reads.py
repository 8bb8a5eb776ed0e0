"""The lean read door on SQLite: what `tasks list`, `tasks show`, `tasks flow list` and `tasks flow show` read,
through the standard library's sqlite3, without SQLAlchemy, sqlmodel or any schema work (docs/performance.md,
"Round two").

One store contract, two doors: the rows go through the same mappers (tasks/core/task_rows.py, flows/flow_rows.py),
the same reconciliation rules (`backing.should_mark_lost`, `cron_recovery.decide`, `projection.project`) and
the same JSON serialisers as the ORM path; only the SELECTs are written out here (and in flows/lean_reads.py
for the flow rows), in the same shape as tasks/core/store.py, tasks/health/listing.py, tasks/health/backing.py,
tasks/runs/liveness.py and flows/store.py build them.
tests/store/test_sqlite_reads.py checks both doors give identical records, pages and counts on one ledger.

Opening does no schema work: the file is opened read-write but never created (`mode=rw`), one read transaction
holds every query of a command (one snapshot, always the last commit: nothing is cached across commands), and
the schema version is read in it. A ledger at any other version raises `FallbackError`, as does anything this door
does not answer itself (an ambiguous prefix, a lookup that finds nothing): the caller then takes the full path,
which migrates, explains or refuses exactly as before.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType

from flowledger.tasks.core import generation_kinds
from flowledger.tasks.core.clock import from_ms, to_ms
from flowledger.tasks.core.models import DEFAULT_RETENTION, Task
from flowledger.tasks.core.quiet_rows import ACTIVE_DUE_WHERE, QUIET_ROW_KINDS
from flowledger.tasks.core.rules import preferred
from flowledger.tasks.core.states import ACTIVE, Runtime, TaskStatus
from flowledger.tasks.core.task_rows import raw_to_task
from flowledger.tasks.health import cron_recovery
from flowledger.tasks.health.backing import GRACES, LOST_GRACE, BackingView, SessionState
from flowledger.tasks.health.cron_recovery import JobState, Recovery, RunLogEntry
from flowledger.tasks.health.projection import once_by_seq, project, projected_status

# The schema this door's SELECTs are written for: tasks/core/tables.py SCHEMA_VERSION (a test keeps them equal). A
# ledger at another version is the full path's to read (it migrates an older one, refuses a newer one).
SCHEMA_VERSION = 8
BUSY_TIMEOUT_S = 30.0  # as tasks/core/db.py: a reader waits for a writer's checkpoint rather than failing
BATCH = 500  # projection batch (tasks/health/projection.py BATCH)
COUNT_BATCH = 2000  # tasks/health/listing.py COUNT_BATCH
IN_CHUNK = 500  # bind lists (tasks/health/backing.py)
MIN_PREFIX = 6  # tasks/core/prefixes.py

TASK_KEYS = ("task_id", "runtime", "task_kind", "source_id", "requester_session_key", "owner_key", "scope_kind",
             "child_session_key", "parent_flow_id", "parent_task_id", "agent_id", "requester_agent_id", "run_id",
             "label", "task", "status", "delivery_status", "notify_policy", "created_at", "started_at", "ended_at",
             "last_event_at", "cleanup_after", "error", "progress_summary", "terminal_summary", "terminal_outcome",
             "media_json", "seq", "requester_origin_json")
_TASK_SELECT = ("SELECT " + ", ".join(f"r.{k}" for k in TASK_KEYS[:-1]) + ", d.requester_origin_json "
                "FROM task_runs AS r LEFT OUTER JOIN task_delivery_state AS d ON d.task_id = r.task_id")
_SEQ_AT = TASK_KEYS.index("seq")
_NEWEST = " ORDER BY r.created_at DESC, r.seq DESC"
_ACTIVE = tuple(s.value for s in ACTIVE)
_DUE = ACTIVE_DUE_WHERE.replace(":b_stale_before", "?")  # quiet_rows: the due active rows, one index range
_LIVE_RUNS = ("SELECT c.run_id FROM run_contexts AS c JOIN gateway_leases AS g ON g.gateway_id = c.gateway_id "
              "WHERE g.expires_at > :b_now")  # `backing`'s live runs, as a subquery
_WAITING = "SELECT task_id FROM task_payloads WHERE claimed_by IS NULL"  # `backing`'s waiting_for_gateway
_ACTIVITY = "coalesce(last_event_at, started_at, created_at)"  # Task.last_activity_at


def _id_class(column: str) -> tuple[str, ...]:
    """What the rules can tell of a non-cron row's run or source id without the row: whether a live run bears it
    (NULL when there is no id), whether it is empty, its prefix up to the first ':' (`codex-thread:`)."""
    return f"{column} IN ({_LIVE_RUNS})", f"{column} = ''", f"substr({column}, 1, instr({column}, ':'))"


# A class of due rows: rows agreeing on everything the rules read of them (backing.JUDGED_FIELDS, field by field)
# and on what the view answers about their ids, so one of them judged stands for all (`count_by_status`). The
# grace buckets: `now - activity < grace` is `activity > to_ms(now - grace)` for a stored (millisecond) time.
VERDICT_CLASS: dict[str, tuple[str, ...]] = {
    "status": ("status",),
    "runtime": ("runtime",),
    "task_kind": ("task_kind",),
    "scope_kind": ("scope_kind",),
    # a session task's requester is its owner when the column is empty (task_rows.mapping_to_task)
    "requester_session_key": ("requester_session_key", "owner_key"),
    "child_session_key": ("child_session_key",),
    "run_id": _id_class("run_id"),
    "source_id": _id_class("source_id"),
    "task_id": (f"task_id IN ({_WAITING})",),
    "last_activity_at": tuple(f"{_ACTIVITY} <= :b_before_{i}" for i in range(len(GRACES))),
}


def _classes_sql(*, live_runs: bool, waiting: bool) -> str:
    """(seq of one row, rows) per class of due rows. Cron rows one by one: a cron run id names its job and run,
    which the run log and the job row answer. A membership test of an empty set answers false for every row, even
    one without the id (SQLite: `x IN (empty)` is false, NULL too), so it tells no rows apart and is left out: each
    column costs every due row some work, and a ledger nobody serves has no live runs."""
    kept = [sql for parts in VERDICT_CLASS.values() for sql in parts
            if (live_runs or _LIVE_RUNS not in sql) and (waiting or _WAITING not in sql)]
    return (f"SELECT min(seq), count(*) FROM task_runs WHERE {ACTIVE_DUE_WHERE} GROUP BY "
            + ", ".join(("CASE WHEN runtime = 'cron' THEN seq END", *kept)))


class FallbackError(Exception):
    """This door does not answer the request: take the full path."""


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" * len(values))


class LeanReader:
    """One read transaction on an existing SQLite ledger. Use as a context manager."""

    def __init__(self, path: Path, now: datetime, *, authoritative: bool = False,
                 retention: timedelta = DEFAULT_RETENTION) -> None:
        self.now = now
        self.authoritative = authoritative
        self.retention = retention
        try:
            self.conn = sqlite3.connect(f"{path.as_uri()}?mode=rw", uri=True, timeout=BUSY_TIMEOUT_S,
                                        isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise FallbackError(f"cannot open: {exc}") from None
        try:
            self.conn.execute("BEGIN")
            row = self.conn.execute("SELECT value FROM schema_meta WHERE meta_key = 'schema_version'").fetchone()
        except sqlite3.Error as exc:  # no schema yet, a locked or damaged file: the full path explains it
            self.close()
            raise FallbackError(f"cannot read the schema version: {exc}") from None
        if row is None or str(row[0]) != str(SCHEMA_VERSION):
            self.close()
            raise FallbackError(f"schema version {row[0] if row else None!r}")

    def close(self) -> None:
        try:
            self.conn.rollback()  # a read transaction: nothing to keep
        finally:
            self.conn.close()

    def __enter__(self) -> LeanReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- tasks ------------------------------------------------------------------------------------------

    def _tasks(self, where: str = "", params: Sequence[object] = (), tail: str = "") -> list[Task]:
        sql = _TASK_SELECT + (f" WHERE {where}" if where else "") + tail
        return [raw_to_task(TASK_KEYS, row) for row in self.conn.execute(sql, tuple(params))]

    def resolve_task(self, lookup: str) -> Task:
        """tasks/core/service.py `resolve`: id, run id (preferred task), newest owner/child-session task, unique
        prefix. FallbackError when nothing or several ids match (the full path says so in its own words)."""
        token = (lookup or "").strip()
        if not token:
            raise FallbackError("empty lookup")
        for found in (self._tasks("r.task_id = ?", [token]),
                      [t] if (t := preferred(self._tasks("r.run_id = ?", [token],
                                                         " ORDER BY r.created_at, r.seq"))) else [],
                      self._tasks("r.owner_key = ? OR r.child_session_key = ?", [token, token],
                                  _NEWEST + " LIMIT 1")):
            if found:
                return found[0]
        ids = self.prefix_ids("task_runs", "task_id", token)
        if len(ids) != 1:
            raise FallbackError(f"{len(ids)} ids start with the prefix")
        return self._tasks("r.task_id = ?", ids)[0]

    def prefix_ids(self, table: str, column: str, prefix: str) -> list[str]:
        """tasks/core/prefixes.py: an index range plus a substr guard; at most two ids (one is the answer)."""
        if len(prefix) < MIN_PREFIX:
            return []
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        sql = (f"SELECT {column} FROM {table} WHERE {column} >= ? AND {column} < ? "
               f"AND substr({column}, 1, ?) = ? ORDER BY {column} LIMIT 2")
        return [str(r[0]) for r in self.conn.execute(sql, (prefix, upper, len(prefix), prefix))]

    def project(self, tasks: Sequence[Task]) -> list[Task]:
        """tasks/health/projection.py `project_batch`, batch by batch."""
        out: list[Task] = []
        for start in range(0, len(tasks), BATCH):
            batch = tasks[start:start + BATCH]
            view, recoveries = self.backing(batch), self.recoveries(batch)
            out.extend(project(t, view, recoveries.get(t.task_id), self.retention) for t in batch)
        return out

    def newest_tasks(self, *, limit: int, offset: int = 0) -> list[Task]:
        """tasks/health/listing.py `page` without filters: newest first, projected."""
        return self.project(self._tasks("", (limit, offset), _NEWEST + " LIMIT ? OFFSET ?"))

    def count_by_status(self) -> dict[str, int]:
        """tasks/health/listing.py `count_by_status` without filters: the counts the writes keep, corrected by the
        projected status of the active rows whose projection can differ (`projection.active_may_change`; the due
        rows are those and the ended active ones, whose projection is their stored status). The due rows are
        counted by class (`VERDICT_CLASS`): one row of each is read and judged by the shared rules, and its
        projected status counts for the whole class — 100,000 stale rows of one kind are one judgement, not
        100,000 records built (docs/performance.md, "Round two")."""
        counts = {s.value: 0 for s in TaskStatus}
        for status, _runtime, count in self.stored_counts():  # kept by the writes: a few rows, not a scan
            counts[status] = counts.get(status, 0) + count
        params = {"b_stale_before": to_ms(self.now - LOST_GRACE), "b_now": to_ms(self.now),
                  **{f"b_before_{i}": to_ms(self.now - grace) for i, grace in enumerate(GRACES)}}
        live_runs = self.conn.execute(f"SELECT EXISTS ({_LIVE_RUNS})", params).fetchone()[0]
        waiting = self.conn.execute(f"SELECT EXISTS ({_WAITING})").fetchone()[0]
        sizes = {int(seq): int(n) for seq, n in self.conn.execute(
            _classes_sql(live_runs=bool(live_runs), waiting=bool(waiting)), params)}
        for batch in _batched(self._rows_by_seq(sorted(sizes), COUNT_BATCH), COUNT_BATCH):
            tasks = [task for _, task in batch]
            view, recoveries = self.backing(tasks), self.recoveries(tasks)
            for seq, task in batch:
                status = projected_status(task, view, recoveries.get(task.task_id))
                if status != task.status:
                    counts[task.status.value] -= sizes[seq]
                    counts[status.value] += sizes[seq]
        return counts

    def stored_total(self) -> int:
        """Every task row, from the counts the writing transactions keep (tasks/core/counts.py): what
        `count_by_status` sums to, since projecting moves a task between statuses, never out of the ledger."""
        return int(self.conn.execute("SELECT coalesce(SUM(n), 0) FROM task_counts").fetchone()[0])

    # --- status: tasks/core/counts.py `read` and tasks/health/projection.py `stream_projected` --------------

    def stored_counts(self) -> list[tuple[str, str, int]]:
        """(status, runtime, count) from the counts the writing transactions keep (tasks/core/counts.py)."""
        return [(str(status), str(runtime), int(n)) for status, runtime, n in self.conn.execute(
            "SELECT status, runtime, SUM(n) FROM task_counts GROUP BY status, runtime HAVING SUM(n) <> 0 "
            "ORDER BY status, runtime")]

    def noteworthy(self, batch: int = BATCH) -> Iterator[tuple[Task, Task]]:
        """(stored, projected) for every noteworthy task in seq order, each once: `stream_projected`'s kinds of row
        (each answered by the status index or a partial index), merged by seq, projected a batch at a time."""
        kinds: list[tuple[str, tuple[object, ...]]] = [
            ("r.status = ?", (TaskStatus.LOST.value,)), *((where, ()) for where in QUIET_ROW_KINDS.values())]
        streams = [self.due_rows(batch), *(self._kind_rows(where, params, batch) for where, params in kinds)]
        for stored in once_by_seq(streams, batch):
            yield from zip(stored, self.project(stored), strict=True)

    def due_rows(self, batch: int = BATCH) -> Iterator[tuple[int, Task]]:
        """(seq, task) of the active rows that need a look (stale, cron, ended: quiet_rows.ACTIVE_DUE) in seq order:
        their seqs from one range of the due index, sorted, then the rows a batch at a time by primary key."""
        stale_before = to_ms(self.now - LOST_GRACE)
        seqs = [int(r[0]) for r in self.conn.execute(f"SELECT seq FROM task_runs WHERE {_DUE} ORDER BY seq",
                                                     (stale_before,))]
        return self._rows_by_seq(seqs, batch)

    def _rows_by_seq(self, seqs: Sequence[int], batch: int) -> Iterator[tuple[int, Task]]:
        """(seq, task) of the rows with these seqs (in seq order), a batch at a time by primary key."""
        for start in range(0, len(seqs), batch):
            chunk = seqs[start:start + batch]
            for row in self.conn.execute(f"{_TASK_SELECT} WHERE r.seq IN ({_marks(chunk)}) ORDER BY r.seq",
                                         chunk):
                yield int(row[_SEQ_AT]), raw_to_task(TASK_KEYS, row)

    def _kind_rows(self, where: str, params: tuple[object, ...], batch: int) -> Iterator[tuple[int, Task]]:
        seq_at = TASK_KEYS.index("seq")
        after = 0
        while True:
            rows = self.conn.execute(f"{_TASK_SELECT} WHERE {where} AND r.seq > ? ORDER BY r.seq LIMIT ?",
                                     (*params, after, batch)).fetchall()
            yield from ((int(row[seq_at]), raw_to_task(TASK_KEYS, row)) for row in rows)
            if len(rows) < batch:
                return
            after = int(rows[-1][seq_at])

    # --- backing: tasks/health/backing.py BackingView.load and tasks/runs/liveness.py, as plain SQL ---------------

    def backing(self, tasks: Iterable[Task]) -> BackingView:
        batch = [t for t in tasks if t.status in ACTIVE]
        view = BackingView(now=self.now, authoritative=self.authoritative)
        if not batch:
            return view
        now = to_ms(self.now)
        view.live_runs = {str(r[0]) for r in self.conn.execute(
            "SELECT c.run_id FROM run_contexts AS c JOIN gateway_leases AS g ON g.gateway_id = c.gateway_id "
            "WHERE g.expires_at > ?", (now,))}
        view.fresh_gateways = {str(r[0]) for r in self.conn.execute(
            "SELECT gateway_id FROM gateway_leases WHERE expires_at > ?", (now,))}
        keys = {t.child_session_key for t in batch if t.child_session_key}
        keys |= {t.requester_session_key for t in batch if generation_kinds.is_generation(t)}
        if keys:
            view.sessions = self._sessions(keys)
        queued_cli = [t.task_id for t in batch if t.runtime == Runtime.CLI and t.status == TaskStatus.QUEUED]
        for chunk in _chunks(queued_cli):
            view.waiting_for_gateway.update(str(r[0]) for r in self.conn.execute(
                f"SELECT task_id FROM task_payloads WHERE task_id IN ({_marks(chunk)}) "
                "AND claimed_by IS NULL", chunk))
        if self.authoritative and any(t.runtime == Runtime.CRON for t in batch):
            view.active_cron_jobs = {str(r[0]).lower() for r in self.conn.execute(
                "SELECT job_id FROM cron_jobs WHERE running_at IS NOT NULL")}
        return view

    def _sessions(self, keys: Iterable[str]) -> dict[str, SessionState]:
        """tasks/health/backing.py `load_sessions`: exact keys, then case-insensitively for the misses."""
        wanted = sorted(set(keys))
        found: dict[str, SessionState] = {}
        cols = "session_key, tombstone, acp_json, gateway_id, ended_at"
        for chunk in _chunks(wanted):
            for row in self.conn.execute(
                    f"SELECT {cols} FROM sessions WHERE session_key IN ({_marks(chunk)})", chunk):
                found[row[0]] = SessionState(row[0], row[1], row[2] is not None, row[3], row[4] is not None)
        missing = sorted({k.lower() for k in wanted if k not in found})
        for chunk in _chunks(missing):
            for key, tombstone, acp, gateway, ended, low in self.conn.execute(
                    f"SELECT {cols}, lower(session_key) FROM sessions "
                    f"WHERE lower(session_key) IN ({_marks(chunk)})", chunk):
                found.setdefault(low, SessionState(key, tombstone, acp is not None, gateway, ended is not None))
        return found

    def recoveries(self, tasks: Iterable[Task]) -> dict[str, Recovery]:
        """tasks/health/cron_recovery.py `load`: run-log entries and job rows of a batch, then the shared `decide`."""
        runs = {t.task_id: (t, parsed) for t in tasks if (parsed := cron_recovery.parse_run(t)) is not None}
        if not runs:
            return {}
        pairs = {(job, to_ms(at)) for _, (job, at) in runs.values()}
        jobs = sorted({job for job, _ in pairs})
        entries: dict[str, list[RunLogEntry]] = {}
        states: dict[str, JobState] = {}
        for chunk in _chunks(jobs):
            times = sorted({at for job, at in pairs if job in chunk})
            for job_id, action, run_at, status, error, summary, duration, ts in self.conn.execute(
                    "SELECT job_id, action, run_at, status, error, summary, duration_ms, ts FROM cron_run_log "
                    f"WHERE job_id IN ({_marks(chunk)}) AND run_at IN ({_marks(times)}) AND action = 'finished' "
                    "ORDER BY id", [*chunk, *times]):
                entries.setdefault(job_id, []).append(RunLogEntry(job_id, action, _time(run_at), status, error,
                                                                  summary, duration, _time(ts)))
            for job_id, last_run_at, last_status, last_error, last_duration in self.conn.execute(
                    "SELECT job_id, last_run_at, last_status, last_error, last_duration_ms FROM cron_jobs "
                    f"WHERE job_id IN ({_marks(chunk)})", chunk):
                states[job_id] = JobState(job_id, _opt_time(last_run_at), last_status, last_error, last_duration)
        out: dict[str, Recovery] = {}
        for task_id, (task, (job, _)) in runs.items():
            recovery = cron_recovery.decide(task, entries.get(job, []), states.get(job))
            if recovery is not None:
                out[task_id] = recovery
        return out

    # --- a flow's linked tasks (flows/store.py `linked_for`; the flow rows are flows/lean_reads.py's) -----

    def linked_for(self, flow_ids: Sequence[str]) -> dict[str, list[Task]]:
        """Each flow's linked tasks, newest first, stored (not projected), as flows/store.py `linked_for`."""
        out: dict[str, list[Task]] = {fid: [] for fid in flow_ids}
        if not flow_ids:
            return out
        for task in self._tasks(f"r.parent_flow_id IN ({_marks(flow_ids)})", flow_ids, _NEWEST):
            if task.parent_flow_id is not None:
                out.setdefault(task.parent_flow_id, []).append(task)
        return out


def _batched(rows: Iterator[tuple[int, Task]], size: int) -> Iterator[list[tuple[int, Task]]]:
    """A (seq, task) stream in lists of at most `size`."""
    batch: list[tuple[int, Task]] = []
    for pair in rows:
        batch.append(pair)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _chunks(items: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), IN_CHUNK):
        yield list(items[start:start + IN_CHUNK])


def _time(value: int) -> datetime:
    return from_ms(int(value))


def _opt_time(value: int | None) -> datetime | None:
    return None if value is None else from_ms(int(value))
