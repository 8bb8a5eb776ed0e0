"""State-change notices (REFERENCE §4.2): `running` and progress reports under the `state_changes` policy.

Each event is claimed once by advancing `last_notified_event_at` with a compare-and-set; a failed direct send
is logged and the mark released (never queued), as the reference swallows these failures.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, insert, or_, update

from flowledger.tasks.core import store
from flowledger.tasks.core.models import DeliveryOrigin, Task, TaskEvent
from flowledger.tasks.core.service import TaskService
from flowledger.tasks.core.states import DeliveryStatus, NotifyPolicy, is_terminal
from flowledger.tasks.core.tables import task_delivery_state
from flowledger.tasks.delivery import messages
from flowledger.tasks.delivery.channels import Message, SendOutcome
from flowledger.tasks.delivery.due import state_change_due
from flowledger.tasks.delivery.rules import Owner, direct_possible, resolve_owner
from flowledger.tasks.sessions.events import WAKE_REASON, enqueue_system_event, request_heartbeat_wake

log = logging.getLogger(__name__)



@dataclass
class StateChangeNotices:
    """One delivery's view of the ledger: its service, its channel sender and its wake trigger."""

    service: TaskService
    send: Callable[[DeliveryOrigin, Message], SendOutcome]
    fire_wakes: Callable[[], int]

    def deliver(self, task: Task, event: TaskEvent) -> bool:
        """Announce `running` and progress reports under `state_changes`; True when sent or queued."""
        if not state_change_due(task, event):
            return False
        claimed = self.service.db.transact(lambda conn: self._claim_event(conn, task.task_id, event))
        if claimed is None:
            return False
        current, owner, previous = claimed
        text = messages.state_change_message(current, event.kind, event.summary)
        assert text is not None
        if not direct_possible(owner):
            context = messages.state_change_context_key(current.task_id, event.at, event.kind)
            self.service.db.transact(lambda conn: self._queue_event(conn, current.task_id, owner, context, text))
            self.fire_wakes()
            return True
        assert owner.origin is not None
        key = messages.state_change_key(current, event.at, event.kind, owner.flow_id)
        outcome = self.send(owner.origin, Message(
            task_id=current.task_id, status=current.status.value, text=text, to=owner.origin.to,
            idempotency_key=key, thread_id=owner.origin.thread_id, account_id=owner.origin.account_id))
        if outcome.ok:
            self.service.db.transact(lambda conn: self._touch(conn, current.task_id))
            return True
        # The reference swallows state-change failures; we release the mark so the notice is not claimed lost.
        log.warning("task %s: state-change notice via %s failed: %s", current.task_id, owner.origin.channel,
                    outcome.error)
        self.service.db.transact(lambda conn: conn.execute(
            update(task_delivery_state).where(and_(task_delivery_state.c.task_id == current.task_id,
                                                   task_delivery_state.c.last_notified_event_at == event.at))
            .values(last_notified_event_at=previous)))
        return False

    def _claim_event(self, conn: Connection, task_id: str, event: TaskEvent
                     ) -> tuple[Task, Owner, datetime | None] | None:
        current = store.get(conn, task_id, for_update=True)
        if current is None or current.notify_policy != NotifyPolicy.STATE_CHANGES \
                or current.delivery_status != DeliveryStatus.PENDING or is_terminal(current.status):
            return None
        owner = resolve_owner(conn, current)
        if owner is None:
            return None
        previous = store.last_notified_at(conn, task_id)
        marked = conn.execute(
            update(task_delivery_state)
            .where(and_(task_delivery_state.c.task_id == task_id,
                        or_(task_delivery_state.c.last_notified_event_at.is_(None),
                            task_delivery_state.c.last_notified_event_at < event.at)))
            .values(last_notified_event_at=event.at)).rowcount
        if not marked:
            if store.delivery_row(conn, task_id) is not None:
                return None  # already announced (here or by another process)
            conn.execute(insert(task_delivery_state).values(task_id=task_id, last_notified_event_at=event.at))
        return current, owner, previous

    def _queue_event(self, conn: Connection, task_id: str, owner: Owner, context: str, text: str) -> None:
        now = self.service.clock.now()
        origin = owner.origin.to_json() if owner.origin else None
        enqueue_system_event(conn, owner.session_key, context, text, now, origin)
        request_heartbeat_wake(conn, owner.session_key, WAKE_REASON, now)
        self._touch(conn, task_id)

    def _touch(self, conn: Connection, task_id: str) -> None:
        current = store.get(conn, task_id, for_update=True)
        if current is not None:
            now = self.service.clock.now()
            self.service.apply(conn, current, current.replace(last_event_at=now), expected={current.status}, now=now)
