"""The per-invocation configuration the root callback builds, and the ledger it opens on demand."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from flowledger.flows.ledger import Ledger


@dataclass
class AppContext:
    state_dir: str | None = None
    database_url: str | None = None
    _ledger: Ledger | None = field(default=None, repr=False)

    def ledger(self, *, read_only: bool = False) -> Ledger:
        """The ledger; `read_only` commands never create one and only warn on a broken config (cli/reading)."""
        if self._ledger is None:
            # Imported here: the ledger brings SQLAlchemy and the schema, which `--help` never needs.
            if read_only:
                from flowledger.cli.reading import open_for_reading

                self._ledger = open_for_reading(self.state_dir, self.database_url)
            else:
                from flowledger.flows.ledger import Ledger

                self._ledger = Ledger.open(state_dir=self.state_dir, database_url=self.database_url)
            # A command never waits on a channel: notices go to the outbox and a sender sends them.
            from flowledger.tasks.delivery.dispatch import defer_delivery

            defer_delivery(self._ledger.tasks)
        return self._ledger

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None


def app_context(ctx: typer.Context) -> AppContext:
    obj = ctx.find_root().obj
    assert isinstance(obj, AppContext)
    return obj
