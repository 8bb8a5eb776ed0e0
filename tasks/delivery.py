"""Telling the owner: terminal and state-change delivery after commit (REFERENCE §4.2–4.4, CONTRACT §5b).

Exactly once across processes: before anything is sent, the delivery is claimed in `task_delivery_state`
under the task's row lock (compare-and-set on `claimed_by`). When it settles, `claimed_by` keeps a
`done:<idempotency key>` marker, so a repeated call for the same terminal state is a no-op while a later
terminal state (a new key) may deliver again. A `delivery_status` is written only from the settled outcome of
the send, in the same transaction as the session-queue fallback, so a failed path never loses the message.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Connection, and_, insert, or_, select, update

from flowledger.tasks import messages, rules, store
from flowledger.tasks.channels import Channel, Message, SendOutcome, build_channels
from flowledger.tasks.config import Config
from flowledger.tasks.models import DeliveryOrigin, Task, TaskEvent
from flowledger.tasks.service import Change, TaskHooks, TaskService
from flowledger.tasks.session_events import (
    WAKE_REASON,
    WAKE_REASON_BLOCKED,
    claim_wake,
    enqueue_system_event,
    pending_wakes,
    request_heartbeat_wake,
)
from flowledger.tasks.sessionkeys import ChatType, chat_type
from flowledger.tasks.states import (
    DeliveryStatus,
    NotifyPolicy,
    Runtime,
    ScopeKind,
    TaskStatus,
    is_terminal,
)
from flowledger.tasks.tables import flow_runs, task_delivery_state, task_runs

log = logging.getLogger(__name__)

# Longer than the 60-second send budget: a claim this old belongs to a process that died mid-send.
CLAIM_TTL = timedelta(minutes=5)
DONE_PREFIX = "done:"
_STATE_CHANGE_KINDS = frozenset({TaskStatus.RUNNING.value, "progress"})


@dataclass(frozen=True, slots=True)
class Owner:
    session_key: str
    origin: DeliveryOrigin | None
    flow_id: str | None = None


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


def terminal_eligible(task: Task) -> bool:
    """REFERENCE §4.2: not silent; subagent only when cancelled; terminal; still pending."""
    return (
        task.notify_policy != NotifyPolicy.SILENT
        and (task.runtime != Runtime.SUBAGENT or task.status == TaskStatus.CANCELLED)
        and is_terminal(task.status)
        and task.delivery_status == DeliveryStatus.PENDING
    )


def resolve_owner(conn: Connection, task: Task) -> Owner | None:
    """REFERENCE §4.3: the parent flow's owner when it matches, else the task's own owner session."""
    if task.scope_kind != ScopeKind.SESSION:
        return None
    if task.parent_flow_id:
        row = conn.execute(select(flow_runs.c.owner_key, flow_runs.c.requester_origin_json)
                           .where(flow_runs.c.flow_id == task.parent_flow_id)).first()
        if row is not None and row.owner_key == task.owner_key:
            origin = None
            if row.requester_origin_json:
                try:
                    origin = DeliveryOrigin.from_mapping(json.loads(row.requester_origin_json))
                except ValueError:
                    origin = None
            return Owner(row.owner_key, origin or task.requester_origin, task.parent_flow_id)
    return Owner(task.owner_key, task.requester_origin) if task.owner_key else None


def direct_possible(owner: Owner) -> bool:
    """Group and channel sessions answer through their parent agent; otherwise a channel and a target suffice."""
    if chat_type(owner.session_key) in (ChatType.GROUP, ChatType.CHANNEL):
        return False
    origin = owner.origin
    return origin is not None and bool(origin.channel.strip()) and bool(origin.to.strip())


def _parent_review(task: Task) -> bool:
    return (task.runtime == Runtime.ACP and task.status == TaskStatus.SUCCEEDED and not messages.is_blocked(task)
            and bool((task.child_session_key or "").strip()))


def _review_may_go_direct(origin: DeliveryOrigin | None) -> bool:
    return (origin is not None and origin.channel == "discord" and origin.to.startswith("channel:")
            and bool(origin.thread_id))


def _suppressed_duplicate(conn: Connection, task: Task) -> bool:
    """Two ACP records of one run in one scope announce once: only the preferred one speaks."""
    if task.runtime != Runtime.ACP or not task.run_id:
        return False

    def scope(t: Task) -> tuple[object, ...]:
        return (t.runtime, t.scope_kind, t.owner_key, (t.child_session_key or "").strip())

    peers = [t for t in store.by_run_id(conn, task.run_id) if scope(t) == scope(task)]
    chosen = rules.preferred(peers)
    return chosen is not None and chosen.task_id != task.task_id


def _delivery_row(conn: Connection, task_id: str) -> Any:
    return conn.execute(select(task_delivery_state).where(task_delivery_state.c.task_id == task_id)).first()


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

    @classmethod
    def from_config(cls, service: TaskService, config: Config,
                    channels: Mapping[str, Channel] | None = None, **channel_options: Any) -> DeliveryHooks:
        built = build_channels(config, **channel_options)
        built.update(channels or {})
        return cls(service, config=config, channels=built)

    # --- the hook ---------------------------------------------------------------------------------

    def after_commit(self, changes: Sequence[Change]) -> None:
        for change in changes:
            try:
                if change.event is not None:
                    self.deliver_state_change(change.task, change.event)
                if terminal_eligible(change.task):
                    self.deliver_terminal(change.task.task_id)
            except Exception:  # one task's delivery trouble must not starve the others in this batch
                log.exception("delivery for task %s failed", change.task.task_id)

    # --- terminal delivery (REFERENCE §4.4) -------------------------------------------------------

    def deliver_terminal(self, task_id: str) -> DeliveryStatus | None:
        """Deliver a terminal task once; None when it is not eligible or another process holds the claim."""
        claimed = self.service.db.transact(lambda conn: self._claim_terminal(conn, task_id))
        if not isinstance(claimed, Claimed):
            return claimed
        task, owner = claimed.task, claimed.owner
        review = _parent_review(task)
        text = messages.terminal_message(task)
        session_text = messages.review_message(task) if review else text
        blocked = messages.is_blocked(task)
        followup = ((messages.followup_context_key(task.task_id), messages.blocked_followup(task)),) if blocked else ()
        queue = ((messages.session_context_key(task.task_id), session_text), *followup)
        wake = WAKE_REASON_BLOCKED if blocked else WAKE_REASON
        can_direct = direct_possible(owner)
        if not can_direct or (review and not _review_may_go_direct(owner.origin)):
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
        if _suppressed_duplicate(conn, current):
            return self._write_status(conn, current, DeliveryStatus.NOT_APPLICABLE, now)
        owner = resolve_owner(conn, current)
        if owner is None:
            missing = DeliveryStatus.NOT_APPLICABLE if current.scope_kind == ScopeKind.SYSTEM \
                else DeliveryStatus.PARENT_MISSING
            return self._write_status(conn, current, missing, now)
        key = messages.terminal_key(current, owner.flow_id)
        row = _delivery_row(conn, task_id)
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
            row = _delivery_row(conn, task_id)
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

    # --- state-change delivery (REFERENCE §4.2) ---------------------------------------------------

    def deliver_state_change(self, task: Task, event: TaskEvent) -> bool:
        """Announce `running` and progress reports under `state_changes`; True when sent or queued."""
        if (task.notify_policy != NotifyPolicy.STATE_CHANGES or task.delivery_status != DeliveryStatus.PENDING
                or is_terminal(task.status) or event.kind not in _STATE_CHANGE_KINDS):
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
        outcome = self._send(owner.origin, Message(
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
            if _delivery_row(conn, task_id) is not None:
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

    # --- the heartbeat hook -----------------------------------------------------------------------

    def fire_wakes(self) -> int:
        """Run the configured heartbeat hook once per pending wake; without a hook, wakes wait for the gateway."""
        heartbeat = self.config.heartbeat
        if heartbeat is None or (heartbeat.command is None and heartbeat.webhook is None):
            return 0
        with self.service.db.read() as conn:
            wakes = pending_wakes(conn)
        fired = 0
        for wake in wakes:
            if not self._claim_wake(wake.wake_id):
                continue
            fired += 1
            env = {**os.environ, "FLOWLEDGER_SESSION_KEY": wake.session_key, "FLOWLEDGER_WAKE_REASON": wake.reason}
            try:
                if heartbeat.command is not None:
                    subprocess.run(list(heartbeat.command), env=env, timeout=heartbeat.timeout_s, check=False,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if heartbeat.webhook is not None:
                    httpx.post(heartbeat.webhook.reveal(), json={"session_key": wake.session_key,
                                                                 "reason": wake.reason},
                               timeout=heartbeat.timeout_s)
            except (OSError, subprocess.SubprocessError, httpx.HTTPError) as exc:
                log.warning("heartbeat hook for session %s failed: %s", wake.session_key, type(exc).__name__)
        return fired


    def _claim_wake(self, wake_id: int) -> bool:
        now = self.service.clock.now()
        return self.service.db.transact(lambda conn: claim_wake(conn, wake_id, now))


def delivery_hooks(service: TaskService) -> DeliveryHooks | None:
    """The delivery hooks installed on a service, for callers that want to add channels or retry."""
    for hook in service.hooks.members:
        if isinstance(hook, DeliveryHooks):
            return hook
    return None
