"""The session queue: durable system events per session, and immediate heartbeat wake requests.

An event is unique per (session, context key), so a delivery retried by another process queues it once.
Connection-level functions join the caller's transaction; `SessionEvents` is the door the CLI and the
gateway use.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from flowledger.tasks.core.clock import Clock, iso_z
from flowledger.tasks.core.db import Database
from flowledger.tasks.core.sessionkeys import required_key
from flowledger.tasks.core.tables import heartbeat_wakes, system_events

WAKE_REASON = "background-task"
WAKE_REASON_BLOCKED = "background-task-blocked"


@dataclass(frozen=True, slots=True)
class SystemEvent:
    session_key: str
    context_key: str
    text: str
    created_at: datetime
    delivery_context: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"context_key": self.context_key, "text": self.text, "created_at": iso_z(self.created_at)}


SystemEvents = list[SystemEvent]


@dataclass(frozen=True, slots=True)
class Wake:
    wake_id: int
    session_key: str
    reason: str
    requested_at: datetime


Wakes = list[Wake]


def enqueue_system_event(conn: Connection, session_key: str, context_key: str, text: str, now: datetime,
                         delivery_context: Mapping[str, Any] | None = None) -> bool:
    """Queue `text` once per (session, context key); True when this call added it."""
    values = {"session_key": session_key, "context_key": context_key, "text": text, "created_at": now,
              "delivery_context_json": json.dumps(dict(delivery_context)) if delivery_context else None}
    if conn.dialect.name == "postgresql":
        stmt: Any = postgresql.insert(system_events).values(**values).on_conflict_do_nothing(
            index_elements=["session_key", "context_key"])
    elif conn.dialect.name == "sqlite":
        stmt = sqlite.insert(system_events).values(**values).on_conflict_do_nothing(
            index_elements=["session_key", "context_key"])
    else:  # other engines: check first; the unique constraint still refuses a racing duplicate
        exists = conn.execute(select(system_events.c.id).where(and_(
            system_events.c.session_key == session_key, system_events.c.context_key == context_key))).first()
        if exists is not None:
            return False
        stmt = insert(system_events).values(**values)
    # RETURNING, not rowcount: PostgreSQL answers a skipped ON CONFLICT insert with rowcount -1 (truthy).
    return conn.execute(stmt.returning(system_events.c.id)).first() is not None


def _row_to_event(row: Any) -> SystemEvent:
    context = json.loads(row.delivery_context_json) if row.delivery_context_json else None
    return SystemEvent(row.session_key, row.context_key, row.text, row.created_at, context)


def list_system_events(conn: Connection, session_key: str) -> list[SystemEvent]:
    """Oldest first: the order the owner should read them."""
    stmt = select(system_events).where(system_events.c.session_key == session_key).order_by(system_events.c.id)
    return [_row_to_event(r) for r in conn.execute(stmt)]


def drain_system_events(conn: Connection, session_key: str) -> list[SystemEvent]:
    """Remove and return exactly the rows read, so an event queued meanwhile survives for the next drain."""
    stmt = select(system_events).where(system_events.c.session_key == session_key).order_by(system_events.c.id)
    rows = list(conn.execute(stmt))
    if rows:
        conn.execute(delete(system_events).where(system_events.c.id.in_([r.id for r in rows])))
    return [_row_to_event(r) for r in rows]


def request_heartbeat_wake(conn: Connection, session_key: str, reason: str, now: datetime) -> int:
    result = conn.execute(insert(heartbeat_wakes).values(session_key=session_key, reason=reason,
                                                         requested_at=now))
    key = result.inserted_primary_key
    return int(key[0]) if key else 0


def pending_wakes(conn: Connection, session_key: str | None = None) -> list[Wake]:
    stmt = select(heartbeat_wakes).where(heartbeat_wakes.c.fired_at.is_(None)).order_by(heartbeat_wakes.c.id)
    if session_key is not None:
        stmt = stmt.where(heartbeat_wakes.c.session_key == session_key)
    return [Wake(r.id, r.session_key, r.reason, r.requested_at) for r in conn.execute(stmt)]


def claim_wake(conn: Connection, wake_id: int, now: datetime) -> bool:
    """Mark a wake fired; only the one process whose update lands fires the heartbeat hook."""
    result = conn.execute(update(heartbeat_wakes).where(and_(
        heartbeat_wakes.c.id == wake_id, heartbeat_wakes.c.fired_at.is_(None))).values(fired_at=now))
    return bool(result.rowcount)


class SessionEvents:
    """Service-level access to the session queue for the CLI and the gateway."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def list(self, session_key: str) -> SystemEvents:
        key = required_key(session_key)
        with self.db.read() as conn:
            return list_system_events(conn, key)

    def drain(self, session_key: str) -> SystemEvents:
        key = required_key(session_key)
        return self.db.transact(lambda conn: drain_system_events(conn, key))

    def enqueue(self, session_key: str, context_key: str, text: str) -> bool:
        key = required_key(session_key)
        now = self.clock.now()
        return self.db.transact(lambda conn: enqueue_system_event(conn, key, context_key, text, now))

    def pending_wakes(self, session_key: str | None = None) -> Wakes:
        with self.db.read() as conn:
            return pending_wakes(conn, session_key)

    def claim_wake(self, wake_id: int) -> bool:
        now = self.clock.now()
        return self.db.transact(lambda conn: claim_wake(conn, wake_id, now))
