"""The lean write door on SQLite: `tasks cancel` of a `cli` task and `run --detach` of a command, through the
standard library's sqlite3, without SQLAlchemy, sqlmodel or the hooks machinery (docs/performance.md, "Round two").

One store contract, two doors: the record, the changed columns and the history row come from the same pure
functions the ORM service uses (`rules.cancelled`, `rules.prepare_write`, `rules.history_event`,
`rules.created_event`, `draft_rules.stamp_new`, `task_rows.changed_values` / `driver_values`,
`payload_rows.payload_values`); only the INSERTs and the guarded UPDATE are written out here, in the shape
tasks/core/store.py builds them. The counts are kept by the database's triggers, whichever door writes.
tests/store/test_lean_writes.py checks both doors leave identical rows, events and counts.

The same guarantees: the connection gets the full path's pragmas (tasks/core/sqlite_discipline.py), every write
is one `BEGIN IMMEDIATE` transaction holding the schema-version check, the compare-and-set (`status IN` the
allowed predecessors: never a downgrade, a lost race changes nothing) and its one event row.

It writes only what needs none of the hooks the full path runs around a task write (tasks/core/hooks.py), and
raises `FallbackError` *before writing anything* otherwise, for the full path to do:
- a task linked to a flow (the flow layer syncs the flow in the task's transaction, flows/mirror.py);
- a task of another runtime than `cli` (a live agent, a child session, a generation job);
- a write that leaves a notice due (`due.terminal_eligible`, `due.state_change_due`: the outbox and a sender);
- a write that records a delivery origin (the requester's route, tasks/delivery/dispatch.py `on_written`);
- an ambiguous or unknown lookup, a run id already recorded, another schema version.
A cancel of a task already ended is refused as the full path refuses it (`CancelRefusedError`), nothing written.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from flowledger.tasks.core import generation_kinds, rules, sqlite_discipline
from flowledger.tasks.core.clock import to_ms
from flowledger.tasks.core.draft_rules import stamp_new
from flowledger.tasks.core.models import DEFAULT_RETENTION, Task, TaskEvent
from flowledger.tasks.core.states import ACTIVE, Runtime, is_terminal
from flowledger.tasks.core.task_rows import changed_values, driver_values, task_values
from flowledger.tasks.delivery.due import state_change_due, terminal_eligible
from flowledger.tasks.health.sqlite_reads import SCHEMA_VERSION, FallbackError, LeanReader

T = TypeVar("T")


class CancelRefusedError(Exception):
    """The full path would refuse this cancel with `reason` (and write nothing): say so as it does."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
_EVENT_KEYS = ("task_id", "at", "kind", "summary", "previous_status")


def _params(values: Iterable[object]) -> tuple[object, ...]:
    """Bind values; NUL in text is refused by the full path (tasks/core/db.py), so it is the full path's to refuse."""
    params = tuple(values)
    if any(type(v) is str and "\x00" in v for v in params):
        raise FallbackError("NUL in a text value")
    return params


def _insert(table: str, values: Mapping[str, object]) -> tuple[str, tuple[object, ...]]:
    return (f"INSERT INTO {table} ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
            _params(values.values()))


def quiet_after_commit(task: Task, event: TaskEvent | None) -> bool:
    """Whether the full path's after-commit hooks would do nothing for this write: no notice due (DeliveryHooks),
    no generation job to complete (GenerationHooks)."""
    return not (terminal_eligible(task) or (event is not None and state_change_due(task, event))
                or generation_kinds.is_generation(task))


class LeanWriter(LeanReader):
    """An existing SQLite ledger opened for the lean door's writes. Use as a context manager."""

    def __init__(self, path: Path, now: datetime) -> None:
        super().__init__(path, now)  # checks the schema version in a read transaction
        self.conn.rollback()
        sqlite_discipline.configure(self.conn)
        self.retention = DEFAULT_RETENTION

    def close(self) -> None:
        """As tasks/core/db.py `close`: truncate the WAL if that is possible now, never waiting."""
        try:
            if self.conn.in_transaction:
                self.conn.rollback()
            sqlite_discipline.checkpoint_without_waiting(self.conn)
        except sqlite3.Error:
            pass  # normal (another process holds the file); the full path logs it at debug level only
        finally:
            self.conn.close()

    def _write(self, unit: Callable[[], T]) -> T:
        """`unit` in one BEGIN IMMEDIATE transaction, committed when it returns, rolled back when it raises."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            row = self.conn.execute("SELECT value FROM schema_meta WHERE meta_key = 'schema_version'").fetchone()
            if row is None or str(row[0]) != str(SCHEMA_VERSION):
                raise FallbackError(f"schema version {row[0] if row else None!r}")
            result = unit()
        except BaseException:
            self.conn.rollback()
            raise
        self.conn.commit()
        return result

    def _append_event(self, event: TaskEvent) -> None:
        values = dict(zip(_EVENT_KEYS, (event.task_id, to_ms(event.at), event.kind, event.summary,
                                        event.previous_status), strict=True))
        self.conn.execute(*_insert("task_events", values))

    # --- tasks cancel ------------------------------------------------------------------------------------

    def cancel(self, lookup: str, reason: str | None) -> Task:
        """TaskService.cancel for a `cli` task no hook takes part in: the cancelled task. The gateway running its
        command sees the status and stops the child, as after a cancel through the full path."""
        return self._write(lambda: self._cancel(lookup, reason))

    def _cancel(self, lookup: str, reason: str | None) -> Task:
        current = self.resolve_task(lookup)
        if is_terminal(current.status):  # TaskService.cancel's first refusal, whatever the task: nothing to write
            raise CancelRefusedError(rules.ALREADY_TERMINAL)
        if current.runtime != Runtime.CLI or current.parent_flow_id is not None:
            raise FallbackError(f"a {current.runtime.value} task, flow {current.parent_flow_id}")
        if current.status not in ACTIVE:
            raise FallbackError(f"task is {current.status.value}")
        new = rules.prepare_write(rules.reopen_delivery_on_override(current, rules.cancelled(current, self.now,
                                                                                              reason)),
                                  self.retention)
        event = rules.history_event(current, new, self.now, summary=reason)
        if new.requester_origin != current.requester_origin or not quiet_after_commit(new, event):
            raise FallbackError("the write has side effects for the full path")
        values = changed_values(new, current)
        statuses = sorted(s.value for s in ACTIVE)
        updated = self.conn.execute(
            f"UPDATE task_runs SET {', '.join(f'{k} = ?' for k in values)} "
            f"WHERE task_id = ? AND status IN ({', '.join('?' * len(statuses))})",
            _params((*driver_values(values).values(), new.task_id, *statuses))).rowcount
        if not updated:  # another writer ended it first: nothing written, the full path tells the user
            raise FallbackError("compare-and-set lost")
        if event is not None:
            self._append_event(event)
        return new

    # --- run --detach ------------------------------------------------------------------------------------

    def submit(self, draft: Task, payload: Mapping[str, object]) -> Task:
        """`queue.enqueue` of a `cli` draft (draft_rules.parse_draft) with its payload row (payload_rows), in one
        transaction: the created task."""
        return self._write(lambda: self._submit(draft, payload))

    def _submit(self, draft: Task, payload: Mapping[str, object]) -> Task:
        if draft.runtime != Runtime.CLI or draft.parent_flow_id is not None or draft.requester_origin is not None:
            raise FallbackError("not a plain cli task")
        if draft.run_id is None or self.conn.execute("SELECT 1 FROM task_runs WHERE run_id = ?",
                                                      (draft.run_id,)).fetchone() is not None:
            raise FallbackError("the run id is already recorded (a repeat merges: the full path's job)")
        created = stamp_new(draft, self.now, retention=self.retention)
        event = rules.created_event(created)
        if is_terminal(created.status) or not quiet_after_commit(created, event):
            raise FallbackError("the write has side effects for the full path")
        self.conn.execute(*_insert("task_payloads", payload))
        self.conn.execute(*_insert("task_runs", driver_values(task_values(created))))
        self._append_event(event)
        return created

    def fresh_gateway_ids(self) -> set[str]:
        """tasks/runs/liveness.py `fresh_gateways`: ids of every lease fresh now, read after the write."""
        return {str(r[0]) for r in self.conn.execute("SELECT gateway_id FROM gateway_leases WHERE expires_at > ?",
                                                     (to_ms(self.now),))}

    def __enter__(self) -> LeanWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
