"""What a caller asks to record, and the one parser that turns it into a task record, without the database.

`TaskDraft` names every field a caller may give `TaskService.create` (and each record of `create_many`), typed.
`parse_draft` validates and defaults it (REFERENCE §2.2: scope, owner, delivery and notify defaults, the CONTRACT
§7 limits); `stamp_new` gives it its creation times and retention stamp. Kept apart from tasks/core/drafts.py
(which finishes a draft inside the creating transaction) so the lean SQLite door (flows/lean_writes.py) builds the
same record without importing SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Required, TypedDict

from flowledger.tasks.core import limits, rules
from flowledger.tasks.core.clock import coerce_time
from flowledger.tasks.core.errors import InvalidInputError, OwnerKeyRequiredError
from flowledger.tasks.core.models import DeliveryOrigin, Task, collapse_whitespace, trimmed
from flowledger.tasks.core.sessionkeys import parse_agent_id
from flowledger.tasks.core.states import (
    ACTIVE,
    DeliveryStatus,
    NotifyPolicy,
    Runtime,
    ScopeKind,
    TaskStatus,
    TerminalOutcome,
    is_terminal,
    parse_enum,
)


class TaskDraft(TypedDict, total=False):
    """The fields of a task to create; `runtime` and `task` are required, everything else has a default."""

    runtime: Required[Runtime | str]
    task: Required[str]
    owner_key: str | None
    requester_session_key: str | None
    scope_kind: ScopeKind | str | None
    child_session_key: str | None
    parent_flow_id: str | None
    parent_task_id: str | None
    agent_id: str | None
    requester_agent_id: str | None
    run_id: str | None
    source_id: str | None
    task_kind: str | None
    label: str | None
    status: TaskStatus | str | None
    delivery_status: DeliveryStatus | str | None
    notify_policy: NotifyPolicy | str | None
    started_at: datetime | None
    last_event_at: datetime | None
    ended_at: datetime | None
    cleanup_after: datetime | None
    error: str | None
    progress_summary: str | None
    terminal_summary: str | None
    terminal_outcome: TerminalOutcome | str | None
    requester_origin: Mapping[str, Any] | DeliveryOrigin | None
    task_id: str | None


DRAFT_FIELDS: frozenset[str] = TaskDraft.__required_keys__ | TaskDraft.__optional_keys__


def check_draft_keys(fields: Mapping[str, object], caller: str) -> None:
    """A misspelt or missing field is the caller's programming error, reported as Python reports one."""
    unknown = sorted(str(k) for k in fields if k not in DRAFT_FIELDS)
    if unknown:
        raise TypeError(f"{caller} got an unexpected keyword argument {unknown[0]!r}")
    missing = sorted(k for k in TaskDraft.__required_keys__ if k not in fields)
    if missing:
        raise TypeError(f"{caller} missing required keyword argument: {missing[0]!r}")


def parse_draft(fields: TaskDraft, now: datetime) -> Task:
    """The record a draft describes, validated and defaulted; `now` stands in for the creation time."""
    rt = parse_enum(Runtime, fields["runtime"], "runtime")
    text = str(fields["task"] or "").strip()
    if not text:
        raise InvalidInputError("Task text is required.")
    explicit_scope = parse_enum(ScopeKind, fields.get("scope_kind"), "scope_kind") if fields.get("scope_kind") else None
    requester = trimmed(fields.get("requester_session_key"))
    if requester is None:
        requester = "" if explicit_scope == ScopeKind.SYSTEM else (trimmed(fields.get("owner_key")) or "")
    scope = explicit_scope or (ScopeKind.SESSION if requester else ScopeKind.SYSTEM)
    owner = trimmed(fields.get("owner_key")) or requester
    if not owner and scope != ScopeKind.SYSTEM:
        raise OwnerKeyRequiredError()
    child = fields.get("child_session_key")
    agent = (trimmed(fields.get("agent_id")) or parse_agent_id(child) or parse_agent_id(owner)
             or parse_agent_id(requester))
    requester_agent = (trimmed(fields.get("requester_agent_id")) or "").lower() or None
    requester_agent = requester_agent or parse_agent_id(owner) or parse_agent_id(requester)
    status = TaskStatus.QUEUED
    if fields.get("status") is not None:
        status = parse_enum(TaskStatus, fields.get("status"), "status")
    delivery = _delivery_status(fields.get("delivery_status"), scope, owner)
    if fields.get("notify_policy") is not None:
        policy = parse_enum(NotifyPolicy, fields.get("notify_policy"), "notify_policy")
    else:
        policy = NotifyPolicy.SILENT if delivery == DeliveryStatus.NOT_APPLICABLE else NotifyPolicy.DONE_ONLY
    outcome = None
    if fields.get("terminal_outcome") is not None:
        outcome = parse_enum(TerminalOutcome, fields.get("terminal_outcome"), "terminal_outcome")
    origin = DeliveryOrigin.from_mapping(fields.get("requester_origin"))
    if fields.get("ended_at") is not None and status in ACTIVE:
        raise InvalidInputError(f"ended_at is only accepted for a task created terminal, not {status.value}.")
    limits.check_text(text, "Task text")
    limits.check_session_key(owner, "Owner key")
    limits.check_session_key(requester, "Requester session key")
    limits.check_session_key(child if isinstance(child, str) else None, "Child session key")
    return Task(
        task_id=limits.check_id(trimmed(fields.get("task_id")), "task id") or _new_id(),
        runtime=rt,
        task_kind=trimmed(fields.get("task_kind")),
        source_id=trimmed(fields.get("source_id")),
        requester_session_key=requester,
        owner_key=owner,
        scope_kind=scope,
        child_session_key=child if child and str(child).strip() else None,
        parent_flow_id=trimmed(fields.get("parent_flow_id")),
        parent_task_id=trimmed(fields.get("parent_task_id")),
        agent_id=agent,
        requester_agent_id=requester_agent,
        run_id=trimmed(fields.get("run_id")),
        label=limits.check_label(trimmed(fields.get("label"))),
        task=text,
        status=status,
        delivery_status=delivery,
        notify_policy=policy,
        created_at=now,
        started_at=coerce_time(fields.get("started_at"), "started_at"),
        last_event_at=coerce_time(fields.get("last_event_at"), "last_event_at"),
        ended_at=coerce_time(fields.get("ended_at"), "ended_at"),
        cleanup_after=coerce_time(fields.get("cleanup_after"), "cleanup_after"),
        error=limits.program_text(fields.get("error")),
        progress_summary=limits.program_text(collapse_whitespace(fields.get("progress_summary"))),
        terminal_summary=limits.program_text(collapse_whitespace(fields.get("terminal_summary"))),
        terminal_outcome=outcome,
        requester_origin=origin if origin and (origin.channel or origin.to) else None,
    )


def _delivery_status(given: DeliveryStatus | str | None, scope: ScopeKind, owner: str) -> DeliveryStatus:
    if given is not None:
        return parse_enum(DeliveryStatus, given, "delivery_status")
    if scope == ScopeKind.SYSTEM:
        return DeliveryStatus.NOT_APPLICABLE
    return DeliveryStatus.PENDING if owner else DeliveryStatus.PARENT_MISSING


def _new_id() -> str:
    # Imported when needed: uuid6 reads its own version from the installed metadata on import (~60 ms), which a
    # lean cancel (flows/lean_writes.py), importing this module for `stamp_new`, never needs.
    from flowledger.tasks.core.ids import new_id

    return new_id()


def stamp_new(draft: Task, now: datetime, *, retention: timedelta) -> Task:
    """A draft the ledger has never seen as it is inserted (before the flow layer's insert hook): created now, last
    heard of now unless the draft says otherwise, and stamped for retention."""
    last_event = draft.last_event_at or draft.started_at or now
    # A task created already terminal ended when it was last heard of, so retention counts from there.
    ended = draft.ended_at or (last_event if is_terminal(draft.status) else None)
    return rules.prepare_write(draft.replace(created_at=now, last_event_at=last_event, ended_at=ended), retention)
