"""Gateway-side care of the session registry: restart-recovery tombstones for children it cannot resume."""

from __future__ import annotations

import logging

from flowledger.flows.ledger import Ledger
from flowledger.tasks.runs.registry import tombstone_text

log = logging.getLogger(__name__)
__all__ = ["tombstone_orphans", "tombstone_text"]


def tombstone_orphans(ledger: Ledger, current_gateway: str) -> int:
    """Children whose gateway lease is gone cannot be resumed (their process died with it): tombstone the
    session row so the sweep marks their task lost instead of treating them as recoverable."""
    done = ledger.runs.tombstone_orphans(current_gateway)
    for item in done:
        log.info("task %s child session %s tombstoned (gateway %s gone)", item.task_id, item.session_key,
                 item.gateway_id)
    return len(done)
