"""Gateway-side care of the session registry: restart-recovery tombstones and cron-run row pruning."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta

from sqlalchemy import Connection, and_, delete, select, update

from flowledger.flows.ledger import Ledger
from flowledger.scheduler.cron import running_job_ids
from flowledger.tasks import liveness
from flowledger.tasks.states import ACTIVE
from flowledger.tasks.tables import sessions, task_runs

log = logging.getLogger(__name__)
SESSION_RETENTION = timedelta(days=7)
_CRON_RUN = re.compile(r"^cron:([^:]+):run:[^:]+$")
RESUMABLE_KINDS = ("subagent", "acp")


def tombstone_text(gateway_id: str) -> str:
    return f"restart recovery: gateway {gateway_id} stopped and the child could not be resumed"


def tombstone_orphans(ledger: Ledger, current_gateway: str) -> int:
    """Children whose gateway lease is gone cannot be resumed (their process died with it): tombstone the
    session row so the sweep marks their task lost instead of treating them as recoverable."""

    def unit(conn: Connection) -> int:
        now = ledger.clock.now()
        fresh = liveness.fresh_gateways(conn, now) | {current_gateway}
        rows = conn.execute(select(sessions.c.session_key, sessions.c.gateway_id).where(and_(
            sessions.c.kind.in_(RESUMABLE_KINDS), sessions.c.tombstone.is_(None), sessions.c.gateway_id.is_not(None),
        ))).all()
        count = 0
        for key, gateway_id in rows:
            if gateway_id in fresh:
                continue
            active = conn.execute(select(task_runs.c.task_id).where(and_(
                task_runs.c.child_session_key == key, task_runs.c.status.in_([s.value for s in ACTIVE])))).first()
            if active is None:
                continue
            conn.execute(update(sessions).where(sessions.c.session_key == key)
                         .values(tombstone=tombstone_text(gateway_id), updated_at=now))
            log.info("task %s child session %s tombstoned (gateway %s gone)", active[0], key, gateway_id)
            count += 1
        return count

    return ledger.db.transact(unit)


def prune_cron_run_sessions(ledger: Ledger, now: datetime | None = None) -> int:
    """Remove `agent:<id>:cron:<job>:run:<uuid>` rows older than 7 days, keeping running jobs' rows,
    protected rows and every non-cron row (REFERENCE §6.6)."""
    moment = now or ledger.clock.now()

    def unit(conn: Connection) -> int:
        running = running_job_ids(conn)
        rows = conn.execute(select(sessions.c.session_key).where(and_(
            sessions.c.updated_at < moment - SESSION_RETENTION, sessions.c.protected.is_(False)))).all()
        doomed = []
        for (key,) in rows:
            parts = key.split(":", 2)
            if len(parts) < 3 or parts[0] != "agent":
                continue
            match = _CRON_RUN.match(parts[2])
            if match is None or match.group(1).lower() in running:
                continue
            doomed.append(key)
        if doomed:
            conn.execute(delete(sessions).where(sessions.c.session_key.in_(doomed)))
        return len(doomed)

    return ledger.db.transact(unit)
