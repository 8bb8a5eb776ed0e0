"""Operator controls of cron jobs, as stored: paused since when, and a trigger waiting to be taken.

`cron_controls` holds 0..1 row per job (schema version 6). `flowledger cron pause/resume/trigger` write here;
a running gateway reads it on its cron reload: a paused job is unloaded, a requested trigger is taken by
exactly one caller (compare-and-set on the request stamp) and fired once.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete, insert, select, update

from flowledger.tasks.core.clock import Clock
from flowledger.tasks.core.db import Database
from flowledger.tasks.core.tables import cron_controls


class CronControls:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def set_paused(self, job_id: str, paused: bool) -> bool:
        """Pause or resume; False when the job already was in that state."""
        now = self.clock.now()

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

        return bool(self.db.transact(unit))

    def paused_at(self) -> dict[str, datetime]:
        """job id -> when it was paused, for every paused job."""
        with self.db.read() as conn:
            rows = conn.execute(select(cron_controls.c.job_id, cron_controls.c.paused_at)
                                .where(cron_controls.c.paused_at.is_not(None)))
            return {str(job_id): at for job_id, at in rows}

    def request_trigger(self, job_id: str) -> None:
        now = self.clock.now()

        def unit(conn: Connection) -> None:
            changed = conn.execute(update(cron_controls).where(cron_controls.c.job_id == job_id)
                                   .values(trigger_requested_at=now)).rowcount
            if not changed:
                conn.execute(insert(cron_controls).values(job_id=job_id, trigger_requested_at=now))

        self.db.transact(unit)

    def take_triggers(self) -> list[str]:
        """The jobs whose trigger was requested, each taken by exactly one caller (compare-and-set on the stamp)."""
        with self.db.read() as conn:
            pending = list(conn.execute(select(cron_controls.c.job_id, cron_controls.c.trigger_requested_at)
                                        .where(cron_controls.c.trigger_requested_at.is_not(None))))
        taken: list[str] = []
        for job_id, requested in pending:
            def unit(conn: Connection, job_id: str = job_id, requested: datetime = requested) -> int:
                return int(conn.execute(update(cron_controls).where(
                    cron_controls.c.job_id == job_id, cron_controls.c.trigger_requested_at == requested)
                    .values(trigger_requested_at=None)).rowcount)

            if self.db.transact(unit):
                taken.append(str(job_id))
        return taken

    def forget(self, job_id: str) -> None:
        """A removed job's controls go with it."""
        self.db.transact(lambda conn: conn.execute(delete(cron_controls).where(cron_controls.c.job_id == job_id)))
