"""The per-invocation configuration the root callback builds, and the ledger it opens on demand."""

from __future__ import annotations

from dataclasses import dataclass, field

import typer

from flowledger.flows.ledger import Ledger


@dataclass
class AppContext:
    state_dir: str | None = None
    database_url: str | None = None
    _ledger: Ledger | None = field(default=None, repr=False)

    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger.open(state_dir=self.state_dir, database_url=self.database_url)
        return self._ledger

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None


def app_context(ctx: typer.Context) -> AppContext:
    obj = ctx.find_root().obj
    assert isinstance(obj, AppContext)
    return obj
