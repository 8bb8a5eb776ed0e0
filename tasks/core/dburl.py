"""Database URLs and the state dir as a user gives them: what we accept, and one line for what we do not.

A URL that is not usable is the caller's mistake (InvalidInputError, exit 2): unparseable, a bad port, a driver
flowledger does not ship, an in-memory SQLite database (it would accept every write and keep none), a file
name longer than the file system allows. A well-formed URL whose server or file cannot be reached is storage
(StorageUnavailableError, exit 3, raised where the database is opened). No message repeats the URL: it may carry
a password.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flowledger.tasks.core.errors import InvalidInputError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

DEFAULT_STATE_DIR = "~/.flowledger"
SQLITE_DRIVERS = frozenset({"sqlite", "sqlite+pysqlite"})
POSTGRES_DRIVERS = frozenset({"postgresql", "postgresql+psycopg"})
# POSIX NAME_MAX on every file system we run on; longer components fail with ENAMETOOLONG.
NAME_MAX = 255


@dataclass(frozen=True, slots=True)
class DatabaseTarget:
    url: URL
    sqlite_path: Path | None  # the database file, for SQLite


def resolve_state_dir(state_dir: str | os.PathLike[str] | None = None) -> Path:
    """The state dir: the argument, else FLOWLEDGER_STATE_DIR, else ~/.flowledger. An explicit empty value is
    refused rather than read as the working directory."""
    if state_dir is not None and not os.fspath(state_dir):
        raise InvalidInputError("Invalid state directory: it is empty.")
    raw = state_dir if state_dir is not None else os.environ.get("FLOWLEDGER_STATE_DIR") or DEFAULT_STATE_DIR
    try:
        return Path(os.fspath(raw)).expanduser().resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # NUL in the name, a symlink loop, no home directory
        raise InvalidInputError(f"Invalid state directory: {_reason(exc)}.") from None


def resolve_database_url(database_url: str | None, state_dir: Path) -> str:
    url = database_url or os.environ.get("FLOWLEDGER_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{state_dir / 'tasks' / 'runs.sqlite'}"


def parse_database_url(url: str) -> DatabaseTarget:
    """A URL flowledger can open, or InvalidInputError with a reason that never repeats the URL."""
    # Imported here: resolving the state dir and the default URL (the lean read path) needs no SQLAlchemy.
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
        backend = parsed.get_backend_name()
        _ = parsed.port  # a port that is not a number fails here, not deep inside a driver
    except (ArgumentError, ValueError, TypeError):
        raise InvalidInputError("Invalid database URL: it cannot be parsed (expected sqlite:///<file> or "
                           "postgresql+psycopg://user@host/db).") from None
    if backend == "sqlite":
        if parsed.drivername not in SQLITE_DRIVERS:
            raise InvalidInputError(f"Invalid database URL: driver {parsed.drivername!r} is not supported; use sqlite:///.")
        return DatabaseTarget(parsed, _sqlite_file(parsed))
    if backend == "postgresql":
        if parsed.drivername not in POSTGRES_DRIVERS:
            raise InvalidInputError(f"Invalid database URL: driver {parsed.drivername!r} is not supported; "
                               "use postgresql+psycopg://.")
        return DatabaseTarget(parsed.set(drivername="postgresql+psycopg"), None)
    raise InvalidInputError(f"Invalid database URL: unsupported database {backend!r} (use SQLite or PostgreSQL).")


def _sqlite_file(parsed: URL) -> Path:
    database = parsed.database or ""
    memory = (not database or database == ":memory:" or database.startswith("file:")
              or str(parsed.query.get("mode", "")) == "memory")
    if memory:
        raise InvalidInputError("Invalid database URL: an in-memory SQLite database keeps nothing; name a file "
                           "(sqlite:////path/to/runs.sqlite).")
    if any(len(part.encode("utf-8", "surrogateescape")) > NAME_MAX for part in Path(database).parts):
        raise InvalidInputError(f"Invalid database URL: a file name is longer than {NAME_MAX} bytes.")
    try:
        return Path(database).expanduser().resolve()
    except (OSError, ValueError, RuntimeError) as exc:
        raise InvalidInputError(f"Invalid database URL: the file name cannot be used ({_reason(exc)}).") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
        return "name too long"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__
