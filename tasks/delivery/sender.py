"""The sending side of the notice outbox (tasks/delivery/outbox.py): claim what is pending, send it, settle it.

Runs in a sender — the gateway's one-second loop or a short-lived `python -m flowledger.scheduler.sender` — never
in the process that wrote the change. A ready message goes through the channel of its origin (CONTRACT §5b: at
least 3 tries within 60 s); a task whose terminal delivery is due runs the task delivery (tasks/delivery/dispatch.py) here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from flowledger.tasks.core.models import DeliveryOrigin
from flowledger.tasks.delivery import outbox
from flowledger.tasks.delivery.channels import Message, SendOutcome

if TYPE_CHECKING:
    from flowledger.tasks.delivery.dispatch import DeliveryHooks

log = logging.getLogger(__name__)

Send = Callable[[DeliveryOrigin, Message], SendOutcome]


def send_pending(hooks: DeliveryHooks, *, limit: int = 50, rounds: int = 20) -> int:
    """Send pending notices until none is left (at most `rounds` batches); returns how many settled."""
    settled = 0
    db, clock = hooks.service.db, hooks.service.clock
    for _ in range(rounds):
        batch = outbox.claim(db, clock.now(), hooks.worker_id, limit)
        if not batch:
            break
        for notice in batch:
            try:
                _send_one(hooks, notice)
                settled += 1
            except Exception:  # one bad notice must not stop the others; its claim expires and it is retried
                log.exception("notice %s failed", notice.notice_key)
    return settled


def _send_one(hooks: DeliveryHooks, notice: outbox.Notice) -> None:
    db, clock = hooks.service.db, hooks.service.clock
    if notice.kind == outbox.TASK_TERMINAL:
        hooks.deliver_terminal(notice.subject_id)
        outbox.settle(db, notice, clock.now(), outbox.DONE)
        return
    origin = notice.origin
    if origin is None:
        outbox.settle(db, notice, clock.now(), outbox.FAILED, error="no route")
        return
    outcome = hooks.send_message(origin, Message(
        task_id=notice.subject_id, status=notice.subject_status, text=notice.text, to=origin.to,
        idempotency_key=notice.notice_key, thread_id=origin.thread_id, account_id=origin.account_id))
    if outcome.ok:
        outbox.settle(db, notice, clock.now(), outbox.DELIVERED, attempts=outcome.attempts)
        return
    # Logged at info: a sender's log is the gateway's; the record (status failed, last_error) is what counts.
    log.info("notice %s via %s failed: %s", notice.notice_key, origin.channel, outcome.error)
    outbox.settle(db, notice, clock.now(), outbox.FAILED, attempts=outcome.attempts, error=outcome.error)
