"""PostgreSQL write transactions whose BEGIN, and the statements nobody reads an answer from, travel in one message
with the next statement that needs an answer: fewer round trips, the same transaction.

On PostgreSQL every statement is a round trip — on this kind of machine ~0.1 ms of CPU on each side (a loopback
send wakes the server in the sender's own system call) besides the wait — and psycopg adds one of its own for the
BEGIN it sends before a transaction's first statement. A single-task lifecycle paid 16 where raw psycopg pays 12,
a flow controller's batch ~21 per turn (docs/performance.md, goal 2). In a transaction opened by `transaction`:

- BEGIN is queued, not sent: psycopg is told the connection is in autocommit, so it sends none of its own.
- `defer` (core/prepared.py) queues a statement whose result nobody reads (a history INSERT, an advisory lock).
- The next statement that needs an answer (`send`, from `Prepared.run`) goes out with everything queued, in
  order, as one multi-statement message (the simple query protocol: each statement's values bound by psycopg's
  client-side quoting, `mogrify`); its result is the message's last. The COMMIT goes out the same way with what
  is still queued. psycopg's pipeline mode was measured first: it flushes every statement as its own send, so it
  saved waits but cost more CPU than it saved (docs/performance.md, session 6).
- Order is kept, so a statement sees what the ones before it wrote or locked, and an advisory lock is held
  before the check it guards runs. An error in any statement aborts the rest of the message and the
  transaction, whole, as before — it is only reported at that message instead of at its own statement.
- A statement run through SQLAlchemy's execute path first sends what is queued (its own round trip, as the old
  BEGIN was), so nothing ever runs outside the transaction.

Whatever is queued belongs to the transaction: a rollback drops it, and the connection leaves with psycopg's own
transaction handling back on (autocommit off) or is invalidated, whatever happened.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

_KEY = "flowledger.pg_deferred"
_CLIENT = "flowledger.pg_client_cursor"
_MERGED = "flowledger.pg_merged_cursor"  # the cursor whose message carried queued statements, until it ran
_BEGIN = ("BEGIN", None)
_IDLE = 0  # psycopg.pq.TransactionStatus.IDLE (an IntEnum), without importing psycopg on SQLite's paths

# (SQL text in the driver's paramstyle, its arguments or None), still to send, in order.
Pending = list[tuple[str, Any]]


def pending(conn: Connection) -> Pending | None:
    """The queue of the deferred-statement transaction open on `conn`, or None (none open: run statements now)."""
    queue: Pending | None = conn.info.get(_KEY)
    return queue


@contextlib.contextmanager
def transaction(conn: Connection) -> Iterator[Connection]:
    """One write transaction on `conn` (a pooled psycopg connection outside any transaction): committed when the
    body returns, rolled back when it raises."""
    driver: Any = conn.connection.driver_connection
    driver.autocommit = True  # psycopg sends no BEGIN of its own now: ours is queued
    queue: Pending = [_BEGIN]
    conn.info[_KEY] = queue
    try:
        yield conn
        del conn.info[_KEY]
        if queue == [_BEGIN]:
            queue.clear()  # nothing ran: no transaction to open, none to end
        else:
            queue.append(("COMMIT", None))
            send(conn, queue)
        if conn.in_transaction():
            conn.commit()  # SQLAlchemy's bookkeeping for a Core statement run inside: the driver is idle already
    except BaseException:
        conn.info.pop(_KEY, None)
        queue.clear()
        with contextlib.suppress(Exception):
            if conn.in_transaction():
                conn.rollback()
            if driver.info.transaction_status != _IDLE:
                driver.rollback()
        raise
    finally:
        conn.info.pop(_MERGED, None)
        if driver.closed or driver.info.transaction_status != _IDLE:
            with contextlib.suppress(SQLAlchemyError):
                conn.invalidate()  # never hand a connection in an unknown state back to the pool
        else:
            driver.autocommit = False


def send(conn: Connection, queue: Pending, sql: str | None = None, args: Any = None) -> Any:
    """Send the queued statements, then `sql` if given, as one message (one round trip); the driver's cursor,
    on `sql`'s result. Driver errors surface as SQLAlchemy's, as from its own execute path."""
    driver: Any = conn.connection.driver_connection
    message = _message(conn, driver, queue, sql, args)
    try:
        cursor = driver.execute(message)  # no parameters: the simple query protocol, several statements allowed
        _to_last_result(cursor)
    except conn.dialect.loaded_dbapi.Error as exc:
        lost = conn.dialect.is_disconnect(exc, driver, None)
        if lost:
            with contextlib.suppress(SQLAlchemyError):
                conn.invalidate(exc)
        raise DBAPIError.instance(message, None, exc, conn.dialect.loaded_dbapi.Error,
                                  connection_invalidated=lost, dialect=conn.dialect) from exc
    return cursor


def _message(conn: Connection, driver: Any, queue: Pending, sql: str | None, args: Any) -> str:
    """The queued statements and `sql`, their values bound by psycopg's client-side quoting, as one text."""
    client = conn.info.get(_CLIENT)
    if client is None or client.connection is not driver:  # kept with the connection; `mogrify` sends nothing
        import psycopg

        client = conn.info[_CLIENT] = psycopg.ClientCursor(driver)
    parts = [text if values is None else client.mogrify(text, values) for text, values in queue]
    queue.clear()
    if sql is not None:
        parts.append(sql if not args else client.mogrify(sql, args))
    return "; ".join(parts)


def _to_last_result(cursor: Any) -> None:
    while cursor.nextset():  # a multi-statement message: the last statement's result is the caller's
        pass


def install(engine: Engine) -> None:
    """A statement SQLAlchemy's execute path runs inside a deferred-statement transaction takes what is queued
    (the BEGIN at least) along, in one message; an executemany sends the queue first, alone."""

    @event.listens_for(engine, "before_cursor_execute", retval=True)
    def _with_queued(conn: Connection, cursor: Any, statement: str, parameters: Any, _context: Any,
                     many: bool) -> tuple[str, Any]:
        queue = conn.info.get(_KEY)
        if not queue:
            return statement, parameters
        if many:
            send(conn, queue)
            return statement, parameters
        # No parameters left: the driver sends it as a simple query, where several statements are allowed.
        conn.info[_MERGED] = cursor
        return _message(conn, conn.connection.driver_connection, queue, statement, parameters), None

    @event.listens_for(engine, "after_cursor_execute")
    def _on_last_result(conn: Connection, cursor: Any, _statement: str, _parameters: Any, _context: Any,
                        _many: bool) -> None:
        if conn.info.get(_MERGED) is cursor:
            del conn.info[_MERGED]
            _to_last_result(cursor)  # before SQLAlchemy reads the description and rows
