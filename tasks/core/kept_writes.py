"""SQLite write connections kept open between write transactions, and those transactions run on the driver (SQLite
files only; see `Database.write`)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError


class KeptConnections:
    """Idle SQLite write connections of one database, taken for one write transaction and given back after it.

    Why not the engine's pool: checking a connection out and back in (pool fairy, a new `Connection`, its
    reset-on-return rollback, the events on each) cost a quarter of a single-task lifecycle, as much as SQLite's
    own work on the three transactions. The connections come from their own engine with a `NullPool` (no size
    limit, opened once on first use, closed only here), and live in a plain list: `pop` and `append` are atomic,
    so threads share it without a lock, and each writer has a connection of its own for its transaction, as with
    the pool. At most `keep` stay idle: a burst of concurrent writers (gateway threads, web requests) leaves no
    more than that open once it is over.

    Fork: a child process never uses its parent's connections (SQLite forbids carrying one across `fork`); it
    drops them unclosed (closing could run a checkpoint on the parent's behalf) and opens its own.
    """

    __slots__ = ("_closed", "_engine", "_idle", "_keep", "_orphans", "_pid")

    def __init__(self, engine: Engine, *, keep: int = 4) -> None:
        self._engine = engine
        self._keep = keep
        self._idle: list[Connection] = []
        self._orphans: list[Connection] = []  # a parent's connections, held so they are never closed in a child
        self._pid = os.getpid()
        self._closed = False

    def take(self) -> Connection:
        if self._pid != os.getpid():
            self._orphans.extend(self._idle)
            self._idle = []
            self._pid = os.getpid()
        try:
            return self._idle.pop()
        except IndexError:
            return self._engine.connect()

    def give_back(self, conn: Connection) -> None:
        """Keep `conn` for the next writer if it is clean: open, valid, outside any transaction (a rollback that
        failed leaves one open); else close it."""
        clean = not (conn.closed or conn.invalidated or conn.in_transaction()
                     or _driver(conn).in_transaction)
        if clean and not self._closed and self._pid == os.getpid() and len(self._idle) < self._keep:
            self._idle.append(conn)
            return
        with contextlib.suppress(Exception):
            conn.close()

    def close(self) -> None:
        """Close the idle connections; one in use is closed when its writer gives it back."""
        self._closed = True
        while self._idle:
            with contextlib.suppress(Exception):
                self._idle.pop().close()
        self._engine.dispose()


def _driver(conn: Connection) -> Any:
    return conn.connection.driver_connection


def driver_transaction(conn: Connection) -> Iterator[Connection]:
    """BEGIN IMMEDIATE … COMMIT straight on the driver (a kept SQLite connection; see `Database.write`).

    SQLAlchemy's `begin()` and `commit()` (a Transaction object, the begin event, the commit path) cost as much
    again as the driver's own BEGIN and COMMIT on every write. The Core statements some callers run inside still
    autobegin a SQLAlchemy transaction: the begin event leaves the driver's open one alone (`db._on_begin`), and that
    transaction is committed or rolled back through SQLAlchemy, which ends the driver's. Driver errors surface as
    SQLAlchemy's OperationalError, as from `conn.begin()`, so `transact` still retries a lock timeout.
    """
    driver: Any = conn.connection.driver_connection
    _driver_execute(driver, "BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        with contextlib.suppress(Exception):  # a connection left dirty is closed, not kept (`give_back`)
            if conn.in_transaction():
                conn.rollback()
            elif driver.in_transaction:
                driver.rollback()
        raise
    if conn.in_transaction():
        conn.commit()
    else:
        try:
            _driver_execute(driver, "COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                driver.rollback()
            raise


def _driver_execute(driver: Any, statement: str) -> None:
    try:
        driver.execute(statement)
    except sqlite3.Error as exc:
        raise OperationalError(statement, None, exc) from exc
