"""Operator controls of cron jobs: pause, resume, and trigger (run once now, recorded like any run).

The controls live in their own small table, `cron_controls` (0..1 row per job; schema version 6). A running
gateway reads them on its 2-second cron reload: a paused job is unloaded (its schedule keeps, nothing fires),
a resumed one is loaded again, and a trigger request is taken (compare-and-set, so exactly one gateway runs
it) and fired at once on the cron executor. With no gateway running, `cron trigger` runs the job in its own
process under a short-lived lease, exactly as the gateway would.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection, delete, insert, select, update

from flowledger.tasks.tables import cron_controls

if TYPE_CHECKING:
    from flowledger.flows.ledger import Ledger

def set_paused(ledger: Ledger, job_id: str, paused: bool) -> bool:
    """Pause or resume; False when the job already was in that state."""
    now = ledger.clock.now()

    def unit(conn: Connection) -> bool:
        row = conn.execute(select(cron_controls.c.paused_at).where(cron_controls.c.job_id == job_id)).first()
        if row is None:
            if not paused:
                return False
            conn.execute(insert(cron_controls).values(job_id=job_id, paused_at=now))
            return True
        if (row[0] is not None) == paused:
            return False
        conn.execute(update(cron_controls).where(cron_controls.c.job_id == job_id)
                     .values(paused_at=now if paused else None))
        return True

    return bool(ledger.db.transact(unit))


def paused_at(ledger: Ledger) -> dict[str, datetime]:
    """job id -> when it was paused, for every paused job."""
    with ledger.db.read() as conn:
        rows = conn.execute(select(cron_controls.c.job_id, cron_controls.c.paused_at)
                            .where(cron_controls.c.paused_at.is_not(None)))
        return {str(job_id): at for job_id, at in rows}


def request_trigger(ledger: Ledger, job_id: str) -> None:
    now = ledger.clock.now()

    def unit(conn: Connection) -> None:
        changed = conn.execute(update(cron_controls).where(cron_controls.c.job_id == job_id)
                               .values(trigger_requested_at=now)).rowcount
        if not changed:
            conn.execute(insert(cron_controls).values(job_id=job_id, trigger_requested_at=now))

    ledger.db.transact(unit)


def take_triggers(ledger: Ledger) -> list[str]:
    """The jobs whose trigger was requested, each taken by exactly one caller (compare-and-set on the stamp)."""
    with ledger.db.read() as conn:
        pending = list(conn.execute(select(cron_controls.c.job_id, cron_controls.c.trigger_requested_at)
                                    .where(cron_controls.c.trigger_requested_at.is_not(None))))
    taken: list[str] = []
    for job_id, requested in pending:
        def unit(conn: Connection, job_id: str = job_id, requested: datetime = requested) -> int:
            return int(conn.execute(update(cron_controls).where(
                cron_controls.c.job_id == job_id, cron_controls.c.trigger_requested_at == requested)
                .values(trigger_requested_at=None)).rowcount)

        if ledger.db.transact(unit):
            taken.append(str(job_id))
    return taken


def forget(ledger: Ledger, job_id: str) -> None:
    """A removed job's controls go with it."""
    ledger.db.transact(lambda conn: conn.execute(delete(cron_controls).where(cron_controls.c.job_id == job_id)))
