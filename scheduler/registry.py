"""Gateway-side care of the session registry: restart-recovery tombstones for children it cannot resume."""

from __future__ import annotations

import logging

from sqlalchemy import Connection, and_, select, update

from flowledger.flows.ledger import Ledger
from flowledger.tasks import liveness
from flowledger.tasks.states import ACTIVE
from flowledger.tasks.tables import sessions, task_runs

log = logging.getLogger(__name__)
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
