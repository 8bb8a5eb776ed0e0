"""Generation jobs: session-backed `image_generate` / `music_generate` / `video_generate` runs (CONTRACT §7, SPEC §1).

A generation job is a session-scoped `cli` task (`task_kind` = the tool, notify `silent`, delivery
`not_applicable`) that runs from the moment it is recorded. Accidental retries never start a second generation:
while one is active, the same image prompt in the same session returns it, and a music or video call returns the
session's active task of that tool. The check and the insert share one write transaction (SQLite's BEGIN
IMMEDIATE, a PostgreSQL advisory lock per session and tool), so two processes asking at once start one job.

What a job produced is recorded on the task (`complete(..., media=[...])`) and, per item, in `generation_media`:
whether the requester session acknowledged it and whether the direct fallback message carried it
(tasks/delivery/generation.py). The job is backed by its requester session (tasks/health/backing.py): never `lost`
while that session lives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, select, update

from flowledger.tasks.core import rules, store
from flowledger.tasks.core.child_sessions import is_active_child_session
from flowledger.tasks.core.clock import Clock
from flowledger.tasks.core.db import Database, insert_ignoring_conflict, serialize_on
from flowledger.tasks.core.errors import InvalidInputError, OperationRefusedError, TaskNotFoundError
from flowledger.tasks.core.generation_kinds import IMAGE, TOOLS, is_generation
from flowledger.tasks.core.hooks import Change, TaskHooks
from flowledger.tasks.core.ids import new_id
from flowledger.tasks.core.lookup import lookup_task
from flowledger.tasks.core.models import DeliveryOrigin, Task, TaskEvent
from flowledger.tasks.core.sessionkeys import parse_agent_id, required_key
from flowledger.tasks.core.states import ACTIVE, DeliveryStatus, NotifyPolicy, Runtime, ScopeKind, TaskStatus
from flowledger.tasks.core.tables import generation_media, sessions, task_runs

# The row a requester session gets when it has none yet: a plain conversation session (as tasks/sessions/routes.py
# makes for a stored route), so the job has a session to be backed by.
SESSION_KIND = "session"


@dataclass(frozen=True, slots=True)
class GenerationStart:
    """The job the call refers to, and whether this call started it (False: an active twin was returned)."""

    task: Task
    started: bool


def parse_tool(tool: str | None) -> str:
    name = (tool or "").strip()
    if name not in TOOLS:
        raise InvalidInputError(f"Unknown generation tool {tool!r}: expected one of {'|'.join(TOOLS)}.")
    return name


def session_key_of(session_key: str | None) -> str:
    """A canonical session key (`agent:<agent id>:<rest>`), else InvalidInputError."""
    key = required_key(session_key)
    if parse_agent_id(key) is None:
        raise InvalidInputError(f"Not a session key: {key!r} (expected agent:<agent id>:<rest>).")
    return key


def media_items(media: Sequence[str] | None) -> tuple[str, ...] | None:
    """Validated items in order, repeats dropped; None when none were given."""
    if media is None:
        return None
    if isinstance(media, str | bytes):  # a lone string would be read as its characters
        raise InvalidInputError("media must be a list of paths or URLs, not a single string.")
    items: list[str] = []
    for raw in media:
        if not isinstance(raw, str) or not raw.strip():
            raise InvalidInputError(f"Invalid media item {raw!r}: expected a non-empty path or URL.")
        item = raw.strip()
        if item not in items:
            items.append(item)
    return tuple(items)


def merged_media(existing: tuple[str, ...] | None, new: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """A second completion report adds items; it never drops what the first recorded."""
    if new is None:
        return existing
    base = existing or ()
    return base + tuple(i for i in new if i not in base)


def item_key(item: str) -> str:
    return hashlib.sha256(item.encode()).hexdigest()


# --- starting a job -----------------------------------------------------------------------------------


def active_twin(conn: Connection, session_key: str, tool: str, prompt: str) -> Task | None:
    """The session's active job this call repeats: same image prompt, or any active music/video job."""
    stmt = store.task_select().where(
        task_runs.c.owner_key == session_key,
        task_runs.c.runtime == Runtime.CLI.value,
        task_runs.c.task_kind == tool,
        task_runs.c.status.in_([s.value for s in ACTIVE]),
    )
    if tool == IMAGE:
        stmt = stmt.where(task_runs.c.task == prompt)
    row = conn.execute(stmt.order_by(task_runs.c.created_at, task_runs.c.seq).limit(1)).first()
    return store.row_to_task(row) if row is not None else None


def start_generation(db: Database, clock: Clock, hooks: TaskHooks, tool: str, session_key: str, prompt: str,
                     requester_origin: Mapping[str, Any] | DeliveryOrigin | None = None, *,
                     retention: timedelta) -> GenerationStart:
    name = parse_tool(tool)
    key = session_key_of(session_key)
    prompt_text = (prompt or "").strip()
    if not prompt_text:
        raise InvalidInputError("A generation prompt is required.")
    origin = DeliveryOrigin.from_mapping(requester_origin)
    origin = origin if origin is not None and (origin.channel or origin.to) else None
    agent = parse_agent_id(key)
    twin: list[Task] = []

    def unit(conn: Connection, now: datetime) -> list[Change]:
        twin.clear()  # the database may run this unit again after a lock error
        serialize_on(conn, f"generation:{key}:{name}")  # one active twin check-then-insert at a time
        found = active_twin(conn, key, name, prompt_text)
        if found is not None:
            twin.append(found)
            return []
        ensure_session_row(conn, key, now)
        task_id = new_id()
        task = Task(task_id=task_id, runtime=Runtime.CLI, requester_session_key=key, owner_key=key,
                    scope_kind=ScopeKind.SESSION, task=prompt_text, status=TaskStatus.RUNNING,
                    delivery_status=DeliveryStatus.NOT_APPLICABLE, notify_policy=NotifyPolicy.SILENT,
                    created_at=now, task_kind=name, source_id=name, agent_id=agent, requester_agent_id=agent,
                    run_id=f"{name}:{task_id}", started_at=now, last_event_at=now, requester_origin=origin)
        task = hooks.prepare_insert(conn, rules.prepare_write(task, retention), now)
        store.insert_task(conn, task)
        event = TaskEvent(task_id=task.task_id, at=task.created_at, kind=task.status.value)
        store.append_event(conn, event)
        change = Change(task, None, event)
        hooks.on_written(conn, change, now)
        return [change]

    changes = db.transact(lambda conn: unit(conn, clock.now()))
    hooks.after_commit(changes)
    if changes:
        return GenerationStart(changes[0].task, True)
    return GenerationStart(twin[0], False)


def ensure_session_row(conn: Connection, session_key: str, now: datetime) -> None:
    """Give a requester session without a registry row one, so its job has a session to be backed by. Never for a
    key an active task runs in as its child session: a new row would make that vanished child look alive."""

    exists = conn.execute(select(sessions.c.session_key).where(sessions.c.session_key == session_key)).first()
    if exists is None and not is_active_child_session(conn, session_key):
        insert_ignoring_conflict(conn, sessions, {"session_key": session_key, "kind": SESSION_KIND,
                                                   "created_at": now, "updated_at": now}, ["session_key"])


def session_alive(conn: Connection, session_key: str) -> bool:
    """A session lives while its registry row exists (exact, else case-insensitive), untombstoned and not ended."""
    cols = (sessions.c.tombstone, sessions.c.ended_at)
    row = conn.execute(select(*cols).where(sessions.c.session_key == session_key)).first()
    if row is None:
        row = conn.execute(select(*cols).where(func.lower(sessions.c.session_key) == session_key.lower())).first()
    return row is not None and row[0] is None and row[1] is None


# --- items: recorded, acknowledged, sent ----------------------------------------------------------------


def record_items(conn: Connection, task: Task) -> None:
    """One `generation_media` row per item of the task (existing rows keep their ack and send marks)."""
    for item in task.media or ():
        insert_ignoring_conflict(conn, generation_media, {"task_id": task.task_id, "item_key": item_key(item),
                                                           "item": item, "session_key": task.requester_session_key},
                                  ["task_id", "item_key"])


def ack_media(db: Database, clock: Clock, session_key: str, task_id: str, items: Iterable[str]) -> int:
    """The session has these items (its agent attached them): the fallback will never send them. Returns how many
    were newly acknowledged."""
    key = session_key_of(session_key)
    wanted = media_items(list(items))
    if not wanted:
        raise InvalidInputError("Name at least one item to acknowledge.")
    ident = (task_id or "").strip()

    def unit(conn: Connection) -> int:
        task = lookup_task(conn, ident)
        if task is None:
            raise TaskNotFoundError(ident)
        if not is_generation(task):
            raise OperationRefusedError(f"Task {task.task_id} is not a generation job.")
        if task.requester_session_key != key:
            raise OperationRefusedError(f"Task {task.task_id} was not started by session {key}.")
        now = clock.now()
        acked = 0
        for item in wanted:
            values = {"task_id": task.task_id, "item_key": item_key(item), "item": item, "session_key": key,
                      "acked_at": now}
            if insert_ignoring_conflict(conn, generation_media, values, ["task_id", "item_key"]):
                acked += 1
                continue
            acked += conn.execute(update(generation_media).where(and_(
                generation_media.c.task_id == task.task_id, generation_media.c.item_key == item_key(item),
                generation_media.c.acked_at.is_(None))).values(acked_at=now)).rowcount
        return acked

    return db.transact(unit)


def unsent_items(conn: Connection, task: Task) -> list[str]:
    """Items of the task neither acknowledged by its session nor carried by a fallback message, in task order."""
    rows = conn.execute(select(generation_media.c.item_key, generation_media.c.acked_at, generation_media.c.sent_at)
                        .where(generation_media.c.task_id == task.task_id))
    done = {r[0] for r in rows if r[1] is not None or r[2] is not None}
    return [i for i in task.media or () if item_key(i) not in done]

