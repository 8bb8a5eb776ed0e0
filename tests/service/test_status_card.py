"""The status card of one session (CONTRACT §7, REFERENCE §8) from stored records on both engines, with the
5-minute recent window tested at its exact boundary."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flowledger import FrozenClock, Ledger
from flowledger.tasks.core.errors import InvalidInput
from flowledger.tasks.health import status_card

SESSION = "agent:main:main"


def card(ledger: Ledger, key: str = SESSION) -> status_card.StatusCard:
    return status_card.for_session(ledger.tasks, key)


def test_active_work_leads_and_hides_a_recent_failure(ledger: Ledger, clock: FrozenClock) -> None:
    failed = ledger.tasks.create(runtime="cli", task="broken build", owner_key=SESSION, run_id="r-fail",
                                 status="running", started_at=clock.now())
    ledger.tasks.fail("r-fail", error="exit 2")
    clock.advance(timedelta(seconds=30))
    ledger.tasks.create(runtime="subagent", task="Summarise PR 12", label="PR 12 summary", owner_key=SESSION,
                        child_session_key="agent:main:subagent:1", run_id="r-sub", status="running",
                        started_at=clock.now())
    ledger.tasks.progress("r-sub", "reading diff")
    shown = card(ledger)
    assert shown.card == "📌 Tasks: 1 active · 2 total · Subagent · PR 12 summary · reading diff"
    assert (shown.active, shown.recent_failures) == (1, 1)
    assert shown.focus is not None and shown.focus.run_id == "r-sub"
    assert failed.task_id != shown.focus.task_id
    document = shown.to_json()
    assert set(document) == {"session_key", "card", "focus", "active", "recent_failures"}
    assert document["focus"]["task_id"] == shown.focus.task_id and document["session_key"] == SESSION


def test_only_recent_failures(ledger: Ledger, clock: FrozenClock) -> None:
    for run in ("a", "b"):
        ledger.tasks.create(runtime="cli", task=f"job {run}", owner_key=SESSION, run_id=run, status="running",
                            started_at=clock.now())
    ledger.tasks.fail("a", error="disk full")
    clock.advance(timedelta(seconds=1))
    ledger.tasks.fail("b", status="timed_out")
    shown = card(ledger)
    assert shown.card == "📌 Tasks: 2 recent failures · CLI · job b"
    assert (shown.active, shown.recent_failures) == (0, 2)


def test_recent_window_boundary_is_exactly_five_minutes(ledger: Ledger, clock: FrozenClock) -> None:
    ledger.tasks.create(runtime="cli", task="nightly export", owner_key=SESSION, run_id="ok", status="running",
                        started_at=clock.now())
    ledger.tasks.complete("ok", summary="42 rows")
    ledger.tasks.create(runtime="cli", task="unrelated", owner_key="agent:main:other")
    clock.advance(timedelta(minutes=5))
    assert card(ledger).card == "📌 Tasks: recently finished · CLI · nightly export · 42 rows"
    clock.advance(timedelta(milliseconds=1))
    gone = card(ledger)
    assert gone.card == "📌 Tasks: 1 active · 2 total · agent-local"  # the agent's counts, no details
    assert (gone.focus, gone.active, gone.recent_failures) == (None, 0, 0)


def test_nothing_linked_and_nothing_for_the_agent(ledger: Ledger) -> None:
    assert card(ledger, "agent:solo:main").card == "📌 Tasks: 0 active · 0 total · agent-local"
    assert card(ledger, "not-a-canonical-key").card == "📌 Tasks: 0 active · 0 total · agent-local"
    with pytest.raises(InvalidInput):
        card(ledger, "  ")


def test_rows_whose_cleanup_is_due_are_hidden(ledger: Ledger, clock: FrozenClock) -> None:
    ledger.tasks.create(runtime="cli", task="old", owner_key=SESSION, status="succeeded", ended_at=clock.now(),
                        cleanup_after=clock.now() + timedelta(minutes=1))
    assert card(ledger).card.startswith("📌 Tasks: recently finished")
    clock.advance(timedelta(minutes=1))
    assert card(ledger).card == "📌 Tasks: 0 active · 0 total · agent-local"


def test_a_stdout_without_the_pin_gets_a_star() -> None:
    shown = status_card.StatusCard(SESSION, "Tasks: recently finished · CLI · café", None, 0, 0)
    assert shown.line("utf-8") == "📌 Tasks: recently finished · CLI · café"
    assert shown.line("ascii") == "* Tasks: recently finished ? CLI ? caf?"
    assert shown.line("latin-1") == "* Tasks: recently finished · CLI · café"
