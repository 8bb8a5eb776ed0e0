"""The board's one ledger, opened on first use and again after the database was unavailable.

A board outlives database outages: when the database cannot be opened, each request answers 503 and the next
request tries again; once the ledger is open, SQLAlchemy's pool replaces connections that died with the server,
so a database that comes back is simply used again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowledger.flows.ledger import Ledger


class LedgerSource:
    def __init__(self, opener: Callable[[], Ledger], *, owned: bool = True) -> None:
        self._opener = opener
        self._owned = owned
        self._ledger: Ledger | None = None
        self._lock = threading.Lock()

    @classmethod
    def of(cls, ledger: Ledger) -> LedgerSource:
        """A source over a ledger the caller opened and closes (tests, embedding)."""
        return cls(lambda: ledger, owned=False)

    @classmethod
    def from_config(cls, state_dir: str | None, database_url: str | None) -> LedgerSource:
        def opener() -> Ledger:
            from flowledger.flows.ledger import Ledger

            return Ledger.open(state_dir=state_dir, database_url=database_url)

        return cls(opener)

    def get(self) -> Ledger:
        """The open ledger; StorageUnavailableError when the database cannot be opened right now."""
        with self._lock:
            if self._ledger is None:
                self._ledger = self._opener()
            return self._ledger

    def close(self) -> None:
        with self._lock:
            if self._ledger is not None and self._owned:
                self._ledger.close()
            self._ledger = None
