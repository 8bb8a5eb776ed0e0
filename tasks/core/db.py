"""Engines, transactions and dialect differences, all in one place.

SQLite: WAL, `synchronous=NORMAL`, a long `busy_timeout`, `BEGIN IMMEDIATE` for every write transaction
(so two writers queue instead of deadlocking on a lock upgrade), write transactions on connections kept open
between them (tasks/core/kept_writes.py), periodic PASSIVE checkpoints, and on close a TRUNCATE checkpoint only
when it can be had at once (never waiting on another process).
PostgreSQL: row locks (`FOR UPDATE`) where the store reads before it writes.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Select, Table, and_, create_engine, event, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from flowledger.tasks.core import counts, filemodes, sqlite_discipline, write_batch
from flowledger.tasks.core.dburl import DEFAULT_STATE_DIR, parse_database_url, resolve_database_url, resolve_state_dir
from flowledger.tasks.core.errors import InvalidInputError, StorageUnavailableError
from flowledger.tasks.core.kept_writes import KeptConnections, driver_transaction
from flowledger.tasks.core.migrations import MIGRATIONS
from flowledger.tasks.core.tables import (
    METADATA,
    SCHEMA_VERSION,
    schema_meta,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
__all__ = ["DEFAULT_STATE_DIR", "Database", "resolve_database_url", "resolve_state_dir"]

BUSY_TIMEOUT_MS = sqlite_discipline.BUSY_TIMEOUT_MS
# A pooled PostgreSQL connection idle longer than this is pinged before use (see _install_idle_ping).
PING_AFTER_IDLE_S = 5.0
class Database:
    """One engine and the transaction discipline every store call goes through."""

    def __init__(self, engine: Engine, *, sqlite_path: Path | None) -> None:
        self.engine = engine
        self.sqlite_path = sqlite_path
        self.is_sqlite = engine.dialect.name == "sqlite"
        self.is_postgres = engine.dialect.name == "postgresql"
        self.state_dir: Path | None = None  # set by `open`: its mode is checked with the files'
        # Shares the pool; carrying the write flag as an engine default spares every write transaction an
        # `execution_options()` call on its connection.
        self._write_engine = engine.execution_options(flowledger_write=True)
        _refuse_nul_text(engine)
        # SQLite files: write transactions on connections kept open between them (tasks/core/kept_writes.py).
        self._kept: KeptConnections | None = None
        if self.is_sqlite and sqlite_path is not None:
            kept_engine = create_engine(engine.url, poolclass=NullPool, connect_args=_sqlite_connect_args())
            _install_sqlite_discipline(kept_engine)
            _refuse_nul_text(kept_engine)
            self._kept = KeptConnections(kept_engine.execution_options(flowledger_write=True))

    # --- opening ------------------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str, *, state_dir: Path | None = None, create: bool = True) -> Database:
        target = parse_database_url(url)  # InvalidInputError (exit 2) for a URL we cannot use, never echoing it
        sqlite_path = target.sqlite_path
        if state_dir is not None:
            filemodes.make_private_dir(state_dir, required=False)
        if sqlite_path is not None:
            filemodes.prepare_sqlite_file(sqlite_path)
            engine = create_engine(target.url, connect_args=_sqlite_connect_args())
            _install_sqlite_discipline(engine)
        else:
            engine = create_engine(target.url, connect_args={"connect_timeout": 5})
            _install_idle_ping(engine)
        db = cls(engine, sqlite_path=sqlite_path)
        db.state_dir = state_dir
        try:
            if create:
                db.ensure_schema()
            else:
                with db.read() as conn:
                    conn.execute(text("SELECT 1"))
        except BaseException:
            engine.dispose()
            raise
        db.secure_files()
        return db

    @classmethod
    def empty(cls) -> Database:
        """A schema-only, in-memory SQLite database: what the read-only commands show before a ledger exists.

        Never reachable from a user's URL (an in-memory database keeps nothing: `parse_database_url` refuses it).
        """
        from sqlalchemy.pool import StaticPool

        engine = create_engine("sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool)
        db = cls(engine, sqlite_path=None)
        db.ensure_schema()
        return db

    def ensure_schema(self) -> None:
        """Create or migrate the schema once; cheap when it is already current."""
        current = self._schema_version()
        if current == SCHEMA_VERSION:
            return
        if current is not None and current > SCHEMA_VERSION:
            raise StorageUnavailableError(
                f"Storage unavailable: database schema version {current} is newer than this flowledger "
                f"(supports {SCHEMA_VERSION}); upgrade flowledger."
            )
        with self.write() as conn:
            if self.is_postgres:  # several processes may start at once on one database
                conn.execute(text("SELECT pg_advisory_xact_lock(7204117)"))
            current = self._schema_version_in(conn)
            if current is None:
                METADATA.create_all(conn)
                counts.install(conn)  # the triggers; create_all makes tables only
                conn.execute(insert(schema_meta).values(meta_key="schema_version", value=str(SCHEMA_VERSION)))
                return
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for step in MIGRATIONS.get(version, []):
                    if callable(step):
                        step(conn)
                        continue
                    dialect, statement = step if isinstance(step, tuple) else (conn.dialect.name, step)
                    if dialect == conn.dialect.name:
                        conn.execute(text(statement))
            conn.execute(
                schema_meta.update().where(schema_meta.c.meta_key == "schema_version").values(value=str(SCHEMA_VERSION))
            )

    def _schema_version(self) -> int | None:
        with self.read() as conn:
            return self._schema_version_in(conn)

    def _schema_version_in(self, conn: Connection) -> int | None:
        if not conn.dialect.has_table(conn, "schema_meta"):
            return None
        value = conn.execute(select(schema_meta.c.value).where(schema_meta.c.meta_key == "schema_version")).scalar()
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:  # a hand edit or another program: name it, never a ValueError traceback
            raise StorageUnavailableError(
                f"Storage unavailable: database schema version {str(value)[:40]!r} is not a number.") from None

    # --- transactions -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction: BEGIN IMMEDIATE on SQLite, committed on success, rolled back on error."""
        kept = self._kept
        if kept is not None:
            try:
                conn = kept.take()
                try:
                    yield from driver_transaction(conn)
                finally:
                    kept.give_back(conn)
            except SQLAlchemyError as exc:  # `_translate_errors`, inline: one generator less on every write
                raise StorageUnavailableError(f"Storage unavailable: {_one_line(exc)}") from exc
            return
        with (
            self._translate_errors(),
            self._write_engine.connect() as conn,
            conn.begin(),
        ):
            yield conn

    @contextlib.contextmanager
    def write_connection(self) -> Iterator[Connection]:
        """A connection for several write transactions in a row (`with conn.begin():` each, BEGIN IMMEDIATE on
        SQLite); errors surface as StorageUnavailableError like `write`'s. No retry: each caller's batch decides."""
        with self._translate_errors(), self._write_engine.connect() as conn:
            yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with self._translate_errors(), self.engine.connect() as conn, conn.begin():
            yield conn

    def transact(self, fn: Callable[[Connection], T], *, attempts: int = 5) -> T:
        """Run `fn` in a write transaction, retrying the whole unit if SQLite still reports a lock.

        busy_timeout already waits up to 30 s; this is the belt to that pair of braces, so that
        `database is locked` never reaches a user while another process holds a long write.
        """
        delay = 0.05
        for attempt in range(1, attempts + 1):
            # A connection found dead before the commit was attempted committed nothing: run the unit again on a
            # fresh one (connections are pinged only after idling, see _install_idle_ping). A failed commit is
            # ambiguous and is never retried.
            lost_before_commit = False
            try:
                with self.write() as conn:
                    try:
                        return fn(conn)
                    except DBAPIError as exc:
                        lost_before_commit = bool(exc.connection_invalidated)
                        raise
            except StorageUnavailableError as exc:
                if attempt == attempts or not (lost_before_commit or _is_lock_error(exc.__cause__)):
                    raise
                if not lost_before_commit:
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def _translate_errors(self) -> Iterator[None]:
        try:
            yield
        except StorageUnavailableError:
            raise
        except (OperationalError, DBAPIError) as exc:
            raise StorageUnavailableError(f"Storage unavailable: {_one_line(exc)}") from exc
        except SQLAlchemyError as exc:
            raise StorageUnavailableError(f"Storage unavailable: {_one_line(exc)}") from exc

    # --- housekeeping -------------------------------------------------------------------------------

    def analyze_if_never_analyzed(self, tables: Sequence[str]) -> list[str]:
        """PostgreSQL: ANALYZE those of `tables` that have never been analyzed; the names analyzed. Never raises.

        A table PostgreSQL holds no statistics for (bulk-loaded, with autovacuum off or not yet round) gets default
        selectivities: `task_id IN (…a few hundred ids…)` then looks like a third of the table and is planned as a
        sequential scan — one per prune batch (seen: 640 s instead of 40 s for a 1 M-record pass). A no-op on
        SQLite, whose planner needs no statistics for these statements.
        """
        if not self.is_postgres:
            return []
        try:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                unanalyzed = [str(r[0]) for r in conn.execute(
                    text("SELECT relname FROM pg_class WHERE relname = ANY(:names) AND reltuples < 0 "
                         "AND pg_table_is_visible(oid)"), {"names": list(tables)})]
                for table in unanalyzed:
                    conn.exec_driver_sql(f'ANALYZE "{table}"')
            if unanalyzed:
                log.info("analyzed %s (PostgreSQL had no statistics for them)", ", ".join(unanalyzed))
            return unanalyzed
        except SQLAlchemyError as exc:
            log.warning("analyze failed: %s", _one_line(exc))
            return []

    def checkpoint(self, mode: str = "PASSIVE") -> None:
        """WAL checkpoint on SQLite (PASSIVE never waits on readers); a no-op elsewhere. Never raises."""
        if not self.is_sqlite or mode not in {"PASSIVE", "FULL", "RESTART", "TRUNCATE"}:
            return
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql(f"PRAGMA wal_checkpoint({mode})")
        except SQLAlchemyError as exc:
            log.warning("wal checkpoint %s failed: %s", mode, _one_line(exc))

    def secure_files(self) -> None:
        """Our directories 0700 and database files 0600; warn when found looser (tasks/core/filemodes.py). Called once
        the database opened, so a failed open prints its one error line and nothing beside it."""
        filemodes.check_private(self.state_dir, self.sqlite_path)

    def close(self) -> None:
        """Release the engine. SQLite: truncate the WAL if that is possible *now*, else leave a PASSIVE checkpoint.

        A TRUNCATE checkpoint waits (busy handler) for every reader and writer of the file: with the 30 s busy
        timeout, any other process holding a read transaction or the write lock made each CLI command stall
        30 s at exit (issue 12, item 16). With a zero busy timeout it fails at once instead. Failing is normal
        (another process, a read-only file, a full disk), so it is logged at debug level only: the one error
        line a user sees must stay the only line.
        """
        if self._kept is not None:
            self._kept.close()  # first: the checkpoint below truncates only when no other connection is open
        if self.is_sqlite:
            self._checkpoint_without_waiting()
        self.engine.dispose()

    def checkpoint_quietly(self) -> None:
        """A checkpoint that never waits and never speaks (SQLite; a no-op elsewhere): after a write failed for
        want of space, it lets the next write reuse the WAL from its start instead of growing the file."""
        if self.is_sqlite:
            self._checkpoint_without_waiting()

    def _checkpoint_without_waiting(self) -> None:
        try:
            with self.engine.connect() as conn:
                driver: Any = conn.connection.driver_connection
                sqlite_discipline.checkpoint_without_waiting(driver)
        except (SQLAlchemyError, sqlite3.Error) as exc:
            log.debug("wal checkpoint at close skipped: %s", _one_line(exc))


def _sqlite_connect_args() -> dict[str, Any]:
    return {"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000}


def _install_sqlite_discipline(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Manual transaction control: the driver must not BEGIN on its own, we choose the kind below.
        dbapi_conn.isolation_level = None
        sqlite_discipline.configure(dbapi_conn)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        dbapi_conn: Any = conn.connection.dbapi_connection
        if dbapi_conn.in_transaction:  # begun on the driver (kept_writes.driver_transaction): a Core statement inside
            return
        immediate = conn.get_execution_options().get("flowledger_write", False)
        statement = "BEGIN IMMEDIATE" if immediate else "BEGIN"
        # Straight to the driver: the full execute path (events, result wrapping) cost as much as the
        # statement on every transaction. SQLAlchemy does not wrap errors raised in this event, so we do:
        # a lock timeout must still surface as OperationalError for `transact` to retry it.
        try:
            dbapi_conn.execute(statement)
        except sqlite3.Error as exc:
            raise OperationalError(statement, None, exc) from exc


def _install_idle_ping(engine: Engine) -> None:
    """`pool_pre_ping`, but only for connections that sat idle: pinging on every checkout was one extra round
    trip per transaction (~15 % of a write lifecycle). A connection in steady use has just proved itself; one
    that broke while checked out is invalidated where its error is seen (SQLAlchemy's execute path, and
    `Prepared.run`). Raising DisconnectionError here makes the pool replace the connection and retry."""

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["flowledger_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("flowledger_idle_since")
        if since is not None and time.monotonic() - since < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"connection failed its ping: {exc}") from exc


def _refuse_nul_text(engine: Engine) -> None:
    """PostgreSQL cannot store NUL in text and SQLite silently can: refuse it as bad input on every engine,
    so the same call behaves the same everywhere (exit 2, not a misleading "storage unavailable")."""

    # Only the top-level values of each parameter set are looked at: that is where text columns bind, and the
    # former recursive walk cost a noticeable share of every write (and most of a bulk batch's).
    def set_has_nul(params: Any) -> bool:
        values = params.values() if isinstance(params, dict) else params
        return any(type(v) is str and "\x00" in v for v in values)

    @event.listens_for(engine, "before_cursor_execute")
    def _check(_conn: Any, _cursor: Any, _statement: str, parameters: Any, _context: Any, many: bool) -> None:
        if not parameters:
            return
        if many:
            found = any(set_has_nul(p) for p in parameters)
        else:
            found = set_has_nul(parameters) if isinstance(parameters, dict | list | tuple) else False
        if found:
            raise InvalidInputError(NUL_REFUSED)


NUL_REFUSED = "Text values may not contain NUL (\\x00) characters."


# SQLite's lock errors, and PostgreSQL's deadlock / serialization failures: each aborts only this
# transaction, and running the unit again is the documented remedy.
_RETRYABLE = ("locked", "deadlock detected", "could not serialize access")


def _is_lock_error(exc: BaseException | None) -> bool:
    return exc is not None and any(marker in str(exc).lower() for marker in _RETRYABLE)


def _one_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    message = str(orig if orig is not None else exc).strip().splitlines()
    return message[0] if message else type(exc).__name__


# --- dialect differences the stores share ------------------------------------------------------------------


def serialize_on(conn: Connection, key: str) -> None:
    """Make writers that check-then-insert under `key` take turns, in the caller's transaction. SQLite already
    serialises every write transaction (BEGIN IMMEDIATE); PostgreSQL needs a transaction-scoped advisory lock,
    else two transactions can both miss each other's row and insert twice."""
    if conn.dialect.name == "postgresql":
        batch = write_batch.current(conn)
        if batch is not None:
            if key in batch.locked:
                return  # the batch took it already, in its one statement (serialize_on_all)
            batch.locked.add(key)
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": key})


# unnest yields the array in order and the locks are taken row by row in that order: sorted keys, so two batches
# sharing keys take them in one order and cannot deadlock.
_LOCK_ALL = text("SELECT count(pg_advisory_xact_lock(hashtext(k))) FROM unnest(CAST(:keys AS text[])) AS k")


def serialize_on_all(conn: Connection, keys: Iterable[str]) -> None:
    """`serialize_on` for every key, in sorted order and one statement (one round trip for a whole batch); the
    open write batch remembers them, so a later `serialize_on` of one of them costs nothing."""
    if conn.dialect.name != "postgresql":
        return
    batch = write_batch.current(conn)
    wanted = sorted(set(keys) - (batch.locked if batch is not None else set()))
    if wanted:
        conn.execute(_LOCK_ALL, {"keys": wanted})
        if batch is not None:
            batch.locked.update(wanted)


def insert_ignoring_conflict(conn: Connection, table: Table, values: dict[str, Any], keys: list[str]) -> bool:
    """INSERT … ON CONFLICT (keys) DO NOTHING; True when the row was added. Engines without the clause check
    first (the unique constraint still refuses a racing duplicate)."""
    stmt: Any
    if conn.dialect.name == "postgresql":
        stmt = postgresql.insert(table).values(**values).on_conflict_do_nothing(index_elements=keys)
    elif conn.dialect.name == "sqlite":
        stmt = sqlite.insert(table).values(**values).on_conflict_do_nothing(index_elements=keys)
    else:
        if conn.execute(select(*table.primary_key.columns).where(
                and_(*(table.c[k] == values[k] for k in keys)))).first() is not None:
            return False
        stmt = insert(table).values(**values)
    # RETURNING, not rowcount: PostgreSQL answers a skipped ON CONFLICT insert with rowcount -1 (truthy).
    return conn.execute(stmt.returning(*table.primary_key.columns)).first() is not None


def lock_for_update(conn: Connection, stmt: Select[Any], **options: Any) -> Select[Any]:
    """`stmt` with FOR UPDATE (and `options`: skip_locked, of) on PostgreSQL; SQLite has no row locks and needs
    none, its write transaction holding the database."""
    return stmt.with_for_update(**options) if conn.dialect.name == "postgresql" else stmt
