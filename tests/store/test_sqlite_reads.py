"""The lean SQLite door (tasks/health/sqlite_reads.py) against the ORM store on one real ledger: the same records,
pages, counts and lookups, so the two doors of one store contract cannot drift apart; and the CLI's lean path
(cli/lean.py) prints byte for byte what the full path prints.

The lean door exists only for SQLite (PostgreSQL keeps the ORM path), so these tests run on SQLite files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert

from flowledger import FrozenClock, Ledger
from flowledger.cli import lean
from flowledger.cli.main import run
from flowledger.flows import health, lean_reads
from flowledger.flows import store as flow_store
from flowledger.flows.flow_rows import TIME_KEYS as FLOW_TIME_KEYS
from flowledger.flows.lean_reads import FLOW_KEYS
from flowledger.flows.pages import DEFAULT_LIMIT
from flowledger.tasks.core import task_rows
from flowledger.tasks.core.clock import SystemClock, to_ms
from flowledger.tasks.core.tables import SCHEMA_VERSION as TABLES_SCHEMA_VERSION
from flowledger.tasks.core.tables import UTCMillis, cron_jobs, cron_run_log, flow_runs, task_runs
from flowledger.tasks.health import listing
from flowledger.tasks.health.sqlite_reads import SCHEMA_VERSION, TASK_KEYS, FallbackError, LeanReader
from flowledger.tasks.runs import liveness

OWNER = "agent:main:main"


def test_the_lean_door_is_written_for_the_current_schema() -> None:
    assert SCHEMA_VERSION == TABLES_SCHEMA_VERSION  # bump both, and check the SELECTs below still match
    assert list(TASK_KEYS) == [c.name for c in task_runs.c if c.name != "seq"] + ["seq", "requester_origin_json"]
    assert list(FLOW_KEYS) == [c.name for c in flow_runs.c if c.name != "seq"]
    assert set(task_rows.TIME_KEYS) == {c.name for c in task_runs.c if isinstance(c.type, UTCMillis)}
    assert set(FLOW_TIME_KEYS) == {c.name for c in flow_runs.c if isinstance(c.type, UTCMillis)}
    from flowledger.cli.tasks_cmd import DEFAULT_LIST_LIMIT
    from flowledger.tasks.core.config import CONFIG_FILE

    assert DEFAULT_LIST_LIMIT == DEFAULT_LIMIT
    assert lean.CONFIG_FILE == CONFIG_FILE


@pytest.fixture
def mixed(sqlite_url: str, state_dir: Path, clock: FrozenClock) -> Iterator[Ledger]:
    """Every kind of row the projection reads: unbacked and backed cli runs, a live gateway lease, sessions
    (one only matched case-insensitively, one tombstoned subagent), a generation job, a queued command
    waiting for a gateway, cron tasks recovered from the run log and from the job row, flows with links."""
    with Ledger.open(state_dir=state_dir, database_url=sqlite_url, clock=clock) as ledger:
        now = clock.now()
        flow = ledger.flows.create_managed(OWNER, "ctl", "nightly", status="running")
        ledger.flows.create_managed("agent:other:main", "ctl", "other flow")
        ledger.tasks.create(runtime="cli", task="unbacked", owner_key=OWNER, run_id="r-gone", status="running",
                            started_at=now, parent_flow_id=flow.flow_id)
        ledger.tasks.create(runtime="cli", task="backed", owner_key=OWNER, run_id="r-live", status="running",
                            started_at=now, parent_flow_id=flow.flow_id, label="the live one")
        ledger.tasks.create(runtime="subagent", task="child", owner_key=OWNER, status="running", started_at=now,
                            child_session_key="agent:main:subagent:Mixed")
        ledger.tasks.create(runtime="subagent", task="wedged", owner_key=OWNER, status="running", started_at=now,
                            child_session_key="agent:main:subagent:wedged")
        ledger.tasks.create(runtime="cli", task="draw a cat", owner_key=OWNER, scope_kind="session",
                            requester_session_key=OWNER, task_kind="image_generate", status="running",
                            started_at=now)
        ledger.tasks.create(runtime="acp", task="queued", owner_key=OWNER, status="queued")
        for i in range(3):
            ledger.tasks.create(runtime="cli", task=f"done {i}", owner_key=OWNER, status="succeeded",
                                terminal_summary="ok", run_id=f"run-{i}", parent_flow_id=flow.flow_id)
        ledger.tasks.create(runtime="cli", task="broke", owner_key=OWNER, status="failed", error="exit 2")
        for job in ("job-log", "job-row"):
            ledger.tasks.create(runtime="cron", task=f"cron {job}", run_id=f"cron:{job}:{to_ms(now)}",
                                source_id=job, status="running", started_at=now)
        with ledger.db.write() as conn:
            conn.execute(insert(cron_run_log).values(job_id="job-log", action="finished", run_at=now, status="ok",
                                                     duration_ms=1500, ts=now, summary="done"))
            conn.execute(insert(cron_jobs).values(job_id="job-row", name="row", argv_json="[]", agent_id="main",
                                                  created_at=now, last_run_at=now, last_status="error",
                                                  last_error="cron: job execution timed out",
                                                  last_duration_ms=900))
            liveness.upsert_session(conn, "agent:main:subagent:mixed", now, kind="subagent")
            liveness.upsert_session(conn, "agent:main:subagent:wedged", now, kind="subagent", tombstone="stuck")
        clock.advance(timedelta(minutes=10))  # past every grace
        with ledger.db.write() as conn:
            liveness.renew_lease(conn, "gw-1", clock.now())
            liveness.register_run(conn, "r-live", "gw-1", clock.now())
        ledger.tasks.create(runtime="cli", task="fresh", owner_key=OWNER, status="running", run_id="r-fresh",
                            started_at=clock.now())
        yield ledger


def _reader(ledger: Ledger) -> LeanReader:
    assert ledger.db.sqlite_path is not None
    return LeanReader(Path(ledger.db.sqlite_path), ledger.clock.now(), retention=ledger.tasks.retention)


def test_pages_counts_and_lookups_match_the_orm_store(mixed: Ledger) -> None:
    projector = listing.Projector(mixed.clock.now(), mixed.authoritative, mixed.tasks.retention)
    orm_page = listing.page(mixed.db, listing.TaskFilter(), projector, limit=DEFAULT_LIMIT)
    orm_counts = listing.count_by_status(mixed.db, listing.TaskFilter(), projector)
    with _reader(mixed) as reader:
        assert reader.newest_tasks(limit=DEFAULT_LIMIT) == orm_page
        assert reader.newest_tasks(limit=3, offset=2) == listing.page(mixed.db, listing.TaskFilter(), projector,
                                                                      limit=3, offset=2)
        assert reader.count_by_status() == orm_counts
        statuses = {t.task: t.status.value for t in orm_page}
        assert (statuses["unbacked"], statuses["backed"], statuses["cron job-log"], statuses["cron job-row"],
                statuses["wedged"]) == ("lost", "running", "succeeded", "timed_out", "lost")
        for task in orm_page:
            for lookup in (task.task_id, task.task_id[:13], task.run_id):
                if lookup and not lookup.startswith("cron:"):
                    expected = mixed.tasks.get(lookup)
                    assert expected is not None
                    assert reader.project([reader.resolve_task(lookup)])[0] == health.project_one(mixed, expected)
        assert reader.resolve_task(OWNER) == mixed.tasks.get(OWNER)
        with pytest.raises(FallbackError):
            reader.resolve_task("no-such-task")
        with pytest.raises(FallbackError):
            reader.resolve_task(orm_page[0].task_id[:6])  # every id shares its first characters: ambiguous


def test_flow_pages_and_lookups_match_the_orm_store(mixed: Ledger) -> None:
    with mixed.db.read() as conn:
        flows = flow_store.list_flows(conn, limit=DEFAULT_LIMIT)
        counts = flow_store.count_by_status(conn)
        linked = flow_store.linked_for(conn, [f.flow_id for f in flows])
    with _reader(mixed) as reader:
        assert lean_reads.newest_flows(reader, limit=DEFAULT_LIMIT) == flows
        assert lean_reads.flow_counts(reader) == counts
        assert reader.linked_for([f.flow_id for f in flows]) == linked
        for flow in flows:
            assert lean_reads.resolve_flow(reader, flow.flow_id) == flow
            assert lean_reads.resolve_flow(reader, flow.flow_id[:14]) == flow
            assert lean_reads.resolve_flow(reader, flow.owner_key) == mixed.flows.get(flow.owner_key)
        with pytest.raises(FallbackError):
            lean_reads.resolve_flow(reader, "no-such-flow")


def test_a_ledger_at_another_schema_version_is_left_to_the_full_path(mixed: Ledger) -> None:
    with mixed.db.write() as conn:
        conn.exec_driver_sql("UPDATE schema_meta SET value = '5' WHERE meta_key = 'schema_version'")
    with pytest.raises(FallbackError):
        _reader(mixed)
    with mixed.db.write() as conn:
        conn.exec_driver_sql(f"UPDATE schema_meta SET value = '{SCHEMA_VERSION}' WHERE meta_key = 'schema_version'")


def _both(args: list[str], base: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    assert lean.run_lean([*base, *args]) == 0, args  # the lean path answers it
    answered = capsys.readouterr()
    assert run([*base, *args], lean=False) == 0, args
    full = capsys.readouterr()
    assert answered.err == full.err, args
    return answered.out, full.out


def test_the_lean_commands_print_what_the_full_path_prints(mixed: Ledger, sqlite_url: str, state_dir: Path,
                                                           capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    # Both paths read the wall clock (a projected `lost` ends "now", ages count to now): the same frozen now.
    monkeypatch.setattr(SystemClock, "now", lambda self: mixed.clock.now())
    base = ["--state-dir", str(state_dir), "--database-url", sqlite_url]
    task = mixed.tasks.list(limit=1)[0]
    flow = mixed.flows.get(OWNER)
    assert flow is not None
    # Text output shows ages against the wall clock: the records are dated now so both runs agree.
    for args in (["tasks", "list", "--json"], ["tasks", "--json"], ["tasks", "list"], ["tasks", "flow", "list"],
                 ["tasks", "show", task.task_id],
                 ["tasks", "show", task.task_id[:13], "--json"], ["tasks", "flow", "list", "--json"],
                 ["tasks", "flow", "show", flow.flow_id], ["tasks", "flow", "show", "--json", OWNER],
                 ["status"], ["status", "--json"]):
        answered, full = _both(args, base, capsys)
        assert answered == full, args


def test_what_the_lean_path_does_not_answer_it_leaves_untouched(mixed: Ledger, sqlite_url: str, state_dir: Path,
                                                                capsys: pytest.CaptureFixture[str],
                                                                tmp_path: Path) -> None:
    base = ["--state-dir", str(state_dir), "--database-url", sqlite_url]
    for args in (["tasks", "list", "--status", "lost"], ["tasks", "show", "no-such-task"],
                 ["status", "--session", OWNER], ["status", "--json", "--json"], ["--json", "status"],
                 ["status", "extra"],
                 ["tasks", "flow", "show", "nothing-here"], ["tasks", "list", "--help"], ["tasks", "cancel", "x"],
                 ["tasks", "--json", "list"], ["tasks", "flow", "--json", "list"], ["tasks", "show", "--", "x"]):
        assert lean.run_lean([*base, *args]) is None, args
    missing = tmp_path / "elsewhere"
    assert lean.run_lean(["--state-dir", str(missing), "tasks", "list"]) is None  # "No ledger at … yet."
    assert not missing.exists()  # and nothing was created on the way
    damaged = mixed.tasks.create(runtime="acp", task="damaged", owner_key=OWNER, status="queued")
    with mixed.db.write() as conn:  # a hand edit: the full path names the bad value, in its own words
        conn.exec_driver_sql(f"UPDATE task_runs SET status = 'bogus' WHERE task_id = '{damaged.task_id}'")
    assert lean.run_lean([*base, "tasks", "show", damaged.task_id]) is None
    (state_dir / "config.toml").write_text("")  # its warnings are the full path's to give
    assert lean.run_lean([*base, "tasks", "list"]) is None
    assert capsys.readouterr().out == ""


def test_every_read_sees_the_last_commit(mixed: Ledger, sqlite_url: str, state_dir: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--state-dir", str(state_dir), "--database-url", sqlite_url]
    task = mixed.tasks.create(runtime="acp", task="late", owner_key=OWNER, status="queued")
    assert lean.run_lean([*base, "tasks", "show", task.task_id, "--json"]) == 0
    assert '"notify_policy": "done_only"' in capsys.readouterr().out
    mixed.tasks.set_notify_policy(task.task_id, "silent")
    assert lean.run_lean([*base, "tasks", "show", task.task_id, "--json"]) == 0
    assert '"notify_policy": "silent"' in capsys.readouterr().out


def test_tasks_list_beyond_a_page_of_stale_rows_at_the_grace(sqlite_url: str, state_dir: Path, clock: FrozenClock,
                                                              capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """More unbacked running tasks than a page, half exactly at the lost grace (projected lost), half 1 ms inside
    it (running): the pressure line counts every projected status, `--json` totals every row without projecting
    the rows off the page; both doors print the same bytes."""
    with Ledger.open(state_dir=state_dir, database_url=sqlite_url, clock=clock) as ledger:
        for i in range(60):
            ledger.tasks.create(runtime="cli", task=f"at grace {i}", owner_key=OWNER, run_id=f"gone-{i}",
                                status="running", started_at=clock.now())
        clock.advance(timedelta(milliseconds=1))
        for i in range(60):
            ledger.tasks.create(runtime="cli", task=f"inside {i}", owner_key=OWNER, run_id=f"near-{i}",
                                status="running", started_at=clock.now())
        clock.advance(timedelta(minutes=5) - timedelta(milliseconds=1))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(SystemClock, "now", lambda self: clock.now())
    base = ["--state-dir", str(state_dir), "--database-url", sqlite_url]
    answered, full = _both(["tasks", "list"], base, capsys)
    assert answered == full
    assert answered.splitlines()[:2] == ["Background tasks: 120", "Task pressure: 0 queued · 60 running · 60 issues"]
    answered, full = _both(["tasks", "list", "--json"], base, capsys)
    assert answered == full
    document = json.loads(answered)
    assert (document["total"], document["count"]) == (120, DEFAULT_LIMIT)
    assert {t["status"] for t in document["tasks"][:60]} == {"running"}  # newest first: the ones inside the grace
    assert {t["status"] for t in document["tasks"][60:]} == {"lost"}


def test_parse_accepts_exactly_the_lean_command_lines() -> None:
    parsed = lean.parse(["--state-dir=/s", "--database-url", "sqlite:////x", "tasks", "flow", "show", "abc",
                         "--json"])
    assert parsed == lean.Request("flow show", "abc", True, "/s", "sqlite:////x")
    assert lean.parse(["tasks"]) == lean.Request("tasks list", None, False, None, None)
    assert lean.parse(["status", "--json"]) == lean.Request("status", None, True, None, None)
    for argv in (["tasks", "show"], ["tasks", "list", "extra"], ["tasks", "list", "--json", "--json"],
                 ["--state-dir"], ["--state-dir", "a", "--state-dir", "b", "tasks"], ["status", "--session", "k"],
                 ["--json", "tasks"]):
        assert lean.parse(argv) is None, argv
    assert lean.sqlite_file("sqlite:////tmp/x.db") == Path("/tmp/x.db")
    for url in ("postgresql+psycopg://h/db", "sqlite:///file:x?mode=memory", "sqlite:///a%20b", "sqlite://"):
        assert lean.sqlite_file(url) is None, url


# --- `status`: both doors on ledgers of every shape -------------------------------------------------------


def _seed_healthy(ledger: Ledger, clock: FrozenClock) -> None:
    for i in range(3):
        ledger.tasks.create(runtime="cli", task=f"done {i}", owner_key=OWNER, status="succeeded", run_id=f"ok-{i}")
    ledger.tasks.create(runtime="cli", task="broke", owner_key=OWNER, status="failed", error="exit 2")
    ledger.tasks.create(runtime="acp", task="waiting", owner_key=OWNER, status="queued")
    ledger.tasks.create(runtime="cli", task="now", owner_key=OWNER, status="running", run_id="r-now",
                        started_at=clock.now())


def _seed_stale(ledger: Ledger, clock: FrozenClock) -> None:
    """Running and queued tasks past every grace: unbacked ones project lost, backed ones are stale."""
    _seed_healthy(ledger, clock)
    for i in range(4):
        ledger.tasks.create(runtime="cli", task=f"unbacked {i}", owner_key=OWNER, run_id=f"gone-{i}",
                            status="running", started_at=clock.now())
    ledger.tasks.create(runtime="cli", task="backed", owner_key=OWNER, run_id="r-live", status="running",
                        started_at=clock.now())
    ledger.tasks.create(runtime="cli", task="queued command", owner_key=OWNER, status="queued")
    clock.advance(timedelta(minutes=45))
    with ledger.db.write() as conn:
        liveness.renew_lease(conn, "gw-1", clock.now())
        liveness.register_run(conn, "r-live", "gw-1", clock.now())


def _seed_lost(ledger: Ledger, clock: FrozenClock) -> None:
    """Tasks a sweep marked lost: some retained, some past their retention."""
    _seed_stale(ledger, clock)
    ledger.maintenance(apply=True)
    clock.advance(timedelta(days=8))
    ledger.tasks.create(runtime="cli", task="lost later", owner_key=OWNER, run_id="gone-late", status="running",
                        started_at=clock.now())
    clock.advance(timedelta(minutes=10))
    ledger.maintenance(apply=True)
    clock.advance(timedelta(minutes=1))


def _seed_flows(ledger: Ledger, clock: FrozenClock) -> None:
    now = clock.now()
    running = ledger.flows.create_managed(OWNER, "ctl", "nightly", status="running")
    ledger.flows.create_managed("agent:b:main", "ctl", "blocked", status="blocked")
    ledger.flows.create_managed("agent:c:main", "ctl", "cancelling", status="running", cancel_requested_at=now)
    ledger.flows.create_managed("agent:d:main", "ctl", "lonely", status="waiting")
    ledger.flows.create_managed("agent:e:main", "ctl", "done", status="succeeded", ended_at=now,
                                cancel_requested_at=now)
    ledger.tasks.create(runtime="cli", task="step", owner_key=OWNER, run_id="step-1", status="running",
                        started_at=now, parent_flow_id=running.flow_id)
    ledger.tasks.create(runtime="cli", task="step done", owner_key=OWNER, status="succeeded",
                        parent_flow_id=running.flow_id)
    clock.advance(timedelta(hours=1))


def _seed_findings(ledger: Ledger, clock: FrozenClock) -> None:
    """Rows only the partial indexes find: a failed delivery, timestamps out of order, a missing cleanup stamp."""
    _seed_healthy(ledger, clock)
    ids = [ledger.tasks.create(runtime="cli", task=f"odd {i}", owner_key=OWNER, status="succeeded").task_id
           for i in range(4)]
    with ledger.db.write() as conn:
        edits = ("delivery_status = 'failed', notify_policy = 'done_only'",
                 "started_at = created_at - 5000, ended_at = created_at",
                 "started_at = created_at + 5000, ended_at = created_at + 1000", "cleanup_after = NULL")
        for task_id, edit in zip(ids, edits, strict=True):
            conn.exec_driver_sql(f"UPDATE task_runs SET {edit} WHERE task_id = '{task_id}'")
    clock.advance(timedelta(minutes=5))


def _seed_damaged_flow(ledger: Ledger, clock: FrozenClock) -> None:
    """A flow row a hand edit broke: the flow audit is the one `restore_failed` finding on both doors."""
    _seed_flows(ledger, clock)
    with ledger.db.write() as conn:
        conn.exec_driver_sql("UPDATE flow_runs SET state_json = '{not json' WHERE owner_key = 'agent:b:main'")


def _seed_grace(ledger: Ledger, clock: FrozenClock) -> None:
    """An unbacked running task exactly at the lost grace (projected lost, retained), one 1 ms inside it, a fresh
    cron task (due without a grace; backed where cron has no authority) and a fresh one a hand edit ended."""
    ledger.tasks.create(runtime="cli", task="at grace", owner_key=OWNER, run_id="gone-a", status="running",
                        started_at=clock.now())
    clock.advance(timedelta(milliseconds=1))
    ledger.tasks.create(runtime="cli", task="inside", owner_key=OWNER, run_id="gone-b", status="running",
                        started_at=clock.now())
    clock.advance(timedelta(minutes=5) - timedelta(milliseconds=1))
    ledger.tasks.create(runtime="cron", task="cron", source_id="job", status="queued")
    ended = ledger.tasks.create(runtime="cli", task="ended", owner_key=OWNER, status="running", started_at=clock.now())
    with ledger.db.write() as conn:
        conn.exec_driver_sql(f"UPDATE task_runs SET ended_at = started_at WHERE task_id = '{ended.task_id}'")


# What each shape shows, so none of them is a no-op: the audit counts, retained lost tasks, flows.
SHAPE_HEALTH = {
    "empty": ({"total": 0, "warnings": 0, "errors": 0}, None, 0),
    "healthy": ({"total": 0, "warnings": 0, "errors": 0}, None, 1),
    "stale": ({"total": 3, "warnings": 2, "errors": 1}, 5, 1),
    "lost": ({"total": 2, "warnings": 2, "errors": 0}, 2, 1),
    "flows": ({"total": 8, "warnings": 5, "errors": 3}, 1, 5),
    "findings": ({"total": 4, "warnings": 4, "errors": 0}, 1, 1),
    "damaged_flow": ({"total": 1, "warnings": 0, "errors": 1}, 1, 5),  # restore_failed replaces the rest
    "grace": ({"total": 1, "warnings": 1, "errors": 0}, 1, 0),  # the ended one's timestamps; one retained lost
}
SHAPES = {"empty": lambda ledger, clock: None, "healthy": _seed_healthy, "stale": _seed_stale, "lost": _seed_lost,
          "flows": _seed_flows, "findings": _seed_findings, "damaged_flow": _seed_damaged_flow,
          "grace": _seed_grace}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_status_prints_what_the_full_path_prints(shape: str, sqlite_url: str, state_dir: Path, clock: FrozenClock,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with Ledger.open(state_dir=state_dir, database_url=sqlite_url, clock=clock) as ledger:
        SHAPES[shape](ledger, clock)
        expected = health.status(ledger).to_json()
        with _reader(ledger) as reader:
            assert lean_reads.status(reader).to_json() == expected
    monkeypatch.setattr(SystemClock, "now", lambda self: clock.now())
    base = ["--state-dir", str(state_dir), "--database-url", sqlite_url]
    for args in (["status"], ["status", "--json"]):
        answered, full = _both(args, base, capsys)
        assert answered == full, args
    capsys.readouterr()
    assert lean.run_lean([*base, "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == expected
    retained = expected["retained_lost"]
    assert (expected["audit"], retained and retained["count"], expected["flows"]["total"]) == SHAPE_HEALTH[shape]
