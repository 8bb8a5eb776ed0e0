"""The counts `status` reads (tasks/core/counts.py) stay equal to `COUNT(*) GROUP BY status, runtime` through every
write path, on both engines: creates (merged repeats too), bulk creates, each transition, cancels, agent
events, flow-linked writes, maintenance's lost-marks and prunes, deletes, and hand edits in SQL."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import text

from flowledger import FrozenClock, Ledger
from flowledger.tasks.core import counts, store
from flowledger.tasks.health.summary import count_stored

EXAMPLES = int(os.environ.get("FLOWLEDGER_STATEFUL_EXAMPLES", "12"))  # long mode: set it higher
RUNTIMES = ["acp", "subagent", "cli", "cron"]
STATUSES = ["queued", "running", "succeeded", "failed", "timed_out", "cancelled", "lost"]
OWNER = "agent:main:main"


def grouped(ledger: Ledger) -> list[tuple[str, str, int]]:
    """What the counts must equal: every row counted, in the same transaction's snapshot."""
    with ledger.db.read() as conn:
        rows = conn.execute(text("SELECT status, runtime, COUNT(*) FROM task_runs GROUP BY status, runtime "
                                 "ORDER BY status, runtime"))
        return [(str(s), str(r), int(n)) for s, r, n in rows]


def kept(ledger: Ledger) -> list[tuple[str, str, int]]:
    with ledger.db.read() as conn:
        return counts.read(conn)


class CountsStayExact(RuleBasedStateMachine):
    runs = Bundle("runs")

    def __init__(self, ledger: Ledger, clock: FrozenClock) -> None:
        super().__init__()
        self.ledger = ledger
        self.clock = clock
        self.prefix = uuid.uuid4().hex[:10]
        self.count = 0

    def _new_run(self) -> str:
        self.count += 1
        return f"{self.prefix}-{self.count}"

    @rule(target=runs, runtime=st.sampled_from(RUNTIMES), status=st.sampled_from(STATUSES[:4]),
          with_child=st.booleans())
    def create(self, runtime: str, status: str, with_child: bool) -> str:
        run_id = self._new_run()
        child = f"agent:main:{runtime}:{run_id}" if with_child else None  # acp/subagent: a mirrored flow
        self.ledger.tasks.create(runtime=runtime, task=f"work {run_id}", owner_key=OWNER, run_id=run_id,
                                 status=status, child_session_key=child)
        return run_id

    @rule(run_id=runs, status=st.sampled_from(STATUSES[:4]))
    def create_again(self, run_id: str, status: str) -> None:
        """A repeat of a run scope merges (or, with another scope, inserts a second task)."""
        self.ledger.tasks.create(runtime="cli", task=f"work {run_id}", owner_key=OWNER, run_id=run_id,
                                 status=status)

    @rule(n=st.integers(min_value=1, max_value=12), runtime=st.sampled_from(RUNTIMES),
          statuses=st.lists(st.sampled_from(STATUSES[:4]), min_size=1, max_size=4))
    def create_many(self, n: int, runtime: str, statuses: list[str]) -> None:
        self.ledger.tasks.create_many({"runtime": runtime, "task": f"bulk {i}", "owner_key": OWNER,
                                       "run_id": self._new_run(), "status": statuses[i % len(statuses)]}
                                      for i in range(n))

    @rule(target=runs)
    def flow_linked(self) -> str:
        """A task created inside a managed flow, whose writes re-sync the flow in the same transaction."""
        flow = self.ledger.flows.create_managed(OWNER, "tests", "goal")
        run_id = self._new_run()
        self.ledger.tasks.create(runtime="subagent", task="step", owner_key=OWNER, run_id=run_id,
                                 parent_flow_id=flow.flow_id, child_session_key=f"agent:main:subagent:{run_id}")
        return run_id

    @rule(run_id=runs)
    def start(self, run_id: str) -> None:
        self.ledger.tasks.start(run_id)

    @rule(run_id=runs)
    def progress(self, run_id: str) -> None:
        self.ledger.tasks.progress(run_id, "half way")

    @rule(run_id=runs)
    def complete(self, run_id: str) -> None:
        self.ledger.tasks.complete(run_id, summary="ok")

    @rule(run_id=runs, status=st.sampled_from(["failed", "timed_out", "cancelled"]))
    def fail(self, run_id: str, status: str) -> None:
        self.ledger.tasks.fail(run_id, error="boom", status=status)

    @rule(run_id=runs, phase=st.sampled_from(["start", "end", "error"]))
    def ingest(self, run_id: str, phase: str) -> None:
        self.ledger.tasks.ingest(run_id, "lifecycle", {"phase": phase})

    @rule(run_id=runs)
    def cancel(self, run_id: str) -> None:
        for task in self.ledger.tasks.list(limit=50):
            if task.run_id == run_id:
                self.ledger.tasks.cancel(task.task_id, "stop")

    @rule(hours=st.sampled_from([0, 1, 24 * 8, 24 * 40]))
    def maintenance(self, hours: int) -> None:
        """Lost-marks (stale, unbacked active tasks) and prunes (past retention), in the sweep's batches."""
        self.clock.advance(timedelta(hours=hours))
        self.ledger.maintenance(apply=True)

    @rule(run_id=runs)
    def delete(self, run_id: str) -> None:
        with self.ledger.db.write() as conn:
            store.delete_tasks(conn, [t.task_id for t in store.by_run_id(conn, run_id)])

    @rule(run_id=runs, runtime=st.sampled_from(RUNTIMES), status=st.sampled_from(STATUSES))
    def hand_edit(self, run_id: str, runtime: str, status: str) -> None:
        """Not through any service: the counts follow all the same."""
        with self.ledger.db.write() as conn:
            conn.execute(text("UPDATE task_runs SET runtime = :r, status = :s WHERE run_id = :id"),
                         {"r": runtime, "s": status, "id": run_id})

    @invariant()
    def counts_equal_the_rows(self) -> None:
        assert kept(self.ledger) == grouped(self.ledger)


def test_counts_stay_exact_through_every_write_path(ledger: Ledger, clock: FrozenClock) -> None:
    run_state_machine_as_test(
        lambda: CountsStayExact(ledger, clock),
        settings=settings(max_examples=EXAMPLES, stateful_step_count=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]),
    )
    assert kept(ledger) == grouped(ledger)


def test_summary_reads_the_kept_counts(ledger: Ledger) -> None:
    ledger.tasks.create_many({"runtime": "cli", "task": f"t{i}", "scope_kind": "system",
                              "status": "succeeded" if i % 3 else "running"} for i in range(30))
    ledger.tasks.create(runtime="acp", task="one", owner_key=OWNER, status="failed")
    with ledger.db.read() as conn:
        summary = count_stored(conn)
    assert summary.by_status["succeeded"] == 20 and summary.by_status["running"] == 10
    assert summary.by_status["failed"] == 1 and summary.total == 31
    assert summary.by_runtime == {"subagent": 0, "acp": 1, "cli": 30, "cron": 0}
    assert summary.by_status_runtime == {("failed", "acp"): 1, ("running", "cli"): 10, ("succeeded", "cli"): 20}


def test_a_rolled_back_write_moves_no_count(ledger: Ledger) -> None:
    ledger.tasks.create(runtime="cli", task="kept", owner_key=OWNER)
    before = kept(ledger)
    try:
        with ledger.db.write() as conn:
            conn.execute(text("UPDATE task_runs SET status = 'failed'"))
            conn.execute(text("DELETE FROM task_runs"))
            raise RuntimeError("abandon")
    except RuntimeError:
        pass
    assert kept(ledger) == before == grouped(ledger)


def test_counts_follow_a_truncate_on_postgres(ledger: Ledger) -> None:
    ledger.tasks.create(runtime="cli", task="gone soon", owner_key=OWNER)
    if ledger.db.is_postgres:  # SQLite has no TRUNCATE (DELETE without WHERE runs the delete trigger per row)
        with ledger.db.write() as conn:
            conn.execute(text("TRUNCATE task_runs, task_events, task_delivery_state"))
    else:
        with ledger.db.write() as conn:
            conn.execute(text("DELETE FROM task_runs"))
    assert kept(ledger) == [] == grouped(ledger)


def delete_trigger_text(ledger: Ledger) -> str | None:
    if not ledger.db.is_sqlite:
        return None
    with ledger.db.read() as conn:
        found = conn.execute(text("SELECT sql FROM sqlite_master WHERE type = 'trigger' "
                                  "AND name = 'task_counts_delete'")).scalar()
        return None if found is None else str(found)


def test_a_batched_prune_counts_out_exactly_what_it_deleted_and_keeps_the_trigger(
        ledger: Ledger, clock: FrozenClock) -> None:
    """The prune counts each batch out by its (status, runtime) groups (on SQLite instead of the row trigger,
    which it drops and creates again inside the batch's transaction): the counts stay exact over batches that
    mix statuses and runtimes, the trigger is there afterwards with its own text, and counts a later delete out."""
    from flowledger.tasks.health import maintenance

    trigger = delete_trigger_text(ledger)
    statuses = ["succeeded", "failed", "cancelled", "timed_out"]
    for i in range(23):
        ledger.tasks.create(runtime=RUNTIMES[i % len(RUNTIMES)], task=f"old {i}", owner_key=OWNER,
                            run_id=f"old-{i}", status=statuses[i % len(statuses)])
    clock.advance(timedelta(days=8))
    ledger.tasks.create(runtime="cli", task="recent", owner_key=OWNER, run_id="recent", status="failed")
    ledger.tasks.create(runtime="acp", task="active", owner_key=OWNER, run_id="active", status="queued")
    assert maintenance.prune_due(ledger.tasks, clock.now(), batch=4) == 23
    assert kept(ledger) == grouped(ledger) == [("failed", "cli", 1), ("queued", "acp", 1)]
    assert delete_trigger_text(ledger) == trigger
    with ledger.db.write() as conn:
        store.delete_tasks(conn, [t.task_id for t in store.by_run_id(conn, "recent")])
    assert kept(ledger) == grouped(ledger) == [("queued", "acp", 1)]
