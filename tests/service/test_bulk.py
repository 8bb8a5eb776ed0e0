"""Bulk creation: the same records `create` would make, written a batch per transaction, on both engines."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flowledger import FrozenClock, Ledger
from flowledger.tasks.core.errors import FlowledgerError, InvalidInput
from flowledger.tasks.core.states import DeliveryStatus, NotifyPolicy, ScopeKind, TaskStatus


def _comparable(task_json: dict[str, object]) -> dict[str, object]:
    # Ids are fresh per record; a linked one-task flow is fresh too, so only its presence compares.
    out = {k: v for k, v in task_json.items() if k != "task_id"}
    out["parent_flow_id"] = out["parent_flow_id"] is not None
    return out


def test_bulk_records_match_create(ledger: Ledger, clock: FrozenClock) -> None:
    records = [
        {"runtime": "acp", "task": "  Summarise PR 12 ", "owner_key": "agent:main:main",
         "child_session_key": "agent:main:acp:child", "run_id": "run-1"},
        {"runtime": "cron", "task": "nightly", "scope_kind": "system"},
        {"runtime": "cli", "task": "make test", "owner_key": "agent:ops:main", "status": "succeeded",
         "ended_at": clock.now() - timedelta(hours=1), "terminal_summary": "all   green",
         "requester_origin": {"channel": "slack", "to": "#ops"}},
        {"runtime": "subagent", "task": "broken", "owner_key": "agent:main:main", "status": "failed",
         "error": "boom"},
    ]
    # What create() stores for each record (after its after-commit hooks: delivery), then removed, is the
    # expectation.
    made = [ledger.tasks.create(**r).task_id for r in records]
    expected = [_comparable(ledger.tasks.require(task_id).to_json()) for task_id in made]
    with ledger.db.write() as conn:
        conn.exec_driver_sql("DELETE FROM task_events")
        conn.exec_driver_sql("DELETE FROM task_delivery_state")
        conn.exec_driver_sql("DELETE FROM task_runs")

    assert ledger.tasks.create_many(records) == 4
    created = sorted(ledger.tasks.list(), key=lambda t: t.task)
    assert sorted(expected, key=lambda t: str(t["task"])) == [_comparable(t.to_json()) for t in created]

    cron = next(t for t in created if t.task == "nightly")
    assert (cron.scope_kind, cron.delivery_status, cron.notify_policy) == (
        ScopeKind.SYSTEM, DeliveryStatus.NOT_APPLICABLE, NotifyPolicy.SILENT)
    done = next(t for t in created if t.status == TaskStatus.SUCCEEDED)
    # Terminal on arrival: stamped for cleanup exactly like create() (ended_at + 7 days).
    assert done.cleanup_after == done.ended_at + timedelta(days=7)  # type: ignore[operator]
    assert done.requester_origin is not None and done.requester_origin.channel == "slack"
    failed = next(t for t in created if t.status == TaskStatus.FAILED)
    assert [(e.kind, e.summary) for e in ledger.tasks.events(failed.task_id)] == [("failed", "boom")]
    queued = next(t for t in created if t.run_id == "run-1")
    assert [e.kind for e in ledger.tasks.events(queued.task_id)] == ["queued"]


def test_bulk_tasks_live_the_normal_lifecycle(ledger: Ledger, clock: FrozenClock) -> None:
    ledger.tasks.create_many(({"runtime": "acp", "task": f"t{i}", "owner_key": "agent:main:main",
                               "child_session_key": f"agent:main:acp:{i}", "run_id": f"run-{i}"}
                              for i in range(7)), batch_size=3)
    assert len(ledger.tasks.list()) == 7
    clock.advance(timedelta(seconds=1))
    ledger.tasks.start("run-5")
    [done] = ledger.tasks.complete("run-5", summary="ok")
    assert [e.kind for e in ledger.tasks.events(done.task_id)] == ["queued", "running", "succeeded"]
    assert ledger.tasks.list(status="queued").__len__() == 6


def test_batches_commit_independently_and_errors_name_the_record(ledger: Ledger) -> None:
    good = [{"runtime": "cli", "task": f"job {i}", "owner_key": "agent:main:main"} for i in range(4)]
    bad = {"runtime": "bogus", "task": "x", "owner_key": "agent:main:main"}
    with pytest.raises(InvalidInput, match=r"^Record 4: .*runtime"):
        ledger.tasks.create_many([*good, bad], batch_size=2)
    # Batches 0-1 and 2-3 committed before record 4's batch was refused.
    assert len(ledger.tasks.list()) == 4


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"runtime": "acp", "task": "x", "colour": "red"}, r"Record 0: unknown task field\(s\): colour"),
        ({"runtime": "acp", "task": "   ", "owner_key": "k"}, r"Record 0: Task text is required"),
        ({"runtime": "acp", "task": "x", "scope_kind": "session"}, r"Record 0: Task ownerKey is required"),
        ({"runtime": "acp", "task": "x", "owner_key": "k", "status": "bogus"}, r"Record 0: .*status"),
    ],
)
def test_bad_records_are_refused_before_anything_is_written(ledger: Ledger, record: dict[str, object],
                                                             message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        ledger.tasks.create_many([record])
    assert ledger.tasks.list() == []


def test_chosen_task_ids_may_not_repeat_or_clash(ledger: Ledger) -> None:
    base = {"runtime": "cli", "task": "x", "owner_key": "agent:main:main"}
    with pytest.raises(InvalidInput, match="Record 1: task id 'a' repeats record 0"):
        ledger.tasks.create_many([{**base, "task_id": "a"}, {**base, "task_id": "a"}])
    assert ledger.tasks.create_many([{**base, "task_id": "a"}]) == 1
    with pytest.raises(InvalidInput, match="Record 1: task id 'a' already exists"):
        ledger.tasks.create_many([{**base, "task_id": "b"}, {**base, "task_id": "a"}])
    assert [t.task_id for t in ledger.tasks.list()] == ["a"]


def test_bad_batch_size_and_empty_input(ledger: Ledger) -> None:
    with pytest.raises(InvalidInput, match="batch_size"):
        ledger.tasks.create_many([], batch_size=0)
    assert ledger.tasks.create_many([]) == 0


def test_bulk_uses_the_clock_once_per_batch(ledger: Ledger, clock: FrozenClock) -> None:
    ledger.tasks.create_many([{"runtime": "cli", "task": f"j{i}", "owner_key": "agent:main:main"}
                              for i in range(3)])
    assert {t.created_at for t in ledger.tasks.list()} == {clock.now()}
    assert {t.last_event_at for t in ledger.tasks.list()} == {clock.now()}


def test_parent_flow_links_are_checked_like_create(ledger: Ledger) -> None:
    record = {"runtime": "cli", "task": "x", "owner_key": "agent:main:main", "parent_flow_id": "no-such-flow"}
    with pytest.raises(FlowledgerError) as by_create:
        ledger.tasks.create(**record)
    with pytest.raises(type(by_create.value)) as by_bulk:
        ledger.tasks.create_many([record])
    assert by_bulk.value.message == by_create.value.message
    assert ledger.tasks.list() == []

    flow = ledger.flows.create_managed("agent:main:main", "bench", "a goal")
    assert ledger.tasks.create_many([{**record, "parent_flow_id": flow.flow_id}]) == 1
    [linked] = ledger.tasks.list()
    assert linked.parent_flow_id == flow.flow_id
