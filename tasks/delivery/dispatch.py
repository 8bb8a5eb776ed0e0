"""Telling the owner: terminal and state-change delivery after commit (REFERENCE §4.2–4.4, CONTRACT §5b).

Exactly once across processes: before anything is sent, the delivery is claimed in `task_delivery_state`
under the task's row lock (compare-and-set on `claimed_by`). When it settles, `claimed_by` keeps a
`done:<idempotency key>` marker, so a repeated call for the same terminal state is a no-op while a later
terminal state (a new key) may deliver again. A `delivery_status` is written only from the settled outcome of
the send, in the same transaction as the session-queue fallback, so a failed path never loses the message.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, and_, insert, or_, select, update

from flowledger.tasks.core import store
from flowledger.tasks.core.config import Config
from flowledger.tasks.core.hooks import Change, TaskHooks
from flowledger.tasks.core.models import DeliveryOrigin, Task, TaskEvent
from flowledger.tasks.core.service import TaskService
from flowledger.tasks.core.states import DeliveryStatus, NotifyPolicy, ScopeKind, TaskStatus, is_terminal
from flowledger.tasks.core.tables import task_delivery_state, task_runs
from flowledger.tasks.delivery import messages, outbox
from flowledger.tasks.delivery.channels import Channel, Message, SendOutcome, build_channels
from flowledger.tasks.delivery.due import terminal_eligible
from flowledger.tasks.delivery.notices import StateChangeNotices
from flowledger.tasks.delivery.rules import (
    Owner,
    direct_possible,
    fill_from_requester_route,
    fill_origin,
    parent_review,
    resolve_owner,
    review_may_go_direct,
    suppressed_duplicate,
)
from flowledger.tasks.delivery.sender import send_pending
from flowledger.tasks.delivery.wakes import fire_heartbeat_wakes
from flowledger.tasks.sessions.events import (
    WAKE_REASON,
    WAKE_REASON_BLOCKED,
    enqueue_system_event,
    request_heartbeat_wake,
)
from flowledger.tasks.sessions.routes import complete_route, read_route, record_route

# The rules moved to delivery_rules.py; these names stay importable from here.
__all__ = ["CLAIM_TTL", "DeliveryHooks", "Owner", "delivery_hooks", "direct_possible", "resolve_owner",
           "terminal_eligible"]

log = logging.getLogger(__name__)

# Longer than the 60-second send budget: a claim this old belongs to a process that died mid-send.
CLAIM_TTL = timedelta(minutes=5)
DONE_PREFIX = "done:"


@dataclass(frozen=True, slots=True)
class Claimed:
    task: Task
    owner: Owner
    key: str


@dataclass(frozen=True, slots=True)
class Settlement:
    status: DeliveryStatus
    queue: tuple[tuple[str, str], ...] = ()  # (context key, text)
    wake: str | None = None
    outcome: SendOutcome | None = None


def _upsert_delivery(conn: Connection, task_id: str, **values: Any) -> None:
    updated = conn.execute(update(task_delivery_state).where(task_delivery_state.c.task_id == task_id)
                           .values(**values)).rowcount
    if not updated:
        conn.execute(insert(task_delivery_state).values(task_id=task_id, **values))


@dataclass
class DeliveryHooks(TaskHooks):
    """After-commit delivery for one ledger. `channels` overrides what the config would build (tests, embedders)."""

    service: TaskService
    config: Config = field(default_factory=Config)
    channels: dict[str, Channel] = field(default_factory=dict)
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
    claim_ttl: timedelta = CLAIM_TTL
    # Deferred: nothing is sent in the writing process; due notices go to the outbox (tasks/delivery/outbox.py) and a
    # sender (the gateway, else a short-lived process started here) sends them. The CLI and the gateway defer;
    # a library user's ledger sends inline unless it asks otherwise.
    deferred: bool = False
    state_dir: Path | None = None
    database_url: str | None = None

    @classmethod
    def from_config(cls, service: TaskService, config: Config,
                    channels: Mapping[str, Channel] | None = None, **channel_options: Any) -> DeliveryHooks:
        built = build_channels(config, **channel_options)
        built.update(channels or {})
        return cls(service, config=config, channels=built)

    # --- the hooks --------------------------------------------------------------------------------

    def on_written(self, conn: Connection, change: Change, now: datetime) -> None:
        """A task arriving with a full origin records it as its requester session's route (SPEC §3), in the
        task's own transaction. An origin without an account keeps the account stored for that same target."""
        origin, key = change.task.requester_origin, change.task.requester_session_key
        if change.previous is not None and change.previous.requester_origin == origin:
            return
        if origin is not None and complete_route(origin) and key:
            stored = read_route(conn, key)
            route = fill_origin(origin, stored)
            if route != stored:  # a requester's tasks mostly repeat its route: one read, no write
                record_route(conn, key, route, now)

    def after_commit(self, changes: Sequence[Change]) -> None:
        if self.deferred:
            self._defer(changes)
            return
        for change in changes:
            try:
                if change.event is not None:
                    self.deliver_state_change(change.task, change.event)
                if terminal_eligible(change.task):
                    self.deliver_terminal(change.task.task_id)
            except Exception:  # one task's delivery trouble must not starve the others in this batch
                log.exception("delivery for task %s failed", change.task.task_id)

    # --- off the writer's path (tasks/delivery/outbox.py) --------------------------------------------------

    def _defer(self, changes: Sequence[Change]) -> None:
        due = False
        for change in changes:
            task = change.task
            try:
                if change.event is not None:
                    due = StateChangeNotices(self.service, self._record_message, lambda: 0).deliver(
                        task, change.event) or due
                if terminal_eligible(task):
                    due = self._record_terminal(task) or due
            except Exception:  # one task's trouble must not starve the others in this batch
                log.exception("delivery for task %s could not be recorded", task.task_id)
        if due:
            self.kick()

    def _record_terminal(self, task: Task) -> bool:
        """The writer's part of a terminal delivery in deferred mode: a row saying it is due."""
        key = f"task:{task.task_id}:{task.status.value}"

        def unit(conn: Connection) -> bool:
            return outbox.record(conn, self.service.clock.now(), key=key, kind=outbox.TASK_TERMINAL,
                                 subject_id=task.task_id, subject_status=task.status.value)

        return bool(self.service.db.transact(unit))

    def _record_message(self, origin: DeliveryOrigin, message: Message) -> SendOutcome:
        """The writer's `send` in deferred mode: record the ready message for a sender (never a fallback)."""
        self.service.db.transact(lambda conn: outbox.record(
            conn, self.service.clock.now(), key=message.idempotency_key, kind=outbox.MESSAGE,
            subject_id=message.task_id, subject_status=message.status, origin=origin, text=message.text))
        return SendOutcome(True, 0)

    def kick(self) -> None:
        """Wake a sender for what the outbox holds: deferred, the gateway or a short-lived process; inline (a
        library ledger), a thread of this process. Either way the caller does not wait for the send."""
        if self.deferred:
            outbox.kick(self.service.db, self.service.clock.now(), state_dir=self.state_dir,
                        database_url=self.database_url)
        else:
            threading.Thread(target=self._send_quietly, name="notices", daemon=True).start()

    def _send_quietly(self) -> None:
        try:
            self.send_outbox()
        except Exception:  # a closed ledger or a broken channel: the rows stay pending for the next sender
            log.info("notice sending stopped", exc_info=True)

    def send_outbox(self) -> int:
        """Send every pending outbox notice from this process (a sender's job); returns how many settled."""
        return send_pending(self)

    def prune_outbox(self) -> int:
        """Settled outbox rows older than 7 days go (the gateway's sweep)."""
        return outbox.prune(self.service.db, self.service.clock.now())

    def send_message(self, origin: DeliveryOrigin, message: Message) -> SendOutcome:
        return self._send(origin, message)

    # --- terminal delivery (REFERENCE §4.4) -------------------------------------------------------

    def deliver_terminal(self, task_id: str) -> DeliveryStatus | None:
        """Deliver a terminal task once; None when it is not eligible or another process holds the claim."""
        claimed = self.service.db.transact(lambda conn: self._claim_terminal(conn, task_id))
        if not isinstance(claimed, Claimed):
            return claimed
        task, owner = claimed.task, claimed.owner
        review = parent_review(task)
        text = messages.terminal_message(task)
        session_text = messages.review_message(task) if review else text
        blocked = messages.is_blocked(task)
        followup = ((messages.followup_context_key(task.task_id), messages.blocked_followup(task)),) if blocked else ()
        queue = ((messages.session_context_key(task.task_id), session_text), *followup)
        wake = WAKE_REASON_BLOCKED if blocked else WAKE_REASON
        can_direct = direct_possible(owner)
        if not can_direct or (review and not review_may_go_direct(owner.origin)):
            # A parent-review result that could have gone direct stays pending: the parent delivers it.
            status = DeliveryStatus.PENDING if review and can_direct else DeliveryStatus.SESSION_QUEUED
            plan = Settlement(status, queue, wake)
        else:
            assert owner.origin is not None
            outcome = self._send(owner.origin, Message(
                task_id=task.task_id, status=task.status.value, text=text, to=owner.origin.to,
                idempotency_key=claimed.key, thread_id=owner.origin.thread_id, account_id=owner.origin.account_id))
            if outcome.ok:
                plan = Settlement(DeliveryStatus.DELIVERED, followup, wake if blocked else None, outcome)
            else:
                log.warning("task %s: direct delivery via %s failed (%s); queued for session %s", task.task_id,
                            owner.origin.channel, outcome.error, owner.session_key)
                plan = Settlement(DeliveryStatus.FAILED, queue, wake, outcome)
        return self._settle(claimed, plan)

    def deliver_pending(self, limit: int = 100) -> int:
        """Catch up on terminal tasks whose delivery never settled: the writer died between commit and send,
        or mid-send (its claim goes stale after `claim_ttl`). For the gateway's sweep; returns how many settled."""
        done = task_delivery_state.c.claimed_by
        stmt = (select(task_runs.c.task_id)
                .select_from(task_runs.outerjoin(task_delivery_state,
                                                 task_delivery_state.c.task_id == task_runs.c.task_id))
                .where(and_(task_runs.c.status.in_([s.value for s in TaskStatus if is_terminal(s)]),
                            task_runs.c.delivery_status == DeliveryStatus.PENDING.value,
                            task_runs.c.notify_policy != NotifyPolicy.SILENT.value,
                            or_(done.is_(None), ~done.startswith(DONE_PREFIX))))
                .order_by(task_runs.c.seq).limit(limit))
        with self.service.db.read() as conn:
            ids = [row[0] for row in conn.execute(stmt)]
        return sum(self.deliver_terminal(task_id) is not None for task_id in ids)

    def _claim_terminal(self, conn: Connection, task_id: str) -> Claimed | DeliveryStatus | None:
        current = store.get(conn, task_id, for_update=True)  # serialises claimers on PostgreSQL
        if current is None or not terminal_eligible(current):
            return None
        now = self.service.clock.now()
        if suppressed_duplicate(conn, current):
            return self._write_status(conn, current, DeliveryStatus.NOT_APPLICABLE, now)
        owner = resolve_owner(conn, current)
        if owner is not None:
            owner = fill_from_requester_route(conn, current, owner)
        if owner is None:
            missing = DeliveryStatus.NOT_APPLICABLE if current.scope_kind == ScopeKind.SYSTEM \
                else DeliveryStatus.PARENT_MISSING
            return self._write_status(conn, current, missing, now)
        key = messages.terminal_key(current, owner.flow_id)
        row = store.delivery_row(conn, task_id)
        holder = row.claimed_by if row is not None else None
        if holder is not None:
            if holder == DONE_PREFIX + key:
                return None
            if not holder.startswith(DONE_PREFIX) and row.claimed_at is not None \
                    and now < row.claimed_at + self.claim_ttl:
                return None
        _upsert_delivery(conn, task_id, claimed_by=self.worker_id, claimed_at=now)
        return Claimed(current, owner, key)

    def _write_status(self, conn: Connection, current: Task, status: DeliveryStatus, now: datetime) -> DeliveryStatus:
        self.service.apply(conn, current, current.replace(delivery_status=status, last_event_at=now),
                           expected={current.status}, now=now)
        log.info("task %s delivery %s", current.task_id, status.value)
        return status

    def _send(self, origin: DeliveryOrigin, message: Message) -> SendOutcome:
        channel = self.channels.get(origin.channel)
        if channel is None:
            return SendOutcome(False, 0, None, f"channel {origin.channel!r} is not configured")
        try:
            return channel.send(message)
        except Exception as exc:  # an adapter bug still settles as a failed send, never as silence
            log.exception("channel %s raised", origin.channel)
            return SendOutcome(False, 1, None, f"channel error: {type(exc).__name__}")

    def _settle(self, claimed: Claimed, plan: Settlement) -> DeliveryStatus:
        task_id = claimed.task.task_id
        attempts = plan.outcome.attempts if plan.outcome else 0
        error = plan.outcome.error if plan.outcome else None

        def unit(conn: Connection, status: DeliveryStatus, queue: Sequence[tuple[str, str]],
                 wake: str | None) -> DeliveryStatus:
            current = store.get(conn, task_id, for_update=True)
            if current is None:  # pruned meanwhile: nothing left to record
                return status
            now = self.service.clock.now()
            origin = claimed.owner.origin.to_json() if claimed.owner.origin else None
            for context_key, text in queue:
                enqueue_system_event(conn, claimed.owner.session_key, context_key, text, now, origin)
            if wake is not None:
                request_heartbeat_wake(conn, claimed.owner.session_key, wake, now)
            row = store.delivery_row(conn, task_id)
            _upsert_delivery(conn, task_id, claimed_by=DONE_PREFIX + claimed.key, claimed_at=now,
                             attempts=(row.attempts if row is not None else 0) + attempts, last_error=error)
            return self._write_status(conn, current, status, now)

        try:
            result = self.service.db.transact(lambda conn: unit(conn, plan.status, plan.queue, plan.wake))
        except Exception:
            if not plan.queue:
                raise
            # Queueing failed: the owner has heard nothing, and the record must say so.
            log.exception("task %s: session queue failed", task_id)
            result = self.service.db.transact(lambda conn: unit(conn, DeliveryStatus.FAILED, (), None))
        if plan.wake is not None:
            self.fire_wakes()
        return result

    # --- state-change delivery (REFERENCE §4.2): tasks/delivery/notices.py -------------------------

    def deliver_state_change(self, task: Task, event: TaskEvent) -> bool:
        """Announce `running` and progress reports under `state_changes`; True when sent or queued."""
        return StateChangeNotices(self.service, self._send, self.fire_wakes).deliver(task, event)

    # --- the heartbeat hook -----------------------------------------------------------------------

    def fire_wakes(self) -> int:
        """Run the configured heartbeat hook once per pending wake; without a hook, wakes wait for the gateway."""
        return fire_heartbeat_wakes(self.service, self.config)


def delivery_hooks(service: TaskService) -> DeliveryHooks | None:
    """The delivery hooks installed on a service, for callers that want to add channels or retry."""
    for hook in service.hooks.members:
        if isinstance(hook, DeliveryHooks):
            return hook
    return None


def defer_delivery(service: TaskService) -> None:
    """Send nothing in this process: every notice goes through the outbox (tasks/delivery/outbox.py)."""
    hooks = delivery_hooks(service)
    if hooks is not None:
        hooks.deferred = True
