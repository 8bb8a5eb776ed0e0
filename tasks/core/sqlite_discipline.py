"""How every flowledger connection to a SQLite ledger behaves, on the driver connection itself (no SQLAlchemy):
the pragmas each connection starts with, and the checkpoint a closing process takes without waiting.

Used by tasks/core/db.py for the ORM engine's connections and by the lean SQLite door (flows/lean_writes.py), so
both doors wait, journal and sync the same way.
"""

from __future__ import annotations

import logging
import sqlite3

log = logging.getLogger("flowledger.tasks.core.db")  # where these messages always came from

BUSY_TIMEOUT_MS = 30_000


def configure(conn: sqlite3.Connection) -> None:
    """WAL, `synchronous=NORMAL`, foreign keys on, and a long busy timeout: writers queue rather than fail."""
    cursor = conn.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def checkpoint_without_waiting(conn: sqlite3.Connection) -> None:
    """Truncate the WAL if that is possible *now*, else a PASSIVE checkpoint; raises sqlite3.Error only for what
    the caller logs (a TRUNCATE that would wait fails at once with a zero busy timeout, and that is normal)."""
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        try:
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.OperationalError as exc:  # locked: someone else holds the file right now
            log.debug("wal truncate at close skipped: %s", exc)
            busy = (1,)
        if busy is not None and busy[0]:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
