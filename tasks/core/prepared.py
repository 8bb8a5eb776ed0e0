"""Statements compiled once and run straight on the driver: the hot single-task writes and keyset reads."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.sql import ClauseElement

from flowledger.tasks.core.db import NUL_REFUSED
from flowledger.tasks.core.errors import InvalidInputError


class Prepared:
    """A Core statement compiled once per dialect and executed straight on the driver's connection.

    For the few statements every single-task write runs: SQLAlchemy's execute path (cache key, parameter and
    result processing, events, result wrapping) cost several times the statement itself. Callers pass
    driver-ready values (times as epoch ms) and read the driver's cursor. What the execute path would have done
    for them is done here: NUL in text is refused, driver errors are wrapped as SQLAlchemy's, so
    `Database._translate_errors` and `transact`'s lock retry see them exactly as before.
    """

    __slots__ = ("_compiled", "_keys", "_stmt")

    def __init__(self, stmt: ClauseElement, column_keys: list[str] | None = None) -> None:
        self._stmt = stmt
        self._keys = column_keys
        self._compiled: dict[str, tuple[str, Callable[[dict[str, Any]], Any]]] = {}

    def _sql(self, dialect: Dialect) -> tuple[str, Callable[[dict[str, Any]], Any]]:
        """The SQL text, and how a parameter dict becomes the driver's arguments (positional: a tuple in the
        compiled order, taken by one `itemgetter`; named: the dict itself)."""
        hit = self._compiled.get(dialect.name)
        if hit is None:
            compiled: Any = self._stmt.compile(dialect=dialect, column_keys=self._keys)
            args: Callable[[dict[str, Any]], Any] = _same
            if compiled.positional:
                order = tuple(compiled.positiontup or ())
                args = _no_args if not order else _one_arg(order[0]) if len(order) == 1 else itemgetter(*order)
            hit = self._compiled[dialect.name] = (compiled.string, args)
        return hit

    def run(self, conn: Connection, params: dict[str, Any]) -> Any:
        sql, to_args = self._sql(conn.dialect)
        for value in params.values():
            if (type(value) is str and "\x00" in value) or (type(value) is list and _has_nul(value)):
                raise InvalidInputError(NUL_REFUSED)
        return self._on_driver(conn, sql, to_args(params), many=False)

    def run_many(self, conn: Connection, rows: list[dict[str, Any]]) -> Any:
        """The statement once per parameter set, in one driver `executemany` (a batch's guarded writes)."""
        sql, to_args = self._sql(conn.dialect)
        if any(type(v) is str and "\x00" in v for params in rows for v in params.values()):
            raise InvalidInputError(NUL_REFUSED)
        return self._on_driver(conn, sql, [to_args(params) for params in rows], many=True)

    def _on_driver(self, conn: Connection, sql: str, args: Any, *, many: bool) -> Any:
        driver: Any = conn.connection.driver_connection
        dbapi_error = conn.dialect.loaded_dbapi.Error
        try:
            if many:
                cursor = driver.cursor()
                cursor.executemany(sql, args)
                return cursor
            return driver.execute(sql, args)
        except dbapi_error as exc:
            lost = conn.dialect.is_disconnect(exc, driver, None)
            if lost:  # as SQLAlchemy's own execute path does, so the pool never hands the dead connection out again
                with contextlib.suppress(SQLAlchemyError):
                    conn.invalidate(exc)
            raise DBAPIError.instance(sql, args, exc, dbapi_error, connection_invalidated=lost,
                                      dialect=conn.dialect) from exc


def _has_nul(values: list[Any]) -> bool:
    """A batch's column (core/batch_writes.py) holding text with NUL."""
    return any(type(v) is str and "\x00" in v for v in values)


def _same(params: dict[str, Any]) -> Any:
    return params


def _no_args(_params: dict[str, Any]) -> Any:
    return ()


def _one_arg(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda params: (params[key],)
