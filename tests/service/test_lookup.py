"""Lookups and ordering (REFERENCE §2.3), run-scope resolution and the cross-tenant guard (scenario 13)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from flowledger import FrozenClock, Ledger
from flowledger.tasks.core.states import TaskStatus

T0 = datetime(2026, 3, 30, 1, 0, tzinfo=UTC)
OWNER = "agent:main:main"


def test_lookup_order_task_id_then_run_id_then_session(ledger: Ledger, clock: FrozenClock) -> None:
    a = ledger.tasks.create(runtime="acp", task="a", owner_key=OWNER, run_id="run-a",
                            child_session_key="agent:main:acp:a")
    clock.advance(timedelta(seconds=1))
    b = ledger.tasks.create(runtime="cli", task="b", owner_key=OWNER, run_id=a.task_id)  # run id == a's task id
    assert ledger.tasks.get(a.task_id) == a  # the exact task id wins over a run id
    assert ledger.tasks.get("  run-a  ") == a  # trimmed
    assert ledger.tasks.get(OWNER) == b  # newest task of that owner
    assert ledger.tasks.get("agent:main:acp:a") == a  # by child key
    assert ledger.tasks.get("nope") is None
    assert ledger.tasks.get("   ") is None
    assert ledger.tasks.get("") is None


def test_run_id_prefers_non_cli_then_earliest(ledger: Ledger, clock: FrozenClock) -> None:
    cli = ledger.tasks.create(runtime="cli", task="c", owner_key="agent:x:main", run_id="R")
    clock.advance(timedelta(seconds=1))
    sub1 = ledger.tasks.create(runtime="subagent", task="s1", owner_key="agent:y:main", run_id="R")
    clock.advance(timedelta(seconds=1))
    ledger.tasks.create(runtime="acp", task="s2", owner_key="agent:z:main", run_id="R")
    assert ledger.tasks.get("R") == sub1
    assert cli.task_id != sub1.task_id


def test_newest_first_ties_by_insertion(ledger: Ledger, clock: FrozenClock) -> None:
    first = ledger.tasks.create(runtime="cli", task="1", owner_key=OWNER)
    second = ledger.tasks.create(runtime="cli", task="2", owner_key=OWNER)  # same created_at
    clock.advance(timedelta(milliseconds=1))
    third = ledger.tasks.create(runtime="acp", task="3", owner_key="agent:o:main")
    ids = [t.task_id for t in ledger.tasks.list()]
    assert ids == [third.task_id, second.task_id, first.task_id]
    assert ledger.tasks.get(OWNER) == second  # tie → the later inserted


def test_started_in_the_past_sorts_by_normalised_created_at(ledger: Ledger, clock: FrozenClock) -> None:
    old = ledger.tasks.create(runtime="cli", task="old", owner_key=OWNER, status="running",
                              started_at=T0 - timedelta(hours=1))
    new = ledger.tasks.create(runtime="cli", task="new", owner_key=OWNER)
    assert [t.task_id for t in ledger.tasks.list()] == [new.task_id, old.task_id]


def test_list_filters(ledger: Ledger) -> None:
    ledger.tasks.create(runtime="acp", task="a", owner_key=OWNER)
    ledger.tasks.create(runtime="cron", task="c", status="running")
    ledger.tasks.create(runtime="cron", task="d", status="failed")
    assert [t.task for t in ledger.tasks.list(runtime="cron")] == ["d", "c"]
    assert [t.task for t in ledger.tasks.list(status="running")] == ["c"]
    assert [t.task for t in ledger.tasks.list(runtime="cron", status=TaskStatus.FAILED)] == ["d"]
    assert ledger.tasks.list(runtime="subagent") == []


def test_session_index_scenario_18(ledger: Ledger, clock: FrozenClock) -> None:
    older = ledger.tasks.create(runtime="acp", task="older", owner_key=OWNER, child_session_key="agent:main:acp:k")
    clock.advance(timedelta(seconds=5))
    newer = ledger.tasks.create(runtime="acp", task="newer", owner_key=OWNER)
    assert [t.task_id for t in ledger.tasks.list_for_owner(OWNER)] == [newer.task_id, older.task_id]
    assert ledger.tasks.get("agent:main:acp:k") == older
    related = ledger.tasks.list(related_session="agent:main:acp:k")
    assert [t.task_id for t in related] == [older.task_id]


def test_restore_after_reopen_scenario_17(database_url: str, state_dir: Path, clock: FrozenClock) -> None:
    with Ledger.open(state_dir=state_dir, database_url=database_url, clock=clock) as first:
        made = first.tasks.create(runtime="acp", task="Summarise PR 12", owner_key=OWNER, run_id="run-restore",
                                  requester_origin={"channel": "slack", "to": "C1"}, progress_summary="p")
    with Ledger.open(state_dir=state_dir, database_url=database_url, clock=clock) as second:
        found = second.tasks.get(made.task_id)
        assert found == made
        assert found is not None and (found.run_id, found.task) == ("run-restore", "Summarise PR 12")
        assert second.tasks.get("run-restore") == made


# --- run scope (REFERENCE §2.3) ---------------------------------------------------------------------------


def test_run_scope_without_session_updates_one_scope(ledger: Ledger) -> None:
    a = ledger.tasks.create(runtime="cli", task="a", owner_key=OWNER, run_id="R")
    b = ledger.tasks.create(runtime="cli", task="b", owner_key=OWNER, run_id="R")
    updated = ledger.tasks.start("R")
    assert {t.task_id for t in updated} == {a.task_id, b.task_id}


def test_run_scope_collision_without_session_touches_nothing(ledger: Ledger) -> None:
    ledger.tasks.create(runtime="acp", task="victim", owner_key="agent:victim:main", run_id="R",
                        child_session_key="agent:victim:acp:c", status="running")
    ledger.tasks.create(runtime="cli", task="attacker", owner_key="agent:attacker:main", run_id="R",
                        child_session_key="agent:attacker:main", status="running")
    assert ledger.tasks.fail("R", error="boom") == []
    assert {t.status for t in ledger.tasks.list()} == {TaskStatus.RUNNING}


def test_run_scope_isolation_scenario_13(ledger: Ledger) -> None:
    victim = ledger.tasks.create(runtime="acp", task="victim", owner_key="agent:victim:main", run_id="R",
                                 child_session_key="agent:victim:acp:c", status="running")
    attacker = ledger.tasks.create(runtime="cli", task="attacker", owner_key="agent:attacker:main", run_id="R",
                                   child_session_key="agent:attacker:main", status="running")
    changed = ledger.tasks.ingest("R", "lifecycle", {"phase": "error", "error": "bad"},
                                  session_key="agent:attacker:main")
    assert [t.task_id for t in changed] == [attacker.task_id]
    assert ledger.tasks.get(attacker.task_id).status == TaskStatus.FAILED  # type: ignore[union-attr]
    v = ledger.tasks.get(victim.task_id)
    assert v is not None and v.status == TaskStatus.RUNNING and v.error is None
    assert v.last_event_at == victim.last_event_at


def test_run_scope_session_falls_back_to_owner_then_nothing(ledger: Ledger) -> None:
    mine = ledger.tasks.create(runtime="acp", task="m", owner_key=OWNER, run_id="R",
                               child_session_key="agent:main:acp:1")
    system = ledger.tasks.create(runtime="cron", task="s", owner_key=OWNER, scope_kind="system", run_id="R")
    assert [t.task_id for t in ledger.tasks.start("R", session_key=OWNER)] == [mine.task_id]  # session scope only
    assert ledger.tasks.start("R", session_key="agent:nobody:main") == []
    assert ledger.tasks.get(system.task_id).status == TaskStatus.QUEUED  # type: ignore[union-attr]


def test_run_scope_runtime_filter(ledger: Ledger) -> None:
    ledger.tasks.create(runtime="acp", task="a", owner_key=OWNER, run_id="R")
    cli = ledger.tasks.create(runtime="cli", task="c", owner_key="agent:o:main", run_id="R")
    assert [t.task_id for t in ledger.tasks.start("R", runtime="cli")] == [cli.task_id]
