"""One gateway at a time runs the sweep and fires cron jobs, however many share the database.

PostgreSQL: a session-level advisory lock held on a dedicated connection; when its gateway dies the
connection closes and the lock passes on. SQLite (one host): an exclusive `flock` on a file in the
state dir, released by the kernel when the process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy import text

from flowledger.tasks.core.db import Database

log = logging.getLogger(__name__)
LEADER_LOCK_KEY = 7204118


class Leadership:
    """`try_acquire()` keeps or takes the leadership (cheap, call it before every leader-only job);
    `release()` gives it up. At most one holder per database at any moment, on either engine."""

    def __init__(self, db: Database, state_dir: Path) -> None:
        self.db = db
        self.state_dir = state_dir
        self._conn: Any = None
        self._fd: int | None = None
        self.held = False

    def try_acquire(self) -> bool:
        """Cheap to call often: keeps the lock if held, tries to take it otherwise."""
        if self.db.is_postgres:
            return self._try_pg()
        return self._try_file()

    def _try_pg(self) -> bool:
        try:
            if self._conn is None:
                self._conn = self.db.engine.connect()
            if self.held:  # the lock lives as long as this connection: prove it is still there
                self._conn.execute(text("SELECT 1"))
                self._conn.commit()
                return True
            got = bool(self._conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LEADER_LOCK_KEY}).scalar())
            self._conn.commit()
        except Exception as exc:  # a dropped connection loses the lock: start over next time
            log.warning("leader lock check failed: %s", str(exc).splitlines()[0] if str(exc) else exc)
            self._drop_pg()
            return False
        if got and not self.held:
            log.info("this gateway now runs the sweep and cron jobs")
        self.held = got
        return got

    def _drop_pg(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None
        self.held = False

    def _try_file(self) -> bool:
        if self.held:
            return True
        sqlite_path = self.db.sqlite_path
        path = (Path(f"{sqlite_path}.leader.lock") if sqlite_path is not None
                else Path(self.state_dir) / "gateway.leader.lock")
        try:
            if self._fd is None:
                path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
                self._fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        log.info("this gateway now runs the sweep and cron jobs")
        self.held = True
        return True

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                if self.held:
                    self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LEADER_LOCK_KEY})
                    self._conn.commit()
            self._drop_pg()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
            self._fd = None
        self.held = False
