from datetime import timedelta

from flowledger import FrozenClock, Ledger, TaskStatus


def test_create_start_complete_round_trip(ledger: Ledger, clock: FrozenClock) -> None:
    task = ledger.tasks.create(runtime="acp", task="Summarise PR 12", owner_key="agent:main:main",
                               child_session_key="agent:main:acp:child", run_id="run-1")
    assert task.status == TaskStatus.QUEUED
    clock.advance(timedelta(seconds=1))
    ledger.tasks.start("run-1")
    clock.advance(timedelta(seconds=1))
    [done] = ledger.tasks.complete("run-1", summary="ok")
    assert done.status == TaskStatus.SUCCEEDED
    assert done.cleanup_after == done.ended_at + timedelta(days=7)
    kinds = [e.kind for e in ledger.tasks.events(task.task_id)]
    assert kinds == ["queued", "running", "succeeded"]
