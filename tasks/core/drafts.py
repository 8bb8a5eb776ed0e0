"""What a caller asks to record, and the one parser that turns it into a task record.

`TaskDraft` names every field a caller may give `TaskService.create` (and each record of `create_many`), typed.
`parse_draft` (tasks/core/draft_rules.py) validates and defaults it without touching the database; `new_record`
finishes it inside the creating transaction (the parent flow check, the retention stamp, the flow layer's insert
hook). Create and bulk create share both, so a record
made either way is the same record.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from flowledger.tasks.core import flowlinks, rules, store
from flowledger.tasks.core.draft_rules import DRAFT_FIELDS, TaskDraft, check_draft_keys, parse_draft, stamp_new
from flowledger.tasks.core.hooks import TaskHooks
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import DeliveryStatus, NotifyPolicy, Runtime, ScopeKind

# The database-free half moved to draft_rules.py; these names stay importable from here.
__all__ = ["DRAFT_FIELDS", "TaskDraft", "check_draft_keys", "check_parent_flow", "merge_repeat", "new_record",
           "parse_draft", "repeated_run", "run_scope_key"]


def check_parent_flow(conn: Connection, hooks: TaskHooks, flow_id: str, owner_key: str,
                      scope_kind: ScopeKind) -> None:
    """A task may link to `flow_id` only as the ledger (flowlinks) and the flow layer (hooks) allow."""
    flowlinks.check_parent_flow(conn, flow_id=flow_id, owner_key=owner_key, scope_kind=scope_kind)
    hooks.validate_parent_flow(conn, flow_id=flow_id, owner_key=owner_key, scope_kind=scope_kind)


def new_record(conn: Connection, draft: Task, now: datetime, *, retention: timedelta, hooks: TaskHooks) -> Task:
    """The row inserted for a draft the ledger has never seen, inside the creating transaction (whose caller has
    checked its parent flow link: `check_parent_flow`)."""
    return hooks.prepare_insert(conn, stamp_new(draft, now, retention=retention), now)


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
