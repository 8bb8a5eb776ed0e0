"""FlowService: managed and mirrored flows (filled in by the Task Flow issue)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowledger.flows.ledger import Ledger


class FlowService:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
