"""The create algorithm (REFERENCE §2.2) on both engines: derivation, checks, dedupe/collapse, defaults, times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert

from flowledger import FrozenClock, Ledger
from flowledger.tasks.core.errors import InvalidInput, OwnerKeyRequired, ParentFlowLinkError
from flowledger.tasks.core.states import (
    DeliveryStatus,
    NotifyPolicy,
    Runtime,
    ScopeKind,
    TaskStatus,
    TerminalOutcome,
)
from flowledger.tasks.core.tables import flow_runs

T0 = datetime(2026, 3, 30, 1, 0, tzinfo=UTC)
OWNER = "agent:main:main"


def add_flow(ledger: Ledger, flow_id: str, *, owner: str = OWNER, status: str = "running",
             cancel_requested: bool = False) -> None:
    with ledger.db.write() as conn:
        conn.execute(insert(flow_runs).values(
            flow_id=flow_id, sync_mode="managed", owner_key=owner, controller_id="tests", revision=0,
            status=status, notify_policy="done_only", goal="g", created_at=T0, updated_at=T0,
            cancel_requested_at=T0 if cancel_requested else None,
        ))


# --- derivation ---------------------------------------------------------------------------------------


def test_owner_only_derives_requester_scope_and_agents(ledger: Ledger) -> None:
    t = ledger.tasks.create(runtime="acp", task="  Summarise PR 12  ", owner_key="  agent:Main:main ",
                            child_session_key="agent:worker:acp:child")
    assert t.owner_key == "agent:Main:main"
    assert t.requester_session_key == "agent:Main:main"
    assert t.scope_kind == ScopeKind.SESSION
    assert t.task == "Summarise PR 12"
    assert t.agent_id == "worker"  # the child's agent runs it
    assert t.requester_agent_id == "main"  # parsed from the owner, lowercased
    assert t.delivery_status == DeliveryStatus.PENDING
    assert t.notify_policy == NotifyPolicy.DONE_ONLY
    assert t.status == TaskStatus.QUEUED
    assert len(t.task_id) == 36


def test_requester_only_becomes_owner(ledger: Ledger) -> None:
    t = ledger.tasks.create(runtime="subagent", task="x", requester_session_key=" agent:ops:main ")
    assert (t.owner_key, t.requester_session_key, t.scope_kind) == ("agent:ops:main", "agent:ops:main",
                                                                    ScopeKind.SESSION)
    assert t.agent_id == "ops"
    assert t.requester_agent_id == "ops"


def test_explicit_requester_differs_from_owner(ledger: Ledger) -> None:
    t = ledger.tasks.create(runtime="cli", task="x", owner_key="agent:a:main", requester_session_key="agent:b:main")
    assert t.owner_key == "agent:a:main"
    assert t.requester_session_key == "agent:b:main"
    assert t.agent_id == "a"  # no child: owner before requester
    assert t.requester_agent_id == "a"


def test_explicit_agent_ids_win(ledger: Ledger) -> None:
    t = ledger.tasks.create(runtime="acp", task="x", owner_key=OWNER, child_session_key="agent:c:acp:1",
                            agent_id="explicit", requester_agent_id="  REQ ")
    assert (t.agent_id, t.requester_agent_id) == ("explicit", "req")


def test_non_canonical_keys_give_no_agent(ledger: Ledger) -> None:
    t = ledger.tasks.create(runtime="cli", task="x", owner_key="telegram:123", child_session_key="agent::x")
    assert t.agent_id is None
    assert t.requester_agent_id is None
    two_parts = ledger.tasks.create(runtime="cli", task="x", owner_key="agent:only")
    assert two_parts.agent_id is None


def test_no_owner_and_no_requester_is_system_scope(ledger: Ledger) -> None:
    t = ledger.tasks.create(runtime="cron", task="nightly", source_id=" job-1 ", run_id=" cron:job-1:1000 ")
    assert (t.scope_kind, t.owner_key, t.requester_session_key) == (ScopeKind.SYSTEM, "", "")
    assert t.delivery_status == DeliveryStatus.NOT_APPLICABLE
    assert t.notify_policy == NotifyPolicy.SILENT
    assert (t.source_id, t.run_id) == ("job-1", "cron:job-1:1000")


def test_explicit_system_scope_ignores_owner_for_requester(ledger: Ledger) -> None:
    t = ledger.tasks.create(runtime="cron", task="x", owner_key="system:cron:job", scope_kind="system")
    assert (t.scope_kind, t.owner_key, t.requester_session_key) == (ScopeKind.SYSTEM, "system:cron:job", "")
    assert ledger.tasks.get(t.task_id) == t


def test_owner_check(ledger: Ledger) -> None:
    with pytest.raises(OwnerKeyRequired, match=r"^Task ownerKey is required\.$"):
        ledger.tasks.create(runtime="acp", task="x", scope_kind="session", owner_key="   ")
    assert ledger.tasks.list() == []


@pytest.mark.parametrize(("field", "value", "message"), [
    ("runtime", "bogus", "Invalid runtime 'bogus'"),
    ("status", "bogus", "Invalid status 'bogus'"),
    ("notify_policy", "loud", "Invalid notify_policy 'loud'"),
    ("delivery_status", "sent", "Invalid delivery_status 'sent'"),
    ("scope_kind", "global", "Invalid scope_kind 'global'"),
    ("terminal_outcome", "meh", "Invalid terminal_outcome 'meh'"),
    ("task", "   ", "Task text is required."),
])
def test_bad_values_rejected_before_writing(ledger: Ledger, field: str, value: str, message: str) -> None:
    args: dict[str, object] = {"runtime": "acp", "task": "x", "owner_key": OWNER, field: value}
    with pytest.raises(InvalidInput) as info:
        ledger.tasks.create(**args)  # type: ignore[arg-type]
    assert message in str(info.value)
    assert ledger.tasks.list() == []


# --- defaults -----------------------------------------------------------------------------------------


def test_defaults_per_scope_and_explicit_delivery(ledger: Ledger) -> None:
    na = ledger.tasks.create(runtime="cli", task="x", owner_key=OWNER, delivery_status="not_applicable")
    assert (na.delivery_status, na.notify_policy) == (DeliveryStatus.NOT_APPLICABLE, NotifyPolicy.SILENT)
    chosen = ledger.tasks.create(runtime="cron", task="x", notify_policy="state_changes")
    assert (chosen.delivery_status, chosen.notify_policy) == (DeliveryStatus.NOT_APPLICABLE,
                                                              NotifyPolicy.STATE_CHANGES)
    assert ledger.tasks.create(runtime="subagent", task="x", owner_key=OWNER).notify_policy == NotifyPolicy.DONE_ONLY


def test_summaries_collapse_whitespace_and_origin_round_trips(ledger: Ledger) -> None:
    t = ledger.tasks.create(runtime="acp", task="x", owner_key=OWNER, progress_summary="  a \n\t b  ",
                            terminal_summary="   ", label="  ", requester_origin={"channel": "telegram",
                                                                                  "to": "telegram:1",
                                                                                  "threadId": 321})
    assert t.progress_summary == "a b"
    assert t.terminal_summary is None
    assert t.label is None
    assert t.requester_origin is not None
    assert t.requester_origin.to_json() == {"channel": "telegram", "to": "telegram:1", "account_id": None,
                                            "thread_id": "321"}
    assert ledger.tasks.get(t.task_id) == t


# --- timestamps ----------------------------------------------------------------------------------------


def test_created_at_is_now_and_last_event_defaults(ledger: Ledger, clock: FrozenClock) -> None:
    q = ledger.tasks.create(runtime="acp", task="x", owner_key=OWNER)
    assert (q.created_at, q.last_event_at, q.started_at, q.ended_at, q.cleanup_after) == (T0, T0, None, None, None)
    started = T0 + timedelta(seconds=3)
    r = ledger.tasks.create(runtime="acp", task="y", owner_key=OWNER, status="running", started_at=started)
    assert (r.created_at, r.started_at, r.last_event_at) == (T0, started, started)


def test_timestamps_normalised(ledger: Ledger) -> None:
    early = T0 - timedelta(minutes=5)
    t = ledger.tasks.create(runtime="acp", task="x", owner_key=OWNER, status="running", started_at=early,
                            last_event_at=early - timedelta(minutes=1))
    # created = min(all); started = max(started, created); last_event = max(last_event, started)
    assert (t.created_at, t.started_at, t.last_event_at) == (early - timedelta(minutes=1), early, early)


def test_ended_before_start_is_raised_to_start(ledger: Ledger) -> None:
    start = T0 - timedelta(minutes=10)
    t = ledger.tasks.create(runtime="cli", task="x", owner_key=OWNER, status="failed", started_at=start,
                            ended_at=start - timedelta(minutes=1))
    # created = min(...) = the given end; ended = max(ended, started) = started
    assert (t.created_at, t.started_at, t.ended_at) == (start - timedelta(minutes=1), start, start)
    assert t.cleanup_after == start + timedelta(days=7)


def test_terminal_creation_stamps_cleanup_from_end(ledger: Ledger) -> None:
    end = T0 - timedelta(hours=1)
    t = ledger.tasks.create(runtime="cron", task="x", status="succeeded", started_at=end - timedelta(minutes=2),
                            ended_at=end)
    assert t.ended_at == end
    assert t.cleanup_after == end + timedelta(days=7)
    assert t.terminal_outcome == TerminalOutcome.SUCCEEDED


def test_terminal_creation_without_end_ends_at_last_event(ledger: Ledger) -> None:
    t = ledger.tasks.create(runtime="cron", task="x", status="failed", error="boom")
    assert t.ended_at == T0
    assert t.cleanup_after == T0 + timedelta(days=7)
    [event] = ledger.tasks.events(t.task_id)
    assert (event.kind, event.summary, event.previous_status) == ("failed", "boom", None)


def test_explicit_cleanup_after_is_kept(ledger: Ledger) -> None:
    keep = T0 + timedelta(hours=1)
    t = ledger.tasks.create(runtime="cron", task="x", status="lost", ended_at=T0, cleanup_after=keep)
    assert t.cleanup_after == keep


def test_ended_at_refused_for_active_creation(ledger: Ledger) -> None:
    with pytest.raises(InvalidInput, match="ended_at"):
        ledger.tasks.create(runtime="acp", task="x", owner_key=OWNER, ended_at=T0)


def test_naive_datetimes_rejected(ledger: Ledger) -> None:
    with pytest.raises(InvalidInput, match="timezone-aware"):
        ledger.tasks.create(runtime="acp", task="x", owner_key=OWNER, started_at=datetime(2026, 3, 30, 1, 0))
    with pytest.raises(InvalidInput, match="timezone-aware"):
        ledger.tasks.start("r", at=datetime(2026, 3, 30, 1, 0))
    assert ledger.tasks.list() == []


def test_other_zones_are_converted_to_utc_ms(ledger: Ledger) -> None:
    from datetime import timezone

    plus2 = datetime(2026, 3, 30, 2, 59, 59, 123456, tzinfo=timezone(timedelta(hours=2)))
    t = ledger.tasks.create(runtime="acp", task="x", owner_key=OWNER, status="running", started_at=plus2)
    assert t.started_at == datetime(2026, 3, 30, 0, 59, 59, 123000, tzinfo=UTC)
    assert t.started_at.tzinfo == UTC  # type: ignore[union-attr]
    assert ledger.tasks.get(t.task_id) == t


# --- parent flow link (scenario 4) ----------------------------------------------------------------------


@pytest.mark.parametrize(("setup", "kwargs", "code", "message"), [
    ({"owner": "agent:other:main"}, {}, "owner_key_mismatch", "Task ownerKey must match parent flow ownerKey."),
    ({}, {"owner_key": None, "scope_kind": "system"}, "scope_kind_not_session",
     "Only session-scoped tasks can link to flows."),
    ({"cancel_requested": True}, {}, "cancel_requested", "Parent flow cancellation has already been requested."),
    ({"status": "cancelled"}, {}, "terminal", "Parent flow is already cancelled."),
    ({"status": "succeeded"}, {}, "terminal", "Parent flow is already succeeded."),
    ({"status": "failed"}, {}, "terminal", "Parent flow is already failed."),
    ({"status": "lost"}, {}, "terminal", "Parent flow is already lost."),
])
def test_parent_flow_link_errors(ledger: Ledger, setup: dict[str, object], kwargs: dict[str, object], code: str,
                                 message: str) -> None:
    add_flow(ledger, "flow-1", **setup)  # type: ignore[arg-type]
    args: dict[str, object] = {"runtime": "acp", "task": "x", "owner_key": OWNER, "parent_flow_id": "flow-1"}
    args.update(kwargs)
    with pytest.raises(ParentFlowLinkError) as info:
        ledger.tasks.create(**args)  # type: ignore[arg-type]
    assert (info.value.code, info.value.message) == (code, message)
    assert ledger.tasks.list() == []


def test_parent_flow_missing(ledger: Ledger) -> None:
    with pytest.raises(ParentFlowLinkError) as info:
        ledger.tasks.create(runtime="acp", task="x", owner_key=OWNER, parent_flow_id="nope")
    assert (info.value.code, info.value.message) == ("parent_flow_not_found", "Parent flow not found: nope")


@pytest.mark.parametrize("status", ["queued", "running", "waiting", "blocked"])
def test_parent_flow_link_accepted(ledger: Ledger, status: str) -> None:
    add_flow(ledger, "flow-ok", status=status)
    t = ledger.tasks.create(runtime="acp", task="x", owner_key=OWNER, parent_flow_id="flow-ok")
    assert t.parent_flow_id == "flow-ok"


# --- run-id dedupe and collapse (scenarios 12, 14) --------------------------------------------------------


def test_same_run_scope_label_and_text_returns_existing(ledger: Ledger, clock: FrozenClock) -> None:
    first = ledger.tasks.create(runtime="cli", task="x", owner_key=OWNER, run_id="r1", label="L")
    clock.advance(timedelta(seconds=1))
    again = ledger.tasks.create(runtime="cli", task="x", owner_key=OWNER, run_id="r1", label="L")
    assert again == first
    assert len(ledger.tasks.list()) == 1
    assert [e.kind for e in ledger.tasks.events(first.task_id)] == ["queued"]


def test_cli_different_text_creates_second_record(ledger: Ledger) -> None:
    ledger.tasks.create(runtime="cli", task="x", owner_key=OWNER, run_id="r1")
    ledger.tasks.create(runtime="cli", task="y", owner_key=OWNER, run_id="r1")
    assert len(ledger.tasks.list()) == 2


def test_shared_run_id_different_producers_scenario_12(ledger: Ledger, clock: FrozenClock) -> None:
    child = "agent:main:acp:child"
    cli = ledger.tasks.create(runtime="cli", task="child run", owner_key="agent:codex:acp:child",
                              child_session_key=child, run_id="run-shared")
    clock.advance(timedelta(milliseconds=1))
    acp = ledger.tasks.create(runtime="acp", task="spawn", owner_key=OWNER, child_session_key=child,
                              run_id="run-shared")
    assert cli.task_id != acp.task_id
    assert len(ledger.tasks.list()) == 2
    assert ledger.tasks.get("run-shared") == acp  # non-cli preferred even though it is newer


def test_acp_collapse_scenario_14(ledger: Ledger) -> None:
    base = {"runtime": "acp", "owner_key": OWNER, "child_session_key": "agent:main:acp:c", "run_id": "X"}
    first = ledger.tasks.create(task="original", label="one", **base)  # type: ignore[arg-type]
    kept = ledger.tasks.create(task="different", label="two", **base)  # type: ignore[arg-type]
    assert kept.task_id == first.task_id
    assert (kept.task, kept.label) == ("original", "one")  # label is fill-only without prefer_metadata
    merged = ledger.tasks.create(task="different", label="two", prefer_metadata=True, **base)  # type: ignore[arg-type]
    assert merged.task_id == first.task_id
    assert (merged.task, merged.label) == ("different", "two")
    assert len(ledger.tasks.list()) == 1
    assert ledger.tasks.get(first.task_id) == merged


def test_acp_collapse_prefers_earliest_non_cli(ledger: Ledger, clock: FrozenClock) -> None:
    base = {"runtime": "acp", "owner_key": OWNER, "run_id": "X"}
    a = ledger.tasks.create(task="a", **base)  # type: ignore[arg-type]
    clock.advance(timedelta(seconds=1))
    # same scope, different text → acp collapses into the earliest candidate
    b = ledger.tasks.create(task="b", **base)  # type: ignore[arg-type]
    assert b.task_id == a.task_id


def test_different_scope_is_not_collapsed(ledger: Ledger) -> None:
    ledger.tasks.create(runtime="acp", task="a", owner_key=OWNER, run_id="X")
    ledger.tasks.create(runtime="acp", task="a", owner_key="agent:other:main", run_id="X")
    ledger.tasks.create(runtime="acp", task="a", owner_key=OWNER, run_id="X", child_session_key="agent:m:acp:k")
    assert len(ledger.tasks.list()) == 3


def test_merge_rules_fill_only_and_upgrades(ledger: Ledger) -> None:
    base = {"runtime": "acp", "owner_key": OWNER, "run_id": "M", "task": "t"}
    first = ledger.tasks.create(delivery_status="not_applicable", **base)  # type: ignore[arg-type]
    assert (first.delivery_status, first.notify_policy) == (DeliveryStatus.NOT_APPLICABLE, NotifyPolicy.SILENT)
    merged = ledger.tasks.create(source_id="src", task_kind="kind", agent_id="ag", label="L",  # type: ignore[arg-type]
                                 requester_origin={"channel": "slack", "to": "C1"}, delivery_status="pending",
                                 notify_policy="state_changes", **base)
    assert merged.task_id == first.task_id
    assert (merged.source_id, merged.task_kind, merged.label) == ("src", "kind", "L")
    assert merged.agent_id == "main"  # fill-only: already parsed from the owner at create
    assert merged.requester_origin is not None and merged.requester_origin.channel == "slack"
    assert merged.delivery_status == DeliveryStatus.PENDING
    assert merged.notify_policy == NotifyPolicy.STATE_CHANGES
    # a later merge neither overwrites filled fields nor downgrades the policy
    again = ledger.tasks.create(source_id="other", notify_policy="done_only", label="L2", **base)  # type: ignore[arg-type]
    assert (again.source_id, again.notify_policy, again.label) == ("src", NotifyPolicy.STATE_CHANGES, "L")
    assert ledger.tasks.get(first.task_id) == again


def test_merge_never_resets_delivered(ledger: Ledger) -> None:
    base = {"runtime": "acp", "owner_key": OWNER, "run_id": "D", "task": "t"}
    first = ledger.tasks.create(delivery_status="delivered", status="succeeded", **base)  # type: ignore[arg-type]
    again = ledger.tasks.create(delivery_status="pending", label="new", **base)  # type: ignore[arg-type]
    assert again.task_id == first.task_id
    assert again.delivery_status == DeliveryStatus.DELIVERED
    assert again.status == TaskStatus.SUCCEEDED


def test_merge_validates_new_parent_flow(ledger: Ledger) -> None:
    base = {"runtime": "acp", "owner_key": OWNER, "run_id": "P", "task": "t"}
    first = ledger.tasks.create(**base)  # type: ignore[arg-type]
    add_flow(ledger, "f-other", owner="agent:other:main")
    add_flow(ledger, "f-mine")
    # a differing parent flow id is a different scope, so it is a new record (and it is validated)
    with pytest.raises(ParentFlowLinkError):
        ledger.tasks.create(parent_flow_id="f-other", **base)  # type: ignore[arg-type]
    linked = ledger.tasks.create(parent_flow_id="f-mine", **base)  # type: ignore[arg-type]
    assert linked.task_id != first.task_id
    assert linked.parent_flow_id == "f-mine"


def test_runtime_enum_value_accepted(ledger: Ledger) -> None:
    t = ledger.tasks.create(runtime=Runtime.SUBAGENT, task="x", owner_key=OWNER, status=TaskStatus.RUNNING)
    assert t.runtime == Runtime.SUBAGENT and t.status == TaskStatus.RUNNING
