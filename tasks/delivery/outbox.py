"""The notice outbox: notices are recorded in the database by the writer and sent by someone else.

A writer (a CLI command, a flow driver, a runtime) never waits on a channel: it records what is due in
`notice_outbox` — a ready message (flow notices, state-change notices) or a task whose terminal delivery is due —
and returns. A sender sends: the gateway every second, or, when no gateway runs, a short-lived process the writer
starts (`python -m flowledger.scheduler.sender`, see `kick`). Each row is sent at most once across processes: a
sender claims it with a compare-and-set on `claimed_by` (a claim older than CLAIM_TTL belonged to a sender that
died mid-send) and settles it in one transaction with its fallback.

Statuses: `pending` (waiting for a sender), `delivered`, `failed` (the send failed after the channel's retries;
a row with `fallback` is then queued to its session), `session_queued` (no direct route: queued to the session at
once), `done` (a task_terminal row whose task delivery ran).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, and_, delete, insert, or_, select, update

from flowledger.tasks.core.db import Database
from flowledger.tasks.core.models import DeliveryOrigin
from flowledger.tasks.core.tables import notice_outbox
from flowledger.tasks.runs import liveness
from flowledger.tasks.sessions.events import WAKE_REASON, enqueue_system_event, request_heartbeat_wake

log = logging.getLogger(__name__)

MESSAGE = "message"
TASK_TERMINAL = "task_terminal"
PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
SESSION_QUEUED = "session_queued"
DONE = "done"
# Longer than a channel's 60-second send budget.
CLAIM_TTL = timedelta(minutes=5)
KEEP_SETTLED = timedelta(days=7)
# Only gateways (not an in-process `flowledger run`'s own lease) run the outbox loop.
GATEWAY_PREFIX = "gw-"


@dataclass(frozen=True, slots=True)
class Notice:
    notice_key: str
    kind: str
    subject_id: str
    subject_status: str
    session_key: str
    origin: DeliveryOrigin | None
    text: str
    fallback: bool
    status: str
    attempts: int = 0
    last_error: str | None = None


def _notice(row: Any) -> Notice:
    m = row._mapping
    origin = DeliveryOrigin.from_mapping(json.loads(m["origin_json"])) if m["origin_json"] else None
    return Notice(m["notice_key"], m["kind"], m["subject_id"], m["subject_status"], m["session_key"], origin, m["text"],
                  bool(m["fallback"]), m["status"], int(m["attempts"] or 0), m["last_error"])


def record(conn: Connection, now: datetime, *, key: str, kind: str, subject_id: str, subject_status: str = "",
           session_key: str = "",
           origin: DeliveryOrigin | None = None, text: str = "", fallback: bool = False,
           direct: bool = True) -> bool:
    """Record a notice once per key, in the caller's transaction; False when the key was already recorded.

    A message without a direct route (`direct` False) goes to its session's queue at once (no sender needed).
    """
    if conn.execute(select(notice_outbox.c.notice_key).where(notice_outbox.c.notice_key == key)).first():
        return False
    status = PENDING
    if kind == MESSAGE and not direct:
        status = SESSION_QUEUED
        if session_key:
            enqueue_system_event(conn, session_key, key, text, now, origin.to_json() if origin else None)
            request_heartbeat_wake(conn, session_key, WAKE_REASON, now)
    conn.execute(insert(notice_outbox).values(
        notice_key=key, kind=kind, subject_id=subject_id, subject_status=subject_status, session_key=session_key,
        origin_json=json.dumps(origin.to_json()) if origin else None, text=text, fallback=fallback,
        status=status, created_at=now, settled_at=None if status == PENDING else now))
    return status == PENDING


def get(db: Database, key: str) -> Notice | None:
    with db.read() as conn:
        row = conn.execute(select(notice_outbox).where(notice_outbox.c.notice_key == key)).first()
    return _notice(row) if row is not None else None


def for_subject(db: Database, subject_id: str) -> list[Notice]:
    with db.read() as conn:
        rows = conn.execute(select(notice_outbox).where(notice_outbox.c.subject_id == subject_id)
                            .order_by(notice_outbox.c.created_at, notice_outbox.c.notice_key)).all()
    return [_notice(row) for row in rows]


def claim(db: Database, now: datetime, worker: str, limit: int = 50) -> list[Notice]:
    """Claim up to `limit` pending notices for `worker`, oldest first; each is claimed by one worker at a time."""
    stale = now - CLAIM_TTL

    def unit(conn: Connection) -> list[Notice]:
        rows = conn.execute(select(notice_outbox).where(and_(
            notice_outbox.c.status == PENDING,
            or_(notice_outbox.c.claimed_by.is_(None), notice_outbox.c.claimed_at < stale)))
            .order_by(notice_outbox.c.created_at, notice_outbox.c.notice_key).limit(limit)).all()
        claimed: list[Notice] = []
        for row in rows:
            won = conn.execute(update(notice_outbox).where(and_(
                notice_outbox.c.notice_key == row.notice_key, notice_outbox.c.status == PENDING,
                or_(notice_outbox.c.claimed_by.is_(None), notice_outbox.c.claimed_at < stale)))
                .values(claimed_by=worker, claimed_at=now)).rowcount
            if won:
                claimed.append(_notice(row))
        return claimed

    return db.transact(unit)


def settle(db: Database, notice: Notice, now: datetime, status: str, *, attempts: int = 0,
           error: str | None = None) -> None:
    """Record how a claimed notice ended; a failed one with `fallback` is queued to its session, same transaction."""
    def unit(conn: Connection) -> None:
        if status == FAILED and notice.fallback and notice.session_key:
            enqueue_system_event(conn, notice.session_key, notice.notice_key, notice.text, now,
                                 notice.origin.to_json() if notice.origin else None)
            request_heartbeat_wake(conn, notice.session_key, WAKE_REASON, now)
        conn.execute(update(notice_outbox).where(notice_outbox.c.notice_key == notice.notice_key).values(
            status=status, settled_at=now, attempts=notice.attempts + attempts, last_error=error))

    db.transact(unit)


def prune(db: Database, now: datetime) -> int:
    """Settled notices older than KEEP_SETTLED go (the gateway's sweep)."""
    cutoff = now - KEEP_SETTLED
    return int(db.transact(lambda conn: conn.execute(delete(notice_outbox).where(and_(
        notice_outbox.c.status != PENDING, notice_outbox.c.settled_at < cutoff))).rowcount))


# --- waking a sender -------------------------------------------------------------------------------------


# The sender this process started last, per ledger: while it runs (it lingers LINGER_S after the outbox empties),
# later writes of this process to that ledger need no sender of their own (a cancel of a flow with many children
# starts one).
_SENDERS: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
LINGER_S = 1.0


def kick(db: Database, now: datetime, *, state_dir: Path | None, database_url: str | None) -> bool:
    """Make sure someone sends what is pending: a running gateway does (its loop runs every second); otherwise
    start a short-lived sender process, detached from this one, and return at once. True when one was started.
    A notice recorded just as a lingering sender exits waits for the next sender or the gateway."""
    ledger_key = (str(state_dir), str(database_url))
    running = _SENDERS.get(ledger_key)
    if running is not None and running.poll() is None:
        return False
    with db.read() as conn:
        if any(g.startswith(GATEWAY_PREFIX) for g in liveness.fresh_gateways(conn, now)):
            return False
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLEDGER_")}
    if state_dir is not None:
        env["FLOWLEDGER_STATE_DIR"] = str(state_dir)
    if database_url is not None:
        env["FLOWLEDGER_DATABASE_URL"] = database_url
    try:
        _SENDERS[ledger_key] = subprocess.Popen(
            [sys.executable, "-m", "flowledger.scheduler.sender"], env=env, start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True)
    except OSError as exc:  # the gateway's sweep (or the next sender) still finds the rows
        log.info("could not start a notice sender: %s", exc)
        return False
    return True

