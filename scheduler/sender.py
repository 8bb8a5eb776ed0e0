"""A short-lived notice sender: `python -m flowledger.scheduler.sender` sends what the outbox holds, then exits.

A writer with no gateway running starts one (tasks/delivery/outbox.py `kick`) instead of sending itself, so no command
waits on a channel. It opens the ledger named by FLOWLEDGER_STATE_DIR / FLOWLEDGER_DATABASE_URL, sends until the
outbox has stayed empty for a second (claims keep two senders from sending one notice twice), and exits 0; on
any trouble it exits quietly: the notices stay pending for the next sender or the gateway.
"""

from __future__ import annotations

import logging
import sys
import time

from flowledger.flows.ledger import Ledger
from flowledger.tasks.core.errors import FlowledgerError
from flowledger.tasks.delivery import outbox
from flowledger.tasks.delivery.dispatch import delivery_hooks

log = logging.getLogger(__name__)


def send_until_quiet(ledger: Ledger, linger_s: float = outbox.LINGER_S) -> int:
    """Send until the outbox has been empty for `linger_s` (its writer may record more meanwhile)."""
    hooks = delivery_hooks(ledger.tasks)
    if hooks is None:
        return 0
    hooks.deferred = False  # this process is the sender
    sent = 0
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < linger_s:
        settled = hooks.send_outbox()
        if settled:
            sent += settled
            quiet_since = time.monotonic()
        else:
            time.sleep(0.1)
    return sent


def main() -> int:
    try:
        with Ledger.open() as ledger:
            send_until_quiet(ledger)
    except FlowledgerError as exc:
        log.info("notice sender stopped: %s", exc.message)
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
