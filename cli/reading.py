"""How the read-only commands open the ledger (`tasks`, `show`, `status`, `audit`, `flow list/show`, `board`).

They never create a state dir or a database: a mistyped `--state-dir` must not leave an empty ledger behind.
On a missing one they say `No ledger at <path> yet.` on stderr and read an empty in-memory ledger, so every
command shows its ordinary empty result. A broken config.toml only configures delivery, which reading never
does: it is a warning here, and stays an error for the commands that deliver.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from flowledger.cli.render import err, safe
from flowledger.tasks.core.errors import InvalidInputError

if TYPE_CHECKING:
    from flowledger.flows.ledger import Ledger
    from flowledger.tasks.core.db import Database

def open_for_reading(state_dir: str | None, database_url: str | None) -> Ledger:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from flowledger.tasks.core.db import Database, resolve_database_url, resolve_state_dir
    from flowledger.tasks.core.dburl import parse_database_url

    resolved = resolve_state_dir(state_dir)
    url = resolve_database_url(database_url, resolved)
    parse_database_url(url)  # a URL we cannot use is exit 2 on one line that never repeats it, as for every command
    try:
        parsed = make_url(url)
    except ArgumentError:  # Database.open below says so, as for every command
        parsed = None
    if parsed is not None and parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database).expanduser().resolve()
        if not path.is_file():
            _refuse_blocked_path(path)
            return _empty(str(path), resolved)
        return _reading_ledger(Database.open(url, state_dir=resolved), resolved)
    db = Database.open(url, create=False)  # no state_dir: reading never creates it
    if not _has_schema(db):
        where = parsed.render_as_string(hide_password=True) if parsed is not None else url
        db.engine.dispose()
        return _empty(where, resolved)
    db.ensure_schema()  # an older schema is brought up to date, as every other command would
    return _reading_ledger(db, resolved)


def _refuse_blocked_path(path: Path) -> None:
    """A path that can never hold a ledger (a file where a directory must be) is a storage error, not "not yet"."""
    from flowledger.tasks.core.errors import StorageUnavailableError

    if path.exists():
        raise StorageUnavailableError(f"Storage unavailable: {path} is not a file.")
    for ancestor in path.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise StorageUnavailableError(f"Storage unavailable: {ancestor} is not a directory.")
            return


def _has_schema(db: Database) -> bool:
    from sqlalchemy import inspect

    from flowledger.tasks.core.tables import task_runs

    with db.engine.connect() as conn:
        return bool(inspect(conn).has_table(task_runs.name))


def _empty(where: str, state_dir: Path) -> Ledger:
    from flowledger.tasks.core.db import Database

    err(f"No ledger at {safe(where)} yet.")
    return _reading_ledger(Database.empty(), state_dir)


def _reading_ledger(db: Database, state_dir: Path) -> Ledger:
    from flowledger.flows.ledger import Ledger

    class ReadingLedger(Ledger):
        def _install_extensions(self) -> None:
            try:
                super()._install_extensions()
            except InvalidInputError as exc:  # delivery's config: reading never delivers
                err(f"Warning: {safe(exc.message)} (commands that deliver refuse until it is fixed)")

    return ReadingLedger(db, state_dir=state_dir)
