"""Flow pressure: how many flows are in each status, and how many carry an outstanding cancel request.

One aggregate query over `flow_runs` (never the flows' state documents), so the web board's overview and its
`/metrics` stay cheap however many flows and steps the ledger holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from flowledger.flows.models import ACTIVE_FLOW, LINK_TERMINAL, FlowStatus
from flowledger.tasks.tables import flow_runs

if TYPE_CHECKING:
    from flowledger.flows.ledger import Ledger


def _zero() -> dict[str, int]:
    return {s.value: 0 for s in FlowStatus}


@dataclass
class FlowPressure:
    by_status: dict[str, int] = field(default_factory=_zero)
    cancel_requested: int = 0  # requested and not yet terminal: only outstanding intent counts

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def active(self) -> int:
        return sum(self.by_status[s.value] for s in ACTIVE_FLOW)

    @property
    def blocked(self) -> int:
        return self.by_status[FlowStatus.BLOCKED.value]

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "active": self.active, "blocked": self.blocked,
                "cancel_requested": self.cancel_requested, "by_status": dict(self.by_status)}


def flow_pressure(ledger: Ledger) -> FlowPressure:
    pressure = FlowPressure()
    requested = flow_runs.c.cancel_requested_at.is_not(None)
    stmt = select(flow_runs.c.status, requested, func.count()).group_by(flow_runs.c.status, requested)
    terminal = {s.value for s in LINK_TERMINAL}
    with ledger.db.read() as conn:
        for status, cancel_requested, count in conn.execute(stmt):
            pressure.by_status[status] = pressure.by_status.get(status, 0) + int(count)
            if cancel_requested and status not in terminal:
                pressure.cancel_requested += int(count)
    return pressure
