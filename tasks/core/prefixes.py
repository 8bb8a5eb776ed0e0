"""Unique-prefix lookup of record ids (CONTRACT §7): `01a23b43-5c` finds the one task whose id starts so.

A prefix is matched as an index range, `id >= p AND id < p'` where `p'` is `p` with its last character
incremented: both engines answer it from the id's unique index, so a lookup in a million-row ledger reads a
handful of index entries, never the table. The range is exact under a bytewise collation (SQLite's BINARY;
PostgreSQL's `C`/`C.UTF-8`); a `substr` guard keeps the answer right under any other collation (docs/cli.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, ColumnElement, Connection, and_, func, select

from flowledger.tasks.core.errors import AmbiguousLookupError

MIN_PREFIX = 6
CANDIDATES = 10


@dataclass(frozen=True, slots=True)
class PrefixMatch:
    ids: list[str]  # at most CANDIDATES + 1, in id order
    matches: int  # every id that starts with the prefix


def usable(token: str) -> bool:
    """Long enough to be tried as a prefix; shorter tokens are only exact lookups."""
    return len(token) >= MIN_PREFIX


def starts_with(column: Column[Any], prefix: str) -> ColumnElement[bool]:
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return and_(column >= prefix, column < upper, func.substr(column, 1, len(prefix)) == prefix)


def match(conn: Connection, column: Column[Any], prefix: str) -> PrefixMatch:
    where = starts_with(column, prefix)
    ids = [str(r[0]) for r in conn.execute(select(column).where(where).order_by(column).limit(CANDIDATES + 1))]
    if len(ids) <= 1:
        return PrefixMatch(ids, len(ids))
    matches = int(conn.execute(select(func.count()).select_from(column.table).where(where)).scalar() or 0)
    return PrefixMatch(ids, matches)


def unique_id(conn: Connection, column: Column[Any], prefix: str, kind: str) -> str | None:
    """The one id starting with `prefix`, None when none does; AmbiguousLookupError when several do."""
    if not usable(prefix):
        return None
    found = match(conn, column, prefix)
    if found.matches > 1:
        raise AmbiguousLookupError(prefix, kind, found.matches, found.ids[:CANDIDATES])
    return found.ids[0] if found.ids else None
