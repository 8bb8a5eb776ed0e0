"""The parts of a ledger that the flow layer's functions use, as protocols.

The façade (flows/ledger.py) builds the services and imports them; so that nothing it imports has to import it
back, the functions below it that are handed "a ledger" (health, flow maintenance, flow notices) name only the
parts they read. A `Ledger` has them all, so callers keep passing one; a `FlowService` has db, clock and tasks.
"""

from __future__ import annotations

from typing import Protocol

from flowledger.tasks.core.clock import Clock
from flowledger.tasks.core.db import Database
from flowledger.tasks.core.service import TaskService


class HasDatabase(Protocol):
    @property
    def db(self) -> Database: ...


class LedgerParts(HasDatabase, Protocol):
    """The database, the clock and the task service: what every flow service works with."""

    @property
    def clock(self) -> Clock: ...

    @property
    def tasks(self) -> TaskService: ...


class HealthParts(LedgerParts, Protocol):
    """What the health reports read: the parts above, and whether this process is authoritative for liveness
    (a gateway with a fresh lease, CONTRACT §6.7)."""

    @property
    def authoritative(self) -> bool: ...
