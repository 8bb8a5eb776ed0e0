"""Hypothesis stateful test on both engines: no sequence of producer updates, lifecycle events, cancels,
notify changes and maintenance lost-marks ever downgrades a terminal status, and every task's history is a
legal path through the state machine."""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import Connection

from flowledger import FrozenClock, Ledger
from flowledger.tasks.core import store
from flowledger.tasks.core.service import Change
from flowledger.tasks.core.states import ACTIVE, TERMINAL, TaskStatus, should_apply

EXAMPLES = int(os.environ.get("FLOWLEDGER_STATEFUL_EXAMPLES", "50"))

EVENTS: list[tuple[str, dict[str, object]]] = [
    ("lifecycle", {"phase": "start"}),
    ("lifecycle", {"phase": "end"}),
    ("lifecycle", {"phase": "end", "stopReason": "aborted"}),
    ("lifecycle", {"phase": "end", "aborted": True}),
    ("lifecycle", {"phase": "error", "error": "boom"}),
    ("lifecycle", {"phase": "error", "stopReason": "rpc"}),
    ("error", {"error": "late error"}),
    ("assistant", {"text": "hello"}),
]


def allowed_change(old: TaskStatus, new: TaskStatus) -> bool:
    """What may happen to a status between two observations (several writes may have happened)."""
    if old == new or old in ACTIVE:
        return True
    return old == TaskStatus.SUCCEEDED and new in {TaskStatus.FAILED, TaskStatus.TIMED_OUT, TaskStatus.CANCELLED}


class NoDowngrade(RuleBasedStateMachine):
    runs = Bundle("runs")

    def __init__(self, ledger: Ledger, clock: FrozenClock) -> None:
        super().__init__()
        self.ledger = ledger
        self.clock = clock
        self.prefix = uuid.uuid4().hex[:10]
        self.count = 0
        self.seen: dict[str, TaskStatus] = {}
        self.children: dict[str, str | None] = {}

    def _new_run(self) -> str:
        self.count += 1
        return f"{self.prefix}-{self.count}"

    @rule(target=runs, runtime=st.sampled_from(["acp", "subagent", "cli", "cron"]),
          status=st.sampled_from(["queued", "running", "succeeded", "failed"]), with_child=st.booleans())
    def create(self, runtime: str, status: str, with_child: bool) -> str:
        run_id = self._new_run()
        child = f"agent:main:{runtime}:{run_id}" if with_child else None
        owner = None if runtime == "cron" else "agent:main:main"
        task = self.ledger.tasks.create(runtime=runtime, task=f"work {run_id}", owner_key=owner, run_id=run_id,
                                        child_session_key=child, status=status)
        self.seen[task.task_id] = task.status
        self.children[run_id] = child
        return run_id

    @rule(run=runs)
    def share_run_id(self, run: str) -> None:
        """A second producer on the same run id: updates without a session key must then touch nothing."""
        task = self.ledger.tasks.create(runtime="cli", task=f"other {run}", owner_key="agent:other:main",
                                        run_id=run, child_session_key="agent:other:main")
        self.seen[task.task_id] = task.status

    def _session(self, run: str, use_child: bool) -> str | None:
        return self.children.get(run) if use_child else None

    @rule(run=runs, use_child=st.booleans())
    def start(self, run: str, use_child: bool) -> None:
        self.ledger.tasks.start(run, session_key=self._session(run, use_child))

    @rule(run=runs, text=st.sampled_from(["half way", "  almost\n done ", ""]))
    def progress(self, run: str, text: str) -> None:
        self.ledger.tasks.progress(run, text)

    @rule(run=runs, outcome=st.sampled_from([None, "succeeded", "blocked"]), use_child=st.booleans())
    def complete(self, run: str, outcome: str | None, use_child: bool) -> None:
        self.ledger.tasks.complete(run, summary="done", outcome=outcome, session_key=self._session(run, use_child))

    @rule(run=runs, status=st.sampled_from(["failed", "timed_out", "cancelled"]), use_child=st.booleans())
    def fail(self, run: str, status: str, use_child: bool) -> None:
        self.ledger.tasks.fail(run, error="it broke", status=status, session_key=self._session(run, use_child))

    @rule(run=runs, event=st.sampled_from(EVENTS), use_child=st.booleans())
    def ingest(self, run: str, event: tuple[str, dict[str, object]], use_child: bool) -> None:
        stream, data = event
        self.ledger.tasks.ingest(run, stream, data, session_key=self._session(run, use_child))

    @rule(run=runs)
    def cancel(self, run: str) -> None:
        result = self.ledger.tasks.cancel(run)
        if result.task is not None and result.cancelled:
            assert result.task.status == TaskStatus.CANCELLED

    @rule(run=runs, policy=st.sampled_from(["done_only", "state_changes", "silent"]))
    def notify(self, run: str, policy: str) -> None:
        self.ledger.tasks.set_notify_policy(run, policy)

    @rule(run=runs)
    def maintenance_mark_lost(self, run: str) -> None:
        """What maintenance does, whatever the status it last saw: a guarded write expecting ACTIVE."""
        def unit(conn: Connection, now: datetime) -> list[Change]:
            out: list[Change] = []
            for current in store.by_run_id(conn, run, for_update=True):
                new = current.replace(status=TaskStatus.LOST, ended_at=now, last_event_at=now,
                                      error="backing session missing")
                change = self.ledger.tasks.apply(conn, current, new, expected=ACTIVE, now=now)
                if change is not None:
                    assert current.status in ACTIVE
                    out.append(change)
            return out

        self.ledger.tasks.run_unit(unit)

    @rule(seconds=st.integers(min_value=0, max_value=600))
    def advance(self, seconds: int) -> None:
        self.clock.advance(timedelta(seconds=seconds))

    @invariant()
    def terminal_never_downgrades(self) -> None:
        for task in self.ledger.tasks.list():
            old = self.seen.get(task.task_id)
            if old is None:
                continue
            assert allowed_change(old, task.status), f"{task.task_id}: {old} -> {task.status}"
            self.seen[task.task_id] = task.status
            if task.status in TERMINAL:
                assert task.ended_at is not None and task.cleanup_after is not None
            else:
                assert task.cleanup_after is None

    def teardown(self) -> None:
        for task_id in self.seen:
            self._check_history(task_id)

    def _check_history(self, task_id: str) -> None:
        history = self.ledger.tasks.events(task_id)
        assert history, task_id
        first = history[0]
        assert first.previous_status is None and first.kind in {s.value for s in TaskStatus}
        status = TaskStatus(first.kind)
        for event in history[1:]:
            assert event.previous_status == status.value, (task_id, [e.to_json() for e in history])
            if event.kind == "progress":
                continue
            nxt = TaskStatus(event.kind)
            assert nxt != status
            assert should_apply(status, nxt), (task_id, status, nxt)
            status = nxt
        task = self.ledger.tasks.get(task_id)
        assert task is not None and task.status == status  # the log ends where the record is


def test_no_downgrade_stateful(ledger: Ledger, clock: FrozenClock) -> None:
    run_state_machine_as_test(
        lambda: NoDowngrade(ledger, clock),
        settings=settings(max_examples=EXAMPLES, stateful_step_count=25, deadline=None,
                          suppress_health_check=list(HealthCheck), derandomize=False),
    )
