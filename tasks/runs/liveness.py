"""Durable runtime backing (CONTRACT §6.7): gateway leases, the runs they own, and the session registry.

Any process — a gateway, the offline CLI — reads the same rows, so every one of them decides `lost` the
same way. A run is live while its gateway's lease is fresh; a lease expires two minutes after its last
renewal (the gateway renews it every 30 seconds).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, insert, select, update

from flowledger.tasks.core.tables import gateway_leases, run_contexts, sessions

LEASE_TTL = timedelta(minutes=2)
LEASE_RENEW_EVERY = timedelta(seconds=30)


# --- gateway leases -----------------------------------------------------------------------------------


def renew_lease(conn: Connection, gateway_id: str, now: datetime, *, host: str = "", pid: int = 0,
                ttl: timedelta = LEASE_TTL) -> None:
    updated = conn.execute(
        update(gateway_leases).where(gateway_leases.c.gateway_id == gateway_id)
        .values(renewed_at=now, expires_at=now + ttl, stopped_at=None)
    ).rowcount
    if not updated:
        conn.execute(insert(gateway_leases).values(gateway_id=gateway_id, host=host, pid=pid, started_at=now,
                                                   renewed_at=now, expires_at=now + ttl))


def release_lease(conn: Connection, gateway_id: str, now: datetime) -> None:
    """A clean stop: the lease ends now, so its runs stop counting as live at once."""
    conn.execute(update(gateway_leases).where(gateway_leases.c.gateway_id == gateway_id)
                 .values(expires_at=now, stopped_at=now))


def fresh_gateways(conn: Connection, now: datetime) -> set[str]:
    rows = conn.execute(select(gateway_leases.c.gateway_id).where(gateway_leases.c.expires_at > now))
    return {r[0] for r in rows}


def lease_is_fresh(conn: Connection, gateway_id: str, now: datetime) -> bool:
    return conn.execute(
        select(gateway_leases.c.gateway_id).where(
            and_(gateway_leases.c.gateway_id == gateway_id, gateway_leases.c.expires_at > now))
    ).first() is not None


# --- run contexts -------------------------------------------------------------------------------------


def register_run(conn: Connection, run_id: str, gateway_id: str, now: datetime, *, task_id: str | None = None,
                 pid: int | None = None) -> None:
    updated = conn.execute(
        update(run_contexts).where(run_contexts.c.run_id == run_id)
        .values(gateway_id=gateway_id, task_id=task_id, pid=pid, updated_at=now)
    ).rowcount
    if not updated:
        conn.execute(insert(run_contexts).values(run_id=run_id, gateway_id=gateway_id, task_id=task_id, pid=pid,
                                                 started_at=now, updated_at=now))


def release_run(conn: Connection, run_id: str) -> None:
    conn.execute(delete(run_contexts).where(run_contexts.c.run_id == run_id))


def live_run_ids(conn: Connection, now: datetime) -> set[str]:
    """Run ids owned by a gateway whose lease is fresh."""
    stmt = select(run_contexts.c.run_id).select_from(
        run_contexts.join(gateway_leases, gateway_leases.c.gateway_id == run_contexts.c.gateway_id)
    ).where(gateway_leases.c.expires_at > now)
    return {r[0] for r in conn.execute(stmt)}


def run_is_live(conn: Connection, run_id: str, now: datetime) -> bool:
    stmt = select(run_contexts.c.run_id).select_from(
        run_contexts.join(gateway_leases, gateway_leases.c.gateway_id == run_contexts.c.gateway_id)
    ).where(and_(run_contexts.c.run_id == run_id, gateway_leases.c.expires_at > now))
    return conn.execute(stmt).first() is not None


# --- session registry ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Session:
    session_key: str
    agent_id: str | None
    kind: str
    parent_session_key: str | None
    spawned_by: str | None
    acp: dict[str, Any] | None
    mode: str | None
    bindings: list[dict[str, Any]]
    tombstone: str | None
    gateway_id: str | None
    protected: bool
    created_at: datetime
    updated_at: datetime


def _loads(text: str | None, default: Any) -> Any:
    if text is None:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def _session(row: Any) -> Session:
    m = row._mapping
    return Session(
        session_key=m["session_key"], agent_id=m["agent_id"], kind=m["kind"],
        parent_session_key=m["parent_session_key"], spawned_by=m["spawned_by"], acp=_loads(m["acp_json"], None),
        mode=m["mode"], bindings=_loads(m["bindings_json"], []), tombstone=m["tombstone"],
        gateway_id=m["gateway_id"], protected=bool(m["protected"]), created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def upsert_session(conn: Connection, session_key: str, now: datetime, **fields: Any) -> None:
    """Create or update a session row. JSON fields: `acp` (dict), `bindings` (list)."""
    values: dict[str, Any] = {}
    for name, value in fields.items():
        if name == "acp":
            values["acp_json"] = json.dumps(value) if value is not None else None
        elif name == "bindings":
            values["bindings_json"] = json.dumps(value) if value is not None else None
        else:
            values[name] = value
    values["updated_at"] = now
    updated = conn.execute(update(sessions).where(sessions.c.session_key == session_key).values(**values)).rowcount
    if not updated:
        conn.execute(insert(sessions).values(session_key=session_key, created_at=now, **values))


def get_session(conn: Connection, session_key: str, *, case_insensitive: bool = True) -> Session | None:
    row = conn.execute(select(sessions).where(sessions.c.session_key == session_key)).first()
    if row is None and case_insensitive:
        from sqlalchemy import func

        row = conn.execute(select(sessions).where(func.lower(sessions.c.session_key) == session_key.lower())
                           ).first()
    return _session(row) if row is not None else None


def delete_session(conn: Connection, session_key: str) -> None:
    conn.execute(delete(sessions).where(sessions.c.session_key == session_key))


def list_sessions(conn: Connection, *, kind: str | None = None) -> list[Session]:
    stmt = select(sessions)
    if kind is not None:
        stmt = stmt.where(sessions.c.kind == kind)
    return [_session(r) for r in conn.execute(stmt.order_by(sessions.c.session_key))]
