"""Batch task writes (tasks/core/batch_transitions.py) and the graph controller's batch launchers, on both engines:
one transaction per batch, yet every task gets its own history row, the compare-and-set and no-downgrade rules
of the single-task calls, and a refused batch writes nothing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest
from sqlalchemy import Connection, update

from flowledger import FrozenClock, Ledger
from flowledger.flows.controller import StepLaunch, run_flow
from flowledger.flows.definitions import FlowDefinition, StepDefinition
from flowledger.flows.models import FlowStatus
from flowledger.flows.step_launch import create_step_tasks
from flowledger.tasks.core.batch_transitions import complete_many, create_many_in_one, start_many
from flowledger.tasks.core.batch_writes import compare_and_set_many
from flowledger.tasks.core.errors import InvalidInput, ParentFlowLinkError
from flowledger.tasks.core.hooks import Change, TaskHooks
from flowledger.tasks.core.states import TaskStatus
from flowledger.tasks.core.tables import task_runs

OWNER = "agent:main:main"


class CommitLog(TaskHooks):
    """The service's own after-commit extension point: one entry per committed transaction."""

    def __init__(self) -> None:
        self.commits: list[list[Change]] = []

    def after_commit(self, changes: Sequence[Change]) -> None:
        if changes:
            self.commits.append(list(changes))


@pytest.fixture
def commits(ledger: Ledger) -> CommitLog:
    log = CommitLog()
    ledger.tasks.hooks.members.append(log)
    return log


def _history(ledger: Ledger, task_id: str) -> list[tuple[str, str | None]]:
    return [(e.kind, e.previous_status) for e in ledger.tasks.events(task_id)]


def _queued(ledger: Ledger, count: int, prefix: str = "run") -> list[str]:
    for i in range(count):
        ledger.tasks.create(runtime="cli", task=f"job {i}", owner_key=OWNER, run_id=f"{prefix}-{i}")
    return [f"{prefix}-{i}" for i in range(count)]


def test_start_and_complete_many_write_one_event_per_task_in_one_commit(ledger: Ledger, clock: FrozenClock,
                                                                         commits: CommitLog) -> None:
    run_ids = _queued(ledger, 5)
    commits.commits.clear()
    clock.advance(timedelta(seconds=1))
    started = start_many(ledger.tasks, run_ids)
    clock.advance(timedelta(seconds=2))
    done = complete_many(ledger.tasks, [*run_ids, run_ids[0]], summary="all  good")  # a repeat is written once
    assert len(started) == len(done) == 5 and len(commits.commits) == 2
    assert [len(c) for c in commits.commits] == [5, 5]
    for task in done:
        assert task.status == TaskStatus.SUCCEEDED and task.terminal_summary == "all good"
        assert task.started_at is not None and task.ended_at is not None
        assert task.ended_at - task.started_at == timedelta(seconds=2)
        assert _history(ledger, task.task_id) == [("queued", None), ("running", "queued"),
                                                  ("succeeded", "running")]
        assert ledger.tasks.require(task.task_id).status == TaskStatus.SUCCEEDED


def test_batches_never_downgrade_a_terminal_task(ledger: Ledger) -> None:
    run_ids = _queued(ledger, 3)
    ledger.tasks.fail(run_ids[0], error="boom")
    ledger.tasks.fail(run_ids[1], error="stop", status="cancelled")
    assert [t.run_id for t in start_many(ledger.tasks, run_ids)] == [run_ids[2]]
    assert [t.run_id for t in complete_many(ledger.tasks, run_ids)] == [run_ids[2]]
    statuses = {t.run_id: t.status for t in ledger.tasks.list()}
    assert statuses == {run_ids[0]: TaskStatus.FAILED, run_ids[1]: TaskStatus.CANCELLED,
                        run_ids[2]: TaskStatus.SUCCEEDED}
    failed = ledger.tasks.require(run_ids[0])
    assert _history(ledger, failed.task_id) == [("queued", None), ("failed", "queued")]


class CancelsOnCreate(TaskHooks):
    """Another writer's change landing between a task's creation and its start in the same batch (simulated in
    the batch's own transaction, through the in-transaction hook its create runs)."""

    def __init__(self, victim: str) -> None:
        self.victim = victim

    def on_written(self, conn: Connection, change: Change, now: object) -> None:
        if change.previous is None and change.task.run_id == self.victim:
            conn.execute(update(task_runs).where(task_runs.c.run_id == self.victim).values(status="cancelled"))


def test_a_refused_compare_and_set_skips_that_task_only(ledger: Ledger, commits: CommitLog) -> None:
    drafts = [ledger.tasks.draft(runtime="cli", task=f"job {i}", owner_key=OWNER, run_id=f"run-{i}")
              for i in range(3)]
    ledger.tasks.hooks.members.insert(0, CancelsOnCreate("run-1"))
    made = create_many_in_one(ledger.tasks, drafts, start=True)
    assert [t.status for t in made] == [TaskStatus.RUNNING, TaskStatus.QUEUED, TaskStatus.RUNNING]
    victim = ledger.tasks.require("run-1")
    assert victim.status == TaskStatus.CANCELLED
    assert _history(ledger, victim.task_id) == [("queued", None)]  # the refused write appended nothing
    # Each task's changes reach after_commit in its own order: created, then started.
    assert [(c.task.run_id, c.task.status) for c in commits.commits[0]] == [
        ("run-0", TaskStatus.QUEUED), ("run-0", TaskStatus.RUNNING), ("run-1", TaskStatus.QUEUED),
        ("run-2", TaskStatus.QUEUED), ("run-2", TaskStatus.RUNNING)]


def test_compare_and_set_many_guards_each_row_and_writes_only_its_changes(ledger: Ledger) -> None:
    """The batch statement (one UPDATE … FROM VALUES … RETURNING on PostgreSQL) answers as one compare_and_set
    per row: a row another writer moved is refused, a column another writer changed is not reverted."""
    run_ids = _queued(ledger, 4)
    read = [ledger.tasks.require(r) for r in run_ids]
    with ledger.db.write() as conn:  # another writer, after our read
        conn.execute(update(task_runs).where(task_runs.c.run_id == run_ids[1]).values(status="cancelled"))
        conn.execute(update(task_runs).where(task_runs.c.run_id == run_ids[2]).values(progress_summary="theirs"))
    writes = [(t.replace(status=TaskStatus.RUNNING, label=f"mine {i}"), {TaskStatus.QUEUED}, t)
              for i, t in enumerate(read[:3])]
    writes.append((read[3].replace(status=TaskStatus.RUNNING), {TaskStatus.RUNNING}, read[3]))  # wrong expectation
    with ledger.db.write() as conn:
        moved = compare_and_set_many(conn, writes)
    assert moved == {read[0].task_id, read[2].task_id}
    now = {r: ledger.tasks.require(r) for r in run_ids}
    assert [now[r].status for r in run_ids] == [TaskStatus.RUNNING, TaskStatus.CANCELLED, TaskStatus.RUNNING,
                                                TaskStatus.QUEUED]
    assert (now[run_ids[0]].label, now[run_ids[1]].label, now[run_ids[2]].label) == ("mine 0", None, "mine 2")
    assert now[run_ids[2]].progress_summary == "theirs"


def test_blank_run_ids_are_refused(ledger: Ledger) -> None:
    with pytest.raises(InvalidInput):
        start_many(ledger.tasks, ["run-0", " "])
    assert start_many(ledger.tasks, []) == [] and complete_many(ledger.tasks, ["no-such-run"]) == []


def test_create_many_in_one_is_create_for_each_and_all_or_nothing(ledger: Ledger, commits: CommitLog) -> None:
    flow = ledger.flows.create_managed(OWNER, "test-controller", "batch", status="running")
    drafts = [ledger.tasks.draft(runtime="cli", task=f"step {i}", owner_key=OWNER, scope_kind="session",
                                 parent_flow_id=flow.flow_id, run_id=f"step-{i}") for i in range(4)]
    made = create_many_in_one(ledger.tasks, drafts)
    assert [t.task for t in made] == [f"step {i}" for i in range(4)] and len(commits.commits) == 1
    assert all(_history(ledger, t.task_id) == [("queued", None)] for t in made)
    # Run-id dedupe as in create: the same drafts again return the same tasks and write nothing.
    assert [t.task_id for t in create_many_in_one(ledger.tasks, drafts)] == [t.task_id for t in made]
    assert len(commits.commits) == 1
    # One draft the flow link refuses (another owner) rolls back the whole batch.
    other = ledger.tasks.draft(runtime="cli", task="intruder", owner_key="agent:other:main", scope_kind="session",
                               parent_flow_id=flow.flow_id, run_id="step-x")
    fresh = ledger.tasks.draft(runtime="cli", task="step 9", owner_key=OWNER, scope_kind="session",
                               parent_flow_id=flow.flow_id, run_id="step-9")
    with pytest.raises(ParentFlowLinkError):
        create_many_in_one(ledger.tasks, [fresh, other])
    assert sorted(t.task for t in ledger.tasks.list()) == [f"step {i}" for i in range(4)]
    with pytest.raises(TypeError):
        ledger.tasks.draft(runtime="cli", task="x", no_such_field=1)


def test_step_tasks_of_a_cancelled_flow_are_refused_whole(ledger: Ledger) -> None:
    spec = FlowDefinition("Batch", owner=OWNER, steps=(StepDefinition("a", run=("true",)),
                                                       StepDefinition("b", run=("true",))))
    flow = ledger.flows.create_managed(OWNER, "test-controller", "batch", status="running")
    wanted = [(spec.step("a"), "flow-run-a"), (spec.step("b"), "flow-run-b")]
    made = create_step_tasks(ledger, flow.flow_id, wanted)
    assert made.refusal is None and [t.label for t in made.tasks] == ["a", "b"]
    ledger.flows.cancel(flow.flow_id)
    again = create_step_tasks(ledger, flow.flow_id, [(spec.step("a"), "flow-run-a2")])
    assert again.tasks == [] and again.refusal is not None and "cancel" in again.refusal.lower()
    assert len(ledger.flows.linked_tasks(flow.flow_id)) == 2


class BatchLauncher:
    """Starts a controller turn's steps together and ends them together, as an instant runtime would."""

    def __init__(self, ledger: Ledger, *, fail_with: str | None = None) -> None:
        self.ledger = ledger
        self.batches: list[list[str]] = []
        self.fail_with = fail_with

    def start(self, task: object, argv: list[str], **options: object) -> None:  # pragma: no cover - never used
        raise AssertionError("a batch launcher gets start_batch")

    def start_batch(self, launches: Sequence[StepLaunch]) -> None:
        if self.fail_with:
            raise RuntimeError(self.fail_with)
        self.batches.append([launch.task.label or "" for launch in launches])
        run_ids = [launch.task.run_id or "" for launch in launches]
        start_many(self.ledger.tasks, run_ids)
        complete_many(self.ledger.tasks, run_ids, summary="ok")


def _fan(width: int) -> FlowDefinition:
    steps = [StepDefinition(f"s{i}", run=("true",)) for i in range(width)]
    return FlowDefinition("Fan", owner=OWNER, max_parallel=width,
                          steps=(*steps, StepDefinition("end", run=("true",), needs=tuple(s.id for s in steps))))


def test_a_batch_launcher_gets_each_turns_steps_together(ledger: Ledger) -> None:
    launcher = BatchLauncher(ledger)
    flow = run_flow(ledger, _fan(5), launcher, poll_interval=0.0)  # type: ignore[arg-type]
    assert flow.status == FlowStatus.SUCCEEDED
    assert launcher.batches == [[f"s{i}" for i in range(5)], ["end"]]
    for task in ledger.flows.linked_tasks(flow.flow_id):
        assert task.status == TaskStatus.SUCCEEDED
        assert [kind for kind, _ in _history(ledger, task.task_id)] == ["queued", "running", "succeeded"]


def test_a_batch_launcher_that_cannot_start_fails_every_step_of_the_call(ledger: Ledger) -> None:
    flow = run_flow(ledger, _fan(3), BatchLauncher(ledger, fail_with="no runtime"),  # type: ignore[arg-type]
                    poll_interval=0.0)
    assert flow.status == FlowStatus.FAILED
    tasks = ledger.flows.linked_tasks(flow.flow_id)
    assert sorted(t.label or "" for t in tasks) == ["s0", "s1", "s2"]
    assert all(t.status == TaskStatus.FAILED and "could not start: no runtime" in (t.error or "") for t in tasks)


class StartedBatchLauncher(BatchLauncher):
    """A batch launcher whose steps the controller records running as it creates them: it only ends them."""

    starts_with_create = True

    def start_batch(self, launches: Sequence[StepLaunch]) -> None:
        assert all(launch.task.status == TaskStatus.RUNNING for launch in launches)
        self.batches.append([launch.task.label or "" for launch in launches])
        complete_many(self.ledger.tasks, [launch.task.run_id or "" for launch in launches])


def test_steps_started_with_their_create_keep_every_event_in_two_commits_per_turn(ledger: Ledger,
                                                                                  commits: CommitLog) -> None:
    launcher = StartedBatchLauncher(ledger)
    flow = run_flow(ledger, _fan(4), launcher, poll_interval=0.0)  # type: ignore[arg-type]
    assert flow.status == FlowStatus.SUCCEEDED and launcher.batches == [[f"s{i}" for i in range(4)], ["end"]]
    # Per turn: one commit creates and starts the steps (two changes each), one completes them.
    assert [len(c) for c in commits.commits] == [8, 4, 2, 1]
    for task in ledger.flows.linked_tasks(flow.flow_id):
        assert _history(ledger, task.task_id) == [("queued", None), ("running", "queued"),
                                                  ("succeeded", "running")]


def test_create_and_start_in_one_never_restarts_a_finished_task(ledger: Ledger) -> None:
    ledger.tasks.create(runtime="cli", task="done before", owner_key=OWNER, run_id="again", status="succeeded")
    drafts = [ledger.tasks.draft(runtime="cli", task=text, owner_key=OWNER, run_id=run_id)
              for text, run_id in (("done before", "again"), ("fresh", "fresh"))]
    again, fresh = create_many_in_one(ledger.tasks, drafts, start=True)
    assert (again.status, fresh.status) == (TaskStatus.SUCCEEDED, TaskStatus.RUNNING)
    assert _history(ledger, again.task_id) == [("succeeded", None)]
    assert _history(ledger, fresh.task_id) == [("queued", None), ("running", "queued")]


def test_a_batch_ending_a_cancelled_flows_last_children_ends_the_flow(ledger: Ledger) -> None:
    """A batch reads a quiet managed flow once (core/write_batch.py), but never misses a cancel request: the
    batch that ends the last active children of a flow with a pending cancel ends the flow cancelled, as the
    single-task writes do."""
    spec = FlowDefinition("Batch", owner=OWNER, steps=(StepDefinition("a", run=("true",)),
                                                       StepDefinition("b", run=("true",))))
    flow = ledger.flows.create_managed(OWNER, "test-controller", "batch", status="running")
    made = create_step_tasks(ledger, flow.flow_id, [(spec.step("a"), "run-a"), (spec.step("b"), "run-b")],
                             start=True)
    assert [t.status for t in made.tasks] == [TaskStatus.RUNNING, TaskStatus.RUNNING]
    # A quiet flow in an earlier batch is not quiet in the next one.
    assert complete_many(ledger.tasks, ["run-a"]) and ledger.flows.require(flow.flow_id).status == FlowStatus.RUNNING
    flow = ledger.flows.require(flow.flow_id)
    assert ledger.flows.request_cancel(flow.flow_id, flow.revision).applied
    assert ledger.flows.require(flow.flow_id).status == FlowStatus.RUNNING  # run-b is still active
    assert [t.run_id for t in complete_many(ledger.tasks, ["run-b"])] == ["run-b"]
    assert ledger.flows.require(flow.flow_id).status == FlowStatus.CANCELLED


def test_batches_refuse_nul_text_as_the_single_task_calls_do(ledger: Ledger) -> None:
    """PostgreSQL cannot store NUL and SQLite silently can: a batch's rows (one array per column on PostgreSQL)
    are refused as bad input before they reach either, exactly as a single create is."""
    drafts = [ledger.tasks.draft(runtime="cli", task=f"job\x00{i}", owner_key=OWNER, run_id=f"nul-{i}")
              for i in range(2)]
    with pytest.raises(InvalidInput):
        ledger.tasks.create(runtime="cli", task="job\x00", owner_key=OWNER, run_id="nul-single")
    with pytest.raises(InvalidInput):
        create_many_in_one(ledger.tasks, drafts)
    assert ledger.tasks.list() == []
