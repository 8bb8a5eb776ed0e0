"""The write path: full task lifecycles through the ledger against the same writes in raw SQL (the floor),
and bulk ingestion through `TaskService.create_many`."""

from __future__ import annotations

import sqlite3
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from flowledger import Ledger
from flowledger.tasks.core.db import BUSY_TIMEOUT_MS, Database
from flowledger.tasks.core.models import DEFAULT_RETENTION

OWNER = "agent:main:main"


def ledger_lifecycles(url: str, n: int, state_dir: Path, runtime: str = "acp") -> float:
    """Seconds for `n` create → start → complete lifecycles, each call its own committed transaction.

    `acp` (and `subagent`) tasks are linked to a one-task mirrored flow that is synced on every write; `cli`
    tasks are not, so `cli` is the task write path alone, the one the raw floor mirrors statement for statement.
    """
    with Ledger.open(state_dir=state_dir, database_url=url) as ledger:
        tasks = ledger.tasks
        tag = uuid.uuid4().hex[:8]
        start = time.perf_counter()
        for i in range(n):
            run_id = f"run-{tag}-{i}"
            # silent: the ledger's write path alone; done_only would add a delivery per task (peers have none).
            child = f"agent:main:acp:{tag}:{i}" if runtime == "acp" else None
            tasks.create(runtime=runtime, task=f"Summarise PR {i}", owner_key=OWNER, notify_policy="silent",
                         child_session_key=child, run_id=run_id)
            tasks.start(run_id)
            tasks.complete(run_id, summary="ok")
        return time.perf_counter() - start


_INSERT_TASK = (
    "INSERT INTO task_runs (task_id, runtime, task_kind, source_id, requester_session_key, owner_key, scope_kind, "
    "child_session_key, parent_flow_id, parent_task_id, agent_id, requester_agent_id, run_id, label, task, status, "
    "delivery_status, notify_policy, created_at, started_at, ended_at, last_event_at, cleanup_after, error, "
    "progress_summary, terminal_summary, terminal_outcome) VALUES "
    "({p}, {p}, NULL, NULL, {p}, {p}, 'session', {p}, NULL, NULL, 'main', 'main', {p}, NULL, {p}, 'queued', "
    "'pending', 'silent', {p}, NULL, NULL, {p}, NULL, NULL, NULL, NULL, NULL)"
)
_START = ("UPDATE task_runs SET status = 'running', started_at = {p}, last_event_at = {p} "
          "WHERE task_id = {p} AND status IN ('queued', 'running')")
_COMPLETE = ("UPDATE task_runs SET status = 'succeeded', ended_at = {p}, last_event_at = {p}, cleanup_after = {p}, "
             "terminal_summary = 'ok', terminal_outcome = 'succeeded' "
             "WHERE task_id = {p} AND status IN ('queued', 'running')")
_EVENT = "INSERT INTO task_events (task_id, at, kind, previous_status, summary) VALUES ({p}, {p}, {p}, {p}, {p})"


def _sql(template: str, placeholder: str) -> str:
    return template.format(p=placeholder)


def _lifecycle_params(i: int, tag: str) -> tuple[str, list[Any]]:
    task_id = str(uuid.uuid4())
    now = to_ms_now()
    run_id = f"run-{tag}-{i}"
    return task_id, [task_id, "acp", OWNER, OWNER, f"agent:main:acp:{tag}:{i}", run_id, f"Summarise PR {i}", now, now]


def to_ms_now() -> int:
    return time.time_ns() // 1_000_000


def _schema(url: str, state_dir: Path) -> None:
    Database.open(url, state_dir=state_dir).close()


def raw_sqlite_lifecycles(path: Path, n: int) -> float:
    """The physical floor: the same three transactions in raw sqlite3, same schema, pragmas and indexes."""
    _schema(f"sqlite:///{path}", path.parent)
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    for pragma in (f"busy_timeout = {BUSY_TIMEOUT_MS}", "journal_mode = WAL", "synchronous = NORMAL",
                   "foreign_keys = ON"):
        conn.execute(f"PRAGMA {pragma}")
    insert_task, start_sql = _sql(_INSERT_TASK, "?"), _sql(_START, "?")
    complete_sql, event = _sql(_COMPLETE, "?"), _sql(_EVENT, "?")
    retention_ms = int(DEFAULT_RETENTION.total_seconds() * 1000)
    tag = uuid.uuid4().hex[:8]
    start = time.perf_counter()
    for i in range(n):
        task_id, params = _lifecycle_params(i, tag)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(insert_task, params)
        conn.execute(event, (task_id, params[-1], "queued", None, None))
        conn.execute("COMMIT")
        now = to_ms_now()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(start_sql, (now, now, task_id))
        conn.execute(event, (task_id, now, "running", "queued", None))
        conn.execute("COMMIT")
        now = to_ms_now()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(complete_sql, (now, now, now + retention_ms, task_id))
        conn.execute(event, (task_id, now, "succeeded", "running", "ok"))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def raw_postgres_lifecycles(url: str, n: int, state_dir: Path) -> float:
    """The PostgreSQL floor: the same three transactions through raw psycopg (prepared, one connection)."""
    import psycopg
    from measure import libpq

    _schema(url, state_dir)
    insert_task, start_sql = _sql(_INSERT_TASK, "%s"), _sql(_START, "%s")
    complete_sql, event = _sql(_COMPLETE, "%s"), _sql(_EVENT, "%s")
    retention_ms = int(DEFAULT_RETENTION.total_seconds() * 1000)
    tag = uuid.uuid4().hex[:8]
    with psycopg.connect(libpq(url)) as conn:
        start = time.perf_counter()
        for i in range(n):
            task_id, params = _lifecycle_params(i, tag)
            with conn.transaction():
                conn.execute(insert_task, params)
                conn.execute(event, (task_id, params[-1], "queued", None, None))
            now = to_ms_now()
            with conn.transaction():
                conn.execute(start_sql, (now, now, task_id))
                conn.execute(event, (task_id, now, "running", "queued", None))
            now = to_ms_now()
            with conn.transaction():
                conn.execute(complete_sql, (now, now, now + retention_ms, task_id))
                conn.execute(event, (task_id, now, "succeeded", "running", "ok"))
        return time.perf_counter() - start


def side_by_side(n: int, rounds: int, pg_url: str | None) -> dict[str, list[float]]:
    """Alternate ledger and floor runs so machine drift hits both; returns seconds per run for each."""
    out: dict[str, list[float]] = {"ledger_sqlite": [], "ledger_sqlite_acp": [], "raw_sqlite": [], "ledger_pg": [],
                                   "ledger_pg_acp": [], "raw_pg": []}
    with tempfile.TemporaryDirectory(prefix="flbench-") as tmp:
        root = Path(tmp)
        for r in range(rounds):
            state = root / f"ledger{r}"
            out["ledger_sqlite"].append(ledger_lifecycles(f"sqlite:///{state / 'tasks' / 'runs.sqlite'}", n, state,
                                                          runtime="cli"))
            out["ledger_sqlite_acp"].append(ledger_lifecycles(f"sqlite:///{state / 'tasks' / 'runs.sqlite'}", n,
                                                              state, runtime="acp"))
            raw = root / f"raw{r}" / "runs.sqlite"
            raw.parent.mkdir(parents=True)
            out["raw_sqlite"].append(raw_sqlite_lifecycles(raw, n))
            if pg_url:
                from measure import postgres_database

                with postgres_database(pg_url) as url:
                    out["ledger_pg"].append(ledger_lifecycles(url, n, root / f"pgstate{r}", runtime="cli"))
                    out["ledger_pg_acp"].append(ledger_lifecycles(url, n, root / f"pgstate{r}", runtime="acp"))
                with postgres_database(pg_url) as url:
                    out["raw_pg"].append(raw_postgres_lifecycles(url, n, root / f"pgstate{r}"))
    return out


def best_rate(n: int, seconds: list[float]) -> float | None:
    """Lifecycles/s of the median run (medians damp one unlucky round either way)."""
    return n / statistics.median(seconds) if seconds else None


def bulk_ingest(url: str, n: int, state_dir: Path, batch_size: int = 5000) -> float:
    """Seconds to create `n` records through `create_many` (one transaction per batch)."""
    records = ({"runtime": "cli", "task": f"import {i}", "owner_key": OWNER, "run_id": f"bulk-{i}"}
               for i in range(n))
    with Ledger.open(state_dir=state_dir, database_url=url) as ledger:
        start = time.perf_counter()
        count = ledger.tasks.create_many(records, batch_size=batch_size)
        elapsed = time.perf_counter() - start
    assert count == n
    return elapsed
