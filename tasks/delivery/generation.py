"""A generation job's completion goes back to its requester session, not to the user (CONTRACT §7, SPEC §1).

When a job ends, its requester session gets an internal system event (`generation:<task_id>`) and one immediate
heartbeat wake, so the session's agent writes the follow-up and attaches the media itself. Only when that session
is gone (its row missing, tombstoned or ended) or its wake could not be queued does flowledger speak for it: one
direct message to the job's `requester_origin` carrying the items the session has not acknowledged. Each item is
claimed in `generation_media` before the send and marked sent after it, so a completion reported twice, or a
send retried after a failure, never carries an item twice.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

from sqlalchemy import Connection, and_, or_, select, update

from flowledger.tasks.core import store
from flowledger.tasks.core.generation import is_generation, item_key, record_items, session_alive, unsent_items
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.service import Change, TaskHooks, TaskService
from flowledger.tasks.core.states import TaskStatus, is_terminal
from flowledger.tasks.core.tables import generation_media
from flowledger.tasks.delivery.channels import Message, SendOutcome
from flowledger.tasks.delivery.dispatch import DeliveryHooks
from flowledger.tasks.delivery.messages import sanitize, title
from flowledger.tasks.sessions.events import WAKE_REASON, enqueue_system_event, request_heartbeat_wake

log = logging.getLogger(__name__)
T = TypeVar("T")
# A claim older than this belongs to a process that died mid-send (the send budget is 60 s, CONTRACT §5b).
CLAIM_TTL = timedelta(minutes=5)
FALLBACK_HEADLINE = "Generated media"


def context_key(task_id: str) -> str:
    return f"generation:{task_id}"


def wake_text(task: Task) -> str:
    """The internal event the requester session's agent reads: what ended and what it produced."""
    verb = "done" if task.status == TaskStatus.SUCCEEDED else task.status.value.replace("_", " ")
    lines = [f"Generation {verb}: {title(task)} ({task.task_kind}, task {task.task_id})."]
    if task.status != TaskStatus.SUCCEEDED and task.error:
        lines.append(sanitize(task.error))
    lines += [f"media: {sanitize(item)}" for item in task.media or ()]
    return "\n".join(lines)


def fallback_text(task: Task, items: Sequence[str]) -> str:
    return "\n".join([f"{FALLBACK_HEADLINE}: {title(task)}.", *(sanitize(item) for item in items)])


@dataclass
class GenerationHooks(TaskHooks):
    """After commit: wake the requester session, else send its missing items directly (once per item)."""

    service: TaskService
    delivery: DeliveryHooks | None = None
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
    claim_ttl: timedelta = CLAIM_TTL

    def after_commit(self, changes: Sequence[Change]) -> None:
        for change in changes:
            if is_generation(change.task) and is_terminal(change.task.status):
                try:
                    self.complete(change.task.task_id)
                except Exception:  # one job's trouble must not starve the others in this batch
                    log.exception("task %s: generation completion failed", change.task.task_id)

    def complete(self, task_id: str) -> list[str]:
        """Wake the session, or send what it misses; returns the items sent directly now."""
        woke: bool | None = False
        try:
            woke = self.service.db.transact(lambda conn: self._wake(conn, task_id))
        except Exception:
            log.exception("task %s: could not wake its requester session", task_id)
        if woke is None:  # pruned meanwhile
            return []
        if woke:
            if self.delivery is not None:
                self.delivery.fire_wakes()
            return []
        return self.send_missing(task_id)

    def _wake(self, conn: Connection, task_id: str) -> bool | None:
        task = store.get(conn, task_id)
        if task is None:
            return None
        now = self.service.clock.now()
        record_items(conn, task)
        key = task.requester_session_key
        if not session_alive(conn, key):
            log.info("task %s: requester session %s is gone", task_id, key)
            return False
        origin = task.requester_origin.to_json() if task.requester_origin else None
        if enqueue_system_event(conn, key, context_key(task_id), wake_text(task), now, origin):
            request_heartbeat_wake(conn, key, WAKE_REASON, now)
            log.info("task %s: generation completion queued for session %s", task_id, key)
        return True

    # --- the direct fallback ----------------------------------------------------------------------

    def send_missing(self, task_id: str) -> list[str]:
        """One direct message to the job's origin with the items nobody has received; [] when nothing was sent."""
        claimed = self.service.db.transact(lambda conn: self._claim(conn, task_id))
        if claimed is None:
            return []
        task, items = claimed
        outcome = self._send(task, items)
        self.service.db.transact(lambda conn: self._settle(conn, task, items, outcome.ok))
        if not outcome.ok:
            log.warning("task %s: generation fallback via %s failed (%s); %d item(s) left unsent", task_id,
                        task.requester_origin.channel if task.requester_origin else None, outcome.error, len(items))
            return []
        log.info("task %s: generation fallback sent %d item(s)", task_id, len(items))
        return items

    def retry_unsent(self, limit: int = 100) -> int:
        """For the gateway's sweep: send what a failed fallback left unsent, for finished jobs whose session is
        gone. Returns how many items were sent."""
        stale = self.service.clock.now() - self.claim_ttl
        stmt = (select(generation_media.c.task_id).distinct()
                .where(generation_media.c.acked_at.is_(None), generation_media.c.sent_at.is_(None),
                       or_(generation_media.c.claimed_by.is_(None), generation_media.c.claimed_at <= stale))
                .limit(limit))
        sent = 0
        for task_id in [str(r[0]) for r in self._read(lambda conn: list(conn.execute(stmt)))]:
            task = self.service.get(task_id)
            if task is None or not is_terminal(task.status) or task.requester_origin is None:
                continue
            if self._read(functools.partial(session_alive, session_key=task.requester_session_key)):
                continue  # a live session was woken; it attaches the media itself
            sent += len(self.send_missing(task_id))
        return sent

    def _read(self, fn: Callable[[Connection], T]) -> T:
        with self.service.db.read() as conn:
            return fn(conn)

    def _claim(self, conn: Connection, task_id: str) -> tuple[Task, list[str]] | None:
        task = store.get(conn, task_id, for_update=True)  # serialises claimers on PostgreSQL
        if task is None or task.requester_origin is None:
            return None
        now = self.service.clock.now()
        record_items(conn, task)
        stale = now - self.claim_ttl
        claimed = []
        for item in unsent_items(conn, task):
            won = conn.execute(update(generation_media).where(and_(
                generation_media.c.task_id == task_id, generation_media.c.item_key == item_key(item),
                generation_media.c.acked_at.is_(None), generation_media.c.sent_at.is_(None),
                or_(generation_media.c.claimed_by.is_(None), generation_media.c.claimed_at <= stale),
            )).values(claimed_by=self.worker_id, claimed_at=now)).rowcount
            if won:
                claimed.append(item)
        return (task, claimed) if claimed else None

    def _send(self, task: Task, items: list[str]) -> SendOutcome:
        origin = task.requester_origin
        assert origin is not None
        channel = self.delivery.channels.get(origin.channel) if self.delivery is not None else None
        if channel is None:
            return SendOutcome(False, 0, None, f"channel {origin.channel!r} is not configured")
        digest = hashlib.sha256("\n".join(items).encode()).hexdigest()[:16]
        message = Message(task_id=task.task_id, status=task.status.value, text=fallback_text(task, items),
                          to=origin.to, idempotency_key=f"generation-media:{task.task_id}:{digest}",
                          thread_id=origin.thread_id, account_id=origin.account_id)
        try:
            return channel.send(message)
        except Exception as exc:  # an adapter bug settles as a failed send, never as silence
            log.exception("channel %s raised", origin.channel)
            return SendOutcome(False, 1, None, f"channel error: {type(exc).__name__}")

    def _settle(self, conn: Connection, task: Task, items: list[str], sent: bool) -> None:
        now = self.service.clock.now()
        mine = and_(generation_media.c.task_id == task.task_id,
                    generation_media.c.item_key.in_([item_key(i) for i in items]),
                    generation_media.c.claimed_by == self.worker_id)
        values = {"sent_at": now, "claimed_by": None} if sent else {"claimed_by": None, "claimed_at": None}
        conn.execute(update(generation_media).where(mine).values(**values))


def generation_hooks(service: TaskService) -> GenerationHooks | None:
    for hook in service.hooks.members:
        if isinstance(hook, GenerationHooks):
            return hook
    return None
