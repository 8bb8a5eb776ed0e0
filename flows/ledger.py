"""The façade: one object that opens the database and hands out the services (CONTRACT §4)."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from flowledger.tasks.core.clock import Clock, SystemClock
from flowledger.tasks.core.db import Database, resolve_database_url, resolve_state_dir
from flowledger.tasks.core.service import TaskService
from flowledger.tasks.sessions.routes import Sessions

if TYPE_CHECKING:
    from flowledger.flows.service import FlowService
    from flowledger.tasks.runs import RunRegistry


class Ledger:
    """Tasks, flows, maintenance and audit over one database. Use `Ledger.open(...)` as a context manager."""

    def __init__(self, db: Database, *, state_dir: Path, clock: Clock | None = None,
                 authoritative: bool = False, gateway_id: str | None = None) -> None:
        self.db = db
        self.state_dir = state_dir
        self.clock: Clock = clock or SystemClock()
        # A gateway with a fresh lease is authoritative for cron and acp liveness (CONTRACT §6.7).
        self.authoritative = authoritative
        self.gateway_id = gateway_id
        self.tasks = TaskService(db, self.clock)
        self.sessions = Sessions(db, self.clock)  # stored chat routes (SPEC §3)
        self._flows: FlowService | None = None
        self._runs: RunRegistry | None = None
        self._extensions_installed = False
        self._install_extensions()

    @classmethod
    def open(
        cls,
        state_dir: str | os.PathLike[str] | None = None,
        database_url: str | None = None,
        clock: Clock | None = None,
        *,
        authoritative: bool = False,
        gateway_id: str | None = None,
    ) -> Ledger:
        resolved = resolve_state_dir(state_dir)
        url = resolve_database_url(database_url, resolved)
        db = Database.open(url, state_dir=resolved)
        return cls(db, state_dir=resolved, clock=clock or SystemClock(), authoritative=authoritative,
                   gateway_id=gateway_id)

    def _install_extensions(self) -> None:
        """Wire the layers that hook into task writes: flow sync/cancel finalisation, then delivery."""
        from flowledger.flows import extensions

        extensions.install(self)

    @property
    def flows(self) -> FlowService:
        if self._flows is None:
            from flowledger.flows.service import FlowService

            self._flows = FlowService(self)
        return self._flows

    @property
    def runs(self) -> RunRegistry:
        """The run registry: what the gateway and its runtimes persist (leases, run contexts, the run queue,
        cron-run bookkeeping); the scheduler's one door into the database."""
        if self._runs is None:
            from flowledger.tasks.runs import RunRegistry

            self._runs = RunRegistry(self.db, self.clock, self.tasks, self.state_dir)
        return self._runs

    # --- health: delegated to flows.health, which composes the task and flow halves ------------------

    def maintenance(self, apply: bool = False) -> Any:
        from flowledger.flows import health

        return health.run_maintenance(self, apply=apply)

    def audit(self) -> Any:
        from flowledger.flows import health

        return health.run_audit(self)

    def summary(self) -> Any:
        from flowledger.flows import health

        return health.summarize(self)

    # --- lifecycle -----------------------------------------------------------------------------------

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
