"""Bulk creation of brand-new task records: imports, backfills and runtimes that emit many tasks at once.

`bulk_create` builds each record exactly as `TaskService.create` would for a task it has never seen (same
parsing, defaults, timestamp normalisation and cleanup stamp) and writes a batch at a time: one transaction per
batch holding one executemany INSERT for the tasks, one for their delivery origins and one for their initial
`task_events` rows. It does not merge with existing records by run id, as `create` does: that dedupe costs a
locked read per record, and bulk input is new by definition. A task id that already exists is refused.

Each batch commits on its own, so after an error the batches before the failing one stay written; the error
names the record (by its position in `records`) that stopped the run.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from itertools import islice
from typing import Any, cast

from sqlalchemy import Connection, insert, select

from flowledger.tasks.core import rules, store
from flowledger.tasks.core.clock import Clock
from flowledger.tasks.core.db import Database
from flowledger.tasks.core.drafts import DRAFT_FIELDS, TaskDraft, check_parent_flow, new_record, parse_draft
from flowledger.tasks.core.errors import InvalidInputError
from flowledger.tasks.core.hooks import Change, TaskHooks
from flowledger.tasks.core.models import Task, TaskEvent
from flowledger.tasks.core.tables import task_delivery_state, task_events, task_runs
from flowledger.tasks.core.task_rows import task_values

DEFAULT_BATCH_SIZE = 5000
BULK_TABLES = (task_runs.name, task_events.name, task_delivery_state.name)


def bulk_create(db: Database, clock: Clock, hooks: TaskHooks, records: Iterable[Mapping[str, Any]], *,
                retention: timedelta, batch_size: int = DEFAULT_BATCH_SIZE) -> int:
    """Create every record in `records` (each a mapping of `TaskDraft` fields); returns how many.

    `batch_size` records are validated, then written in one transaction; after-commit hooks run per batch. The
    clock is read once per batch: its records share their creation time, as they share their transaction.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}.")
    written = 0
    for offset, batch in _batches(records, batch_size):
        now = clock.now()
        drafts = [_draft(record, offset + i, now) for i, record in enumerate(batch)]
        # Generated ids are fresh UUIDv7s; only ids the caller chose can clash, so only those are checked.
        chosen = {d.task_id: offset + i for i, (d, r) in enumerate(zip(drafts, batch, strict=True))
                  if r.get("task_id")}
        if len(chosen) < sum(1 for r in batch if r.get("task_id")):
            _name_repeat(drafts, batch, offset)
        write = functools.partial(_write_batch, hooks=hooks, retention=retention, drafts=drafts, chosen=chosen,
                                  now=now)
        changes = db.transact(write)
        hooks.after_commit(changes)
        written += len(changes)
    if written:  # a bulk load into tables PostgreSQL has no statistics for would be planned blind
        db.analyze_if_never_analyzed(BULK_TABLES)
    return written


def _batches(records: Iterable[Mapping[str, Any]], size: int) -> Iterator[tuple[int, list[Mapping[str, Any]]]]:
    it = iter(records)
    offset = 0
    while batch := list(islice(it, size)):
        yield offset, batch
        offset += len(batch)


def _draft(record: Mapping[str, Any], index: int, now: datetime) -> Task:
    if not isinstance(record, Mapping):
        raise InvalidInputError(f"Record {index}: expected a mapping of task fields, got {type(record).__name__}.")
    unknown = sorted(str(k) for k in record if k not in DRAFT_FIELDS)
    if unknown:
        raise InvalidInputError(f"Record {index}: unknown task field(s): {', '.join(unknown)}.")
    try:
        return parse_draft(cast(TaskDraft, {"runtime": None, "task": None, **record}), now)
    except InvalidInputError as exc:
        raise InvalidInputError(f"Record {index}: {exc.message}") from None


def _write_batch(conn: Connection, *, hooks: TaskHooks, retention: timedelta, drafts: list[Task],
                 chosen: dict[str, int], now: datetime) -> list[Change]:
    _refuse_existing_ids(conn, chosen)
    tasks = []
    for draft in drafts:
        if draft.parent_flow_id:
            check_parent_flow(conn, hooks, draft.parent_flow_id, draft.owner_key, draft.scope_kind)
        tasks.append(new_record(conn, draft, now, retention=retention, hooks=hooks))
    events = [TaskEvent(task_id=t.task_id, at=t.created_at, kind=t.status.value, summary=rules.status_summary(t))
              for t in tasks]
    conn.execute(insert(task_runs), [task_values(t) for t in tasks])
    origins = [{"task_id": t.task_id, "requester_origin_json": json.dumps(t.requester_origin.to_json())}
               for t in tasks if t.requester_origin is not None]
    if origins:
        conn.execute(insert(task_delivery_state), origins)
    store.insert_events(conn, events)
    changes = [Change(t, None, e) for t, e in zip(tasks, events, strict=True)]
    for change in changes:
        hooks.on_written(conn, change, now)
    return changes


def _name_repeat(drafts: list[Task], batch: list[Mapping[str, Any]], offset: int) -> None:
    seen: dict[str, int] = {}
    for i, (draft, record) in enumerate(zip(drafts, batch, strict=True)):
        if not record.get("task_id"):
            continue
        if draft.task_id in seen:
            raise InvalidInputError(
                f"Record {offset + i}: task id {draft.task_id!r} repeats record {seen[draft.task_id]}.")
        seen[draft.task_id] = offset + i


def _refuse_existing_ids(conn: Connection, chosen: dict[str, int]) -> None:
    """A duplicate id would surface as a constraint violation (exit 3); name it as the caller's mistake."""
    ids = list(chosen)
    for start in range(0, len(ids), 900):  # stay under every engine's bound-parameter limit
        chunk = ids[start:start + 900]
        clash = conn.execute(select(task_runs.c.task_id).where(task_runs.c.task_id.in_(chunk)).limit(1)).scalar()
        if clash is not None:
            raise InvalidInputError(f"Record {chosen[clash]}: task id {clash!r} already exists.")
