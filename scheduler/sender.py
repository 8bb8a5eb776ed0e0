"""A short-lived notice sender: `python -m flowledger.scheduler.sender` sends what the outbox holds, then exits.

A writer with no gateway running starts one (tasks/outbox.py `kick`) instead of sending itself, so no command
waits on a channel. It opens the ledger named by FLOWLEDGER_STATE_DIR / FLOWLEDGER_DATABASE_URL, sends until the
outbox is empty (claims keep two senders from sending one notice twice), and exits 0; on any trouble it exits
quietly: the notices stay pending for the next sender or the gateway's sweep.
"""

from __future__ import annotations

import logging
import sys

from flowledger.flows.ledger import Ledger
from flowledger.tasks.delivery import delivery_hooks
from flowledger.tasks.errors import FlowledgerError

log = logging.getLogger(__name__)


def send_once(ledger: Ledger) -> int:
    hooks = delivery_hooks(ledger.tasks)
    if hooks is None:
        return 0
    hooks.deferred = False  # this process is the sender
    return hooks.send_outbox()


def main() -> int:
    try:
        with Ledger.open() as ledger:
            send_once(ledger)
    except FlowledgerError as exc:
        log.info("notice sender stopped: %s", exc.message)
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
