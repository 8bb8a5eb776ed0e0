"""What a caller asks to record, and the one parser that turns it into a task record.

`TaskDraft` names every field a caller may give `TaskService.create` (and each record of `create_many`), typed.
`parse_draft` validates and defaults it (REFERENCE §2.2: scope, owner, delivery and notify defaults, the CONTRACT
§7 limits) without touching the database; `new_record` finishes it inside the creating transaction (the parent
flow check, the retention stamp, the flow layer's insert hook). Create and bulk create share both, so a record
made either way is the same record.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Required, TypedDict

from sqlalchemy import Connection

from flowledger.tasks.core import flowlinks, limits, rules, store
from flowledger.tasks.core.clock import coerce_time
from flowledger.tasks.core.errors import InvalidInputError, OwnerKeyRequiredError
from flowledger.tasks.core.hooks import TaskHooks
from flowledger.tasks.core.ids import new_id
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
        task_id=limits.check_id(trimmed(fields.get("task_id")), "task id") or new_id(),
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


def check_parent_flow(conn: Connection, hooks: TaskHooks, flow_id: str, owner_key: str,
                      scope_kind: ScopeKind) -> None:
    """A task may link to `flow_id` only as the ledger (flowlinks) and the flow layer (hooks) allow."""
    flowlinks.check_parent_flow(conn, flow_id=flow_id, owner_key=owner_key, scope_kind=scope_kind)
    hooks.validate_parent_flow(conn, flow_id=flow_id, owner_key=owner_key, scope_kind=scope_kind)


def new_record(conn: Connection, draft: Task, now: datetime, *, retention: timedelta, hooks: TaskHooks) -> Task:
    """The row inserted for a draft the ledger has never seen, inside the creating transaction (whose caller has
    checked its parent flow link: `check_parent_flow`)."""
    last_event = draft.last_event_at or draft.started_at or now
    # A task created already terminal ended when it was last heard of, so retention counts from there.
    ended = draft.ended_at or (last_event if is_terminal(draft.status) else None)
    created = rules.prepare_write(draft.replace(created_at=now, last_event_at=last_event, ended_at=ended), retention)
    return hooks.prepare_insert(conn, created, now)


# --- a create that repeats a run scope -------------------------------------------------------------------


def run_scope_key(run_id: str) -> str:
    """The key creates of one run scope serialise on (db.serialize_on), whoever creates: one task or a batch."""
    return f"task-run:{run_id}"


def repeated_run(conn: Connection, draft: Task, found: list[Task] | None = None) -> Task | None:
    """The existing task a create with this draft's run id repeats (same run scope), if any. `found`: the
    tasks of that run id, oldest first, when the caller read them already (under the row locks, as here)."""
    assert draft.run_id is not None
    if found is None:
        found = store.dedupe_candidates(conn, draft.run_id, for_update=True)
    # A task the flow layer linked to its own one-task flow is still the producer's unlinked task.
    auto: set[str] = set()
    if draft.parent_flow_id is None:
        auto = flowlinks.mirrored_flow_ids(conn, {t.parent_flow_id for t in found if t.parent_flow_id})

    def scope(t: Task) -> tuple[object, ...]:
        flow = "" if t.parent_flow_id in auto else (t.parent_flow_id or "").strip()
        return (t.runtime, t.scope_kind, t.owner_key.strip(), (t.child_session_key or "").strip(), flow)

    candidates = [t for t in found if scope(t) == scope(draft)]
    for candidate in candidates:
        if candidate.label == draft.label and candidate.task == draft.task:
            return candidate
    if draft.runtime == Runtime.ACP and candidates:
        return rules.preferred(candidates)
    return None

def merge_repeat(existing: Task, draft: Task, *, prefer_metadata: bool) -> Task:
    """What a repeated create adds to the existing record (REFERENCE §2.2): missing metadata, never a downgrade."""
    changes: dict[str, Any] = {}
    for name in ("requester_origin", "source_id", "task_kind", "parent_flow_id", "parent_task_id",
                 "agent_id", "requester_agent_id"):
        if getattr(existing, name) is None and getattr(draft, name) is not None:
            changes[name] = getattr(draft, name)
    if prefer_metadata:
        if draft.label is not None and draft.label != existing.label:
            changes["label"] = draft.label
        if draft.task != existing.task:
            changes["task"] = draft.task
    elif existing.label is None and draft.label is not None:
        changes["label"] = draft.label
    if draft.delivery_status == DeliveryStatus.PENDING and existing.delivery_status not in (
        DeliveryStatus.DELIVERED, DeliveryStatus.PENDING
    ):
        changes["delivery_status"] = DeliveryStatus.PENDING
    if existing.notify_policy == NotifyPolicy.SILENT and draft.notify_policy != NotifyPolicy.SILENT:
        changes["notify_policy"] = draft.notify_policy
    return existing.replace(**changes) if changes else existing
