"""SQLite write connections kept open between write transactions, and those transactions run on the driver (SQLite
files only; see `Database.write`)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
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

    Turns: the writers of one process take the write lock in turn on a lock of their own (`take` to
    `give_back`), not only on SQLite's. SQLite's busy handler makes a writer that finds the file locked sleep
    1, 2, 5, 10, 15… ms between tries, whatever the holder's transaction takes (well under a millisecond for a
    task write); a gateway's threads (the queue's claims, each run's end, the lease) write at once all the time
    and lost whole milliseconds that way (goal 5, docs/performance.md). Another process's writers still queue on
    SQLite's lock, as before. A turn not given within the busy timeout is not waited for any longer: the writer
    goes on to SQLite's own wait, so no wait is longer than it was without turns (and none is forever).
    """

    __slots__ = ("_closed", "_engine", "_idle", "_keep", "_orphans", "_pid", "_turn", "_turn_holders", "_turn_wait_s")

    def __init__(self, engine: Engine, *, keep: int = 4, turn_wait_s: float = 30.0) -> None:
        self._engine = engine
        self._keep = keep
        self._idle: list[Connection] = []
        self._orphans: list[Connection] = []  # a parent's connections, held so they are never closed in a child
        self._pid = os.getpid()
        self._closed = False
        # Re-entrant: a write inside a write on one thread keeps the old behaviour (SQLite decides).
        self._turn = threading.RLock()
        self._turn_holders: set[int] = set()  # id() of the connections taken with the turn held
        self._turn_wait_s = turn_wait_s

    def take(self) -> Connection:
        """An idle connection (or a new one) for one write transaction, once it is this writer's turn; every
        `take` that returns is followed by one `give_back` on the same thread (Database.write)."""
        if self._pid != os.getpid():
            self._orphans.extend(self._idle)
            self._idle = []
            self._pid = os.getpid()
            self._turn = threading.RLock()  # a parent's thread may have held it at the fork: never given back here
            self._turn_holders = set()
        turn = self._turn.acquire(timeout=self._turn_wait_s)
        try:
            try:
                conn = self._idle.pop()
            except IndexError:
                conn = self._engine.connect()
        except BaseException:
            if turn:
                self._turn.release()
            raise
        if turn:
            self._turn_holders.add(id(conn))
        return conn

    def give_back(self, conn: Connection) -> None:
        """Keep `conn` for the next writer if it is clean: open, valid, outside any transaction, even an inactive
        one (a rollback that failed leaves one open); else close it. Ends the writer's turn either way."""
        try:
            self._keep_or_close(conn)
        finally:
            if id(conn) in self._turn_holders:
                self._turn_holders.discard(id(conn))
                self._turn.release()

    def _keep_or_close(self, conn: Connection) -> None:
        clean = not (conn.closed or conn.invalidated or conn.get_transaction() is not None
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
        _roll_back(conn, driver)
        raise
    if conn.in_transaction():
        try:
            conn.commit()
        except BaseException:
            # A refused COMMIT (a full disk: SQLite has rolled back already) leaves SQLAlchemy's transaction on
            # the connection, inactive, until a rollback; kept so, every later write on it would fail.
            _roll_back(conn, driver)
            raise
    else:
        try:
            _driver_execute(driver, "COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                driver.rollback()
            raise


def _roll_back(conn: Connection, driver: Any) -> None:
    """End whatever a failed unit left open: SQLAlchemy's transaction, active or not (`get_transaction`: a failed
    COMMIT leaves an inactive one that only a rollback clears), else the driver's. A connection still dirty after
    this is closed, not kept (`give_back`)."""
    with contextlib.suppress(Exception):
        if conn.get_transaction() is not None:
            conn.rollback()
        elif driver.in_transaction:
            driver.rollback()


def _driver_execute(driver: Any, statement: str) -> None:
    try:
        driver.execute(statement)
    except sqlite3.Error as exc:
        raise OperationalError(statement, None, exc) from exc
