"""The text `tasks list` counts projected statuses by class (tasks/health/sqlite_reads.py `count_by_status`): one due
row of each class of rows that agree on everything the rules read is judged, and stands for the class. These tests
keep that honest: the rules read exactly `backing.JUDGED_FIELDS` (recorded, not assumed), the class key covers each
of them, and on ledgers with rows at the exact boundaries of both graces — now on, and off, a millisecond — the
lean count equals the ORM path's row-by-row count and the projection of every task, and both doors print the same.

The lean door is SQLite's alone (PostgreSQL keeps the full path, unchanged), so these ledgers are SQLite files.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, update

from flowledger import FrozenClock, Ledger
from flowledger.cli import lean
from flowledger.cli.main import run
from flowledger.flows import health
from flowledger.tasks.core.clock import SystemClock, to_ms
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import ACTIVE, DeliveryStatus, NotifyPolicy, Runtime, ScopeKind, TaskStatus
from flowledger.tasks.core.tables import cron_jobs, task_payloads, task_runs
from flowledger.tasks.health import backing, cron_recovery, listing
from flowledger.tasks.health.backing import CODEX_NATIVE_GRACE, GRACES, LOST_GRACE, BackingView, SessionState
from flowledger.tasks.health.sqlite_reads import VERDICT_CLASS, LeanReader
from flowledger.tasks.runs import liveness

OWNER = "agent:main:main"


class Recording:
    """A task that records which of its fields a rule reads."""

    def __init__(self, task: Task, read: set[str]) -> None:
        self._task, self._read = task, read

    def __getattr__(self, name: str) -> Any:
        self._read.add(name)
        return getattr(self._task, name)


def _shapes(now: datetime) -> list[Task]:
    """Non-cron tasks down every branch of `judge` and `grace_for`, inside and past each grace."""
    out = []
    for status in (TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.SUCCEEDED):
        for runtime in (Runtime.CLI, Runtime.SUBAGENT, Runtime.ACP):
            for fields in ({}, {"run_id": "r-live"}, {"run_id": "r-gone"}, {"source_id": "r-live"},
                           {"child_session_key": "agent:main:subagent:x"},
                           {"child_session_key": "agent:main:subagent:tomb"},
                           {"child_session_key": "agent:main:discord:channel:1"},
                           {"task_kind": "codex-native", "run_id": "codex-thread:1"},
                           {"task_kind": "image_generate", "scope_kind": ScopeKind.SESSION,
                            "requester_session_key": "agent:main:subagent:x"}):
                for age in (timedelta(minutes=1), LOST_GRACE, CODEX_NATIVE_GRACE):
                    values: dict[str, Any] = {"requester_session_key": "", "scope_kind": ScopeKind.SYSTEM,
                                              "delivery_status": DeliveryStatus.PENDING,
                                              "notify_policy": NotifyPolicy.SILENT, **fields}
                    out.append(Task(task_id=f"t{len(out)}", runtime=runtime, task="x", owner_key=OWNER,
                                    status=status, created_at=now - age, **values))
    return out


def test_the_rules_read_exactly_the_judged_fields() -> None:
    now = datetime(2026, 12, 3, 12, tzinfo=UTC)
    view = BackingView(now=now, authoritative=True, live_runs={"r-live"}, fresh_gateways={"gw"},
                       sessions={"agent:main:subagent:x": SessionState("agent:main:subagent:x", None, True, "gw"),
                                 "agent:main:subagent:tomb": SessionState("agent:main:subagent:tomb", "stuck",
                                                                          False, None)},
                       waiting_for_gateway={"t0"})
    read: set[str] = set()
    for task in _shapes(now):
        recorded: Any = Recording(task, read)
        backing.should_mark_lost(recorded, view)
        assert cron_recovery.parse_run(recorded) is None
        assert backing.grace_for(task) in GRACES
    assert read == backing.JUDGED_FIELDS  # a rule reading another field must be named there, and classed
    assert set(VERDICT_CLASS) == backing.JUDGED_FIELDS


def _ledger_at_the_graces(ledger: Ledger, clock: FrozenClock, *, served: bool) -> None:
    """Now minus each grace, then a millisecond later: the same shapes of row at each of those four times, three
    of a kind where the shape allows, so classes hold several rows and a class boundary falls on each grace.
    `served`: a gateway with a fresh lease runs the `live-*` runs and a queued command waits for it; else no run
    is live and no command waits (the classes then leave those membership tests out)."""
    start = clock.now()
    n = 0
    for at in (CODEX_NATIVE_GRACE, CODEX_NATIVE_GRACE - timedelta(milliseconds=1), LOST_GRACE,
               LOST_GRACE - timedelta(milliseconds=1)):
        clock.set(start + CODEX_NATIVE_GRACE - at)
        for copy in range(3):
            n += 1
            tag = f"{at.total_seconds()}-{copy}"
            create = ledger.tasks.create
            create(runtime="cli", task=f"gone {tag}", owner_key=OWNER, run_id=f"gone-{n}", status="running",
                   started_at=clock.now())
            create(runtime="cli", task=f"live {tag}", owner_key=OWNER, run_id=f"live-{n}", status="running",
                   started_at=clock.now())
            create(runtime="cli", task=f"by source {tag}", owner_key=OWNER, run_id="", source_id=f"live-{n}",
                   status="running", started_at=clock.now())
            create(runtime="cli", task=f"no ids {tag}", owner_key=OWNER, status="running", started_at=clock.now())
            emptied = create(runtime="cli", task=f"empty run id {tag}", owner_key=OWNER, run_id=f"empty-{n}",
                             status="running", started_at=clock.now())
            waiting = create(runtime="cli", task=f"waiting {tag}", owner_key=OWNER, status="queued",
                             run_id=f"waiting-{n}")
            claimed = create(runtime="cli", task=f"claimed {tag}", owner_key=OWNER, status="queued",
                             run_id=f"claimed-{n}")
            create(runtime="subagent", task=f"codex {tag}", owner_key=OWNER, task_kind="codex-native",
                   run_id=f"codex-thread:{n}", status="running", started_at=clock.now())
            create(runtime="subagent", task=f"not codex {tag}", owner_key=OWNER, task_kind="codex-native",
                   run_id=f"Codex-thread:{n}", status="running", started_at=clock.now())
            create(runtime="subagent", task=f"child {tag}", owner_key=OWNER, status="running",
                   started_at=clock.now(), child_session_key="agent:main:subagent:Alive")
            create(runtime="subagent", task=f"missing child {tag}", owner_key=OWNER, status="running",
                   started_at=clock.now(), child_session_key=f"agent:main:subagent:gone-{n}")
            create(runtime="subagent", task=f"wedged {tag}", owner_key=OWNER, status="running",
                   started_at=clock.now(), child_session_key="agent:main:subagent:wedged")
            create(runtime="cli", task=f"channel {tag}", owner_key=OWNER, status="running", started_at=clock.now(),
                   child_session_key="agent:main:discord:channel:7")
            for requester in ("agent:main:subagent:alive", "agent:main:subagent:gone"):
                for legacy in (False, True):
                    drawn = create(runtime="cli", task=f"draw {tag}", owner_key=requester, scope_kind="session",
                                   requester_session_key=requester, task_kind="image_generate",
                                   status="running", started_at=clock.now())
                    if legacy:  # an old row without its requester: read as its owner (task_rows.mapping_to_task)
                        with ledger.db.write() as conn:
                            conn.execute(update(task_runs).where(task_runs.c.task_id == drawn.task_id)
                                         .values(requester_session_key=""))
            create(runtime="acp", task=f"acp {tag}", owner_key=OWNER, status="running", started_at=clock.now(),
                   child_session_key="agent:main:acp:1")
            for job in (f"job-{n}", f"orphan-{n}"):  # a job row tells the first run's end; nothing the second's
                create(runtime="cron", task=f"cron {tag}", run_id=f"cron:{job}:{to_ms(clock.now())}",
                       source_id=job, status="running", started_at=clock.now())
            with ledger.db.write() as conn:
                conn.execute(update(task_runs).where(task_runs.c.task_id == emptied.task_id).values(run_id=""))
                conn.execute(insert(task_payloads).values(task_id=waiting.task_id, argv_json="[]",
                                                          claimed_by=None if served else "gw-old"))
                conn.execute(insert(task_payloads).values(task_id=claimed.task_id, argv_json="[]",
                                                          claimed_by="gw-old", claimed_at=clock.now()))
                conn.execute(insert(cron_jobs).values(job_id=f"job-{n}", name=f"row-{n}", argv_json="[]",
                                                      agent_id="main", created_at=clock.now(),
                                                      last_run_at=clock.now(), last_status="ok",
                                                      last_duration_ms=10))
    clock.set(start + CODEX_NATIVE_GRACE)
    with ledger.db.write() as conn:
        liveness.upsert_session(conn, "agent:main:subagent:alive", clock.now(), kind="subagent")
        liveness.upsert_session(conn, "agent:main:subagent:wedged", clock.now(), kind="subagent", tombstone="stuck")
        if not served:
            return
        liveness.renew_lease(conn, "gw-1", clock.now())
        for i in range(1, n + 1):
            liveness.register_run(conn, f"live-{i}", "gw-1", clock.now())


@pytest.mark.parametrize("served", [True, False])
@pytest.mark.parametrize("off_ms", [timedelta(0), timedelta(microseconds=1), timedelta(microseconds=999)])
def test_counts_by_class_equal_every_row_judged(off_ms: timedelta, served: bool, sqlite_url: str, state_dir: Path,
                                                 clock: FrozenClock, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`now` exactly on each grace, and 1 µs / 999 µs past it (stored times are whole milliseconds): every
    count the lean door gives is the ORM path's row-by-row count and the tally of every task projected."""
    with Ledger.open(state_dir=state_dir, database_url=sqlite_url, clock=clock) as ledger:
        _ledger_at_the_graces(ledger, clock, served=served)
        clock.advance(off_ms)
        now = clock.now()
        projector = listing.Projector(now, ledger.authoritative, ledger.tasks.retention)
        orm = listing.count_by_status(ledger.db, listing.TaskFilter(), projector)
        every = Counter(health.project_one(ledger, t).status.value for t in ledger.tasks.list(limit=None))
        assert ledger.db.sqlite_path is not None
        with LeanReader(Path(ledger.db.sqlite_path), now, retention=ledger.tasks.retention) as reader:
            counts = reader.count_by_status()
        assert counts == orm
        assert {k: v for k, v in counts.items() if v} == dict(every)
        # both sides of both graces are present: the boundary rows really split
        assert counts[TaskStatus.LOST.value] and counts[TaskStatus.RUNNING.value]
        assert counts[TaskStatus.SUCCEEDED.value]  # the cron runs recovered from their job rows
        stored = Counter(t.status.value for t in ledger.tasks.list(limit=None))
        assert sum(stored[s.value] for s in ACTIVE) > counts[TaskStatus.RUNNING.value] + \
            counts[TaskStatus.QUEUED.value]
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(SystemClock, "now", lambda self: clock.now())
    base = ["--state-dir", str(state_dir), "--database-url", sqlite_url]
    assert lean.run_lean([*base, "tasks", "list"]) == 0
    answered = capsys.readouterr()
    assert run([*base, "tasks", "list"], lean=False) == 0
    full = capsys.readouterr()
    assert (answered.out, answered.err) == (full.out, full.err)
    queued, running = counts[TaskStatus.QUEUED.value], counts[TaskStatus.RUNNING.value]
    issues = sum(counts[s] for s in ("failed", "timed_out", "lost"))
    assert answered.out.splitlines()[1] == f"Task pressure: {queued} queued · {running} running · {issues} issues"
