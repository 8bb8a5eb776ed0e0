"""The lean SQLite write door (flows/lean_writes.py, cli/lean_writes.py) against the full path on equal ledgers:
the same rows in every table (tasks, events, payloads, the trigger-kept counts), the same output bytes and exit
codes; every case it does not answer falls back with nothing written; and its compare-and-set holds when it races
another writer.

The lean door exists only for SQLite (PostgreSQL keeps the ORM path), so these tests run on SQLite files.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flowledger import FrozenClock, Ledger
from flowledger.cli import lean_writes
from flowledger.cli.main import run
from flowledger.flows.lean_writes import CancelRefusedError, LeanWriter
from flowledger.scheduler import queue
from flowledger.scheduler.submission import cli_task_fields
from flowledger.tasks.core.draft_rules import parse_draft
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import TaskStatus
from flowledger.tasks.delivery.dispatch import defer_delivery
from flowledger.tasks.health.sqlite_reads import SCHEMA_VERSION
from flowledger.tasks.runs import wakeup
from flowledger.tasks.runs.payload_rows import payload_values

OWNER = "agent:main:main"
TIMES = {"created_at", "started_at", "ended_at", "last_event_at", "cleanup_after", "at", "updated_at", "claimed_at"}
RUNNING_ID = "01a00000-0000-7000-8000-000000000001"
QUEUED_ID = "01a00000-0000-7000-8000-000000000002"
NEW_ID = "01a00000-0000-7000-8000-0000000000ff"


def seed(state_dir: Path, clock: FrozenClock) -> str:
    """A ledger with every kind of task the cancel door meets; its URL."""
    url = f"sqlite:///{state_dir / 'tasks' / 'runs.sqlite'}"
    with Ledger.open(state_dir=state_dir, database_url=url, clock=clock) as ledger:
        ledger.tasks.create(runtime="cli", task="sleep 100", task_id=RUNNING_ID, run_id=f"cli:{RUNNING_ID}",
                            status="running", started_at=clock.now(), task_kind="command",
                            notify_policy="silent")
        ledger.tasks.create(runtime="cli", task="make backup", task_id=QUEUED_ID, run_id=f"cli:{QUEUED_ID}",
                            owner_key=OWNER, notify_policy="silent", delivery_status="not_applicable",
                            label="backup")
        ledger.runs.queue.add(QUEUED_ID, ["make", "backup"], timeout=timedelta(minutes=5))
        flow = ledger.flows.create_managed(OWNER, "ctl", "nightly", status="running")
        ledger.tasks.create(runtime="cli", task="in a flow", task_id="01a00000-0000-7000-8000-000000000003",
                            owner_key=OWNER, parent_flow_id=flow.flow_id, status="running")
        ledger.tasks.create(runtime="cli", task="tell me", task_id="01a00000-0000-7000-8000-000000000004",
                            owner_key=OWNER, status="running")  # done_only, pending: its cancel is a notice
        ledger.tasks.create(runtime="subagent", task="child", task_id="01a00000-0000-7000-8000-000000000005",
                            owner_key=OWNER, child_session_key="agent:main:subagent:x", status="running")
        ledger.tasks.create(runtime="cli", task="done", task_id="01a00000-0000-7000-8000-000000000006",
                            status="succeeded")
        ledger.tasks.create(runtime="cli", task="twin a", task_id="01a00000-0000-7000-8000-0000000000a1")
        ledger.tasks.create(runtime="cli", task="twin b", task_id="01a00000-0000-7000-8000-0000000000a2")
    return url


def dump(url: str, *, mask: dict[str, str] | None = None, times: bool = True) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table, sorted; flow ids (random in `seed`) named by their order, `mask` replacing
    other ids, and `times=False` hiding time values."""
    conn = sqlite3.connect(url[len("sqlite:///"):])
    try:
        names_of = dict(mask or {})
        names_of.update({str(r[0]): f"<flow {i}>" for i, r in enumerate(
            conn.execute("SELECT flow_id FROM flow_runs ORDER BY seq"))})
        out: dict[str, list[tuple[object, ...]]] = {}
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
            cursor = conn.execute(f"SELECT * FROM {table}")
            columns = [d[0] for d in cursor.description]
            out[table] = sorted((tuple(_shown(c, v, names_of, times) for c, v in zip(columns, row, strict=True))
                                 for row in cursor), key=repr)
        return out
    finally:
        conn.close()


def _shown(column: str, value: object, names_of: dict[str, str], times: bool) -> object:
    if not times and column in TIMES and value is not None:
        return "<time>"
    if isinstance(value, str):
        for old, new in names_of.items():
            value = value.replace(old, new)
    return value


@pytest.fixture
def two(tmp_path: Path, clock: FrozenClock) -> Iterator[tuple[str, str]]:
    """Two equal ledgers: (the full path's, the lean door's)."""
    yield seed(tmp_path / "full", clock), seed(tmp_path / "lean", clock)


def _path(url: str) -> Path:
    return Path(url[len("sqlite:///"):])


# --- the same rows, events and counts (a frozen clock: every value equal) ---------------------------------


@pytest.mark.parametrize(("lookup", "reason"), [(RUNNING_ID, None), (f"cli:{QUEUED_ID}", "wrong branch"),
                                               (QUEUED_ID, "")])
def test_a_lean_cancel_writes_what_the_service_writes(two: tuple[str, str], tmp_path: Path, clock: FrozenClock,
                                                      lookup: str, reason: str | None) -> None:
    full, lean = two
    task_id = lookup.removeprefix("cli:")
    clock.advance(timedelta(minutes=3))
    with Ledger.open(state_dir=tmp_path / "full", database_url=full, clock=clock) as ledger:
        defer_delivery(ledger.tasks)
        assert ledger.tasks.cancel(lookup, reason).cancelled
    with LeanWriter(_path(lean), clock.now()) as writer:
        task = writer.cancel(lookup, reason)
    assert dump(lean) == dump(full)
    with Ledger.open(state_dir=tmp_path / "full", database_url=full, clock=clock) as ledger:
        assert task == ledger.tasks.require(task_id)
        assert ledger.tasks.events(task_id)[-1].kind == "cancelled"


def test_a_lean_submit_writes_what_enqueue_writes(two: tuple[str, str], tmp_path: Path, clock: FrozenClock,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    full, lean = two
    argv = ["tar", "czf", "out file.tgz", "src"]
    monkeypatch.setattr(queue, "new_id", lambda: NEW_ID)
    with Ledger.open(state_dir=tmp_path / "full", database_url=full, clock=clock) as ledger:
        defer_delivery(ledger.tasks)
        created = queue.enqueue(ledger, argv, label="nightly", session_key=OWNER, timeout=timedelta(hours=1),
                                notify_policy="done_only")
    fields = cli_task_fields(NEW_ID, argv, label="nightly", session_key=OWNER, shell=False, task_text=None,
                             notify_policy="done_only", requester_origin=None)
    with LeanWriter(_path(lean), clock.now()) as writer:
        task = writer.submit(parse_draft(fields, clock.now()),
                             payload_values(NEW_ID, argv, timeout=timedelta(hours=1)))
    assert task == created
    assert dump(lean) == dump(full)


# --- through the console script: the same bytes and exit codes ------------------------------------------------


def _both(full: str, lean: str, tmp_path: Path, args: list[str],
          capsys: pytest.CaptureFixture[str]) -> tuple[tuple[int | None, str, str], tuple[int, str, str]]:
    code = lean_writes.run_lean_write(["--state-dir", str(tmp_path / "lean"), "--database-url", lean, *args])
    answered = capsys.readouterr()
    full_code = run(["--state-dir", str(tmp_path / "full"), "--database-url", full, *args], lean=False)
    taken = capsys.readouterr()
    return (code, answered.out, answered.err), (full_code, taken.out, taken.err)


@pytest.mark.parametrize(("args", "code"), [
    (["tasks", "cancel", RUNNING_ID], 0), (["tasks", "cancel", "--reason", "no", QUEUED_ID], 0),
    (["tasks", "cancel", f"cli:{QUEUED_ID}", "--reason=changed my mind"], 0),
    (["tasks", "cancel", "01a00000-0000-7000-8000-000000000006"], 1),  # already ended: refused, nothing written
])
def test_the_cancel_command_prints_and_writes_the_same(two: tuple[str, str], tmp_path: Path, args: list[str],
                                                       code: int, capsys: pytest.CaptureFixture[str]) -> None:
    full, lean = two
    before = dump(lean)
    answered, taken = _both(full, lean, tmp_path, args, capsys)
    assert answered == taken
    assert answered[0] == code
    assert answered[1].startswith("Cancelled ") if code == 0 else answered[2] == "Task is already terminal.\n"
    assert dump(lean, times=False) == dump(full, times=False)
    assert (dump(lean) == before) == (code != 0)


@pytest.mark.parametrize("options", [[], ["--label", "backup", "--timeout", "5m"], ["--json"],
                                     ["--session", OWNER, "--notify=done_only", "--runtime", "cli"],
                                     ["--session", OWNER, "--notify", "state_changes", "--json"]])
def test_run_detach_prints_and_writes_the_same(two: tuple[str, str], tmp_path: Path, options: list[str],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    full, lean = two
    answered, taken = _both(full, lean, tmp_path, ["run", "--detach", *options, "--", "echo", "a b"], capsys)
    assert answered[0] == taken[0] == 0
    new_lean, new_full = (_newest(url) for url in (lean, full))
    mask_lean, mask_full = {new_lean.task_id: "<id>"}, {new_full.task_id: "<id>"}
    for got, want in zip(answered[1:], taken[1:], strict=True):  # the JSON carries the creation time too
        assert got.replace(_iso(new_lean), "<t>").replace(new_lean.task_id, "<id>") == \
            want.replace(_iso(new_full), "<t>").replace(new_full.task_id, "<id>")
    assert dump(lean, mask=mask_lean, times=False) == dump(full, mask=mask_full, times=False)


def _newest(url: str) -> Task:
    with LeanWriter(_path(url), datetime.now(UTC)) as reader:
        reader.conn.execute("BEGIN")
        return reader._tasks("", (), " ORDER BY r.seq DESC LIMIT 1")[0]


def _iso(task: Task) -> str:
    from flowledger.tasks.core.clock import iso_z

    return iso_z(task.created_at)


# --- what it does not answer falls back, nothing written ----------------------------------------------------


@pytest.mark.parametrize("args", [
    ["tasks", "cancel", "01a00000-0000-7000-8000-000000000003"],  # linked to a flow
    ["tasks", "cancel", "01a00000-0000-7000-8000-000000000004"],  # its cancel leaves a notice due
    ["tasks", "cancel", "01a00000-0000-7000-8000-000000000005"],  # a subagent
    ["tasks", "cancel", "01a00000-0000-7000-8000-0000000000a"],  # ambiguous prefix
    ["tasks", "cancel", "no-such-task"],
    ["tasks", "cancel", RUNNING_ID, "--force"],
    ["tasks", "cancel", RUNNING_ID, "--reason", "a\x00b"],  # the full path refuses NUL
    ["run", "--", "true"],  # not detached: runs in this process
    ["run", "--detach", "true"],  # no `--`
    ["run", "--detach", "--", ""],
    ["run", "--detach", "--channel", "slack", "--to", "#ops", "--session", OWNER, "--", "true"],
    ["run", "--detach", "--notify", "done_only", "--", "true"],  # needs --session: a usage error
    ["run", "--detach", "--runtime", "subagent", "--session", OWNER, "--prompt", "hi", "--", "x"],
    ["run", "--detach", "--timeout", "soon", "--", "true"],
    ["run", "--detach", "--label", "x", "--label", "y", "--", "true"],
])
def test_what_the_lean_door_does_not_answer_falls_back_unwritten(two: tuple[str, str], tmp_path: Path,
                                                                  args: list[str],
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _, lean = two
    before = dump(lean)
    assert lean_writes.run_lean_write(["--state-dir", str(tmp_path / "lean"), "--database-url", lean, *args]) is None
    assert capsys.readouterr() == ("", "")
    assert dump(lean) == before


def test_a_config_file_or_another_schema_version_falls_back(two: tuple[str, str], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    _, lean = two
    base = ["--state-dir", str(tmp_path / "lean"), "--database-url", lean]
    (tmp_path / "lean" / "config.toml").write_text("")
    before = dump(lean)
    assert lean_writes.run_lean_write([*base, "tasks", "cancel", RUNNING_ID]) is None
    assert lean_writes.run_lean_write([*base, "run", "--detach", "--", "true"]) is None
    (tmp_path / "lean" / "config.toml").unlink()
    with sqlite3.connect(_path(lean)) as conn:
        conn.execute("UPDATE schema_meta SET value = '99' WHERE meta_key = 'schema_version'")
    assert lean_writes.run_lean_write([*base, "tasks", "cancel", RUNNING_ID]) is None
    assert capsys.readouterr() == ("", "")
    with sqlite3.connect(_path(lean)) as conn:
        conn.execute("UPDATE schema_meta SET value = ? WHERE meta_key = 'schema_version'", (str(SCHEMA_VERSION),))
    assert dump(lean) == before
    assert lean_writes.run_lean_write(["--database-url", "postgresql+psycopg://u@127.0.0.1/x", "tasks", "cancel",
                                       RUNNING_ID]) is None
    assert lean_writes.run_lean_write(["--state-dir", str(tmp_path / "none"), "run", "--detach", "--", "true"]) \
        is None  # no ledger yet: the full path creates it
    assert not (tmp_path / "none").exists()


# --- compare-and-set: the loser changes nothing ---------------------------------------------------------------


def _events(url: str, task_id: str) -> list[str]:
    with sqlite3.connect(_path(url)) as conn:
        return [r[0] for r in conn.execute("SELECT kind FROM task_events WHERE task_id = ? ORDER BY id", (task_id,))]


def test_two_lean_cancels_one_wins_the_other_changes_nothing(two: tuple[str, str], clock: FrozenClock) -> None:
    _, lean = two
    outcomes: list[object] = []
    start = threading.Barrier(2)

    def cancel(reason: str) -> None:
        with LeanWriter(_path(lean), clock.now()) as writer:
            start.wait()
            try:
                outcomes.append(writer.cancel(RUNNING_ID, reason))
            except CancelRefusedError as exc:
                outcomes.append(exc)

    threads = [threading.Thread(target=cancel, args=(r,)) for r in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(type(o).__name__ for o in outcomes) == ["CancelRefusedError", "Task"]
    assert _events(lean, RUNNING_ID) == ["running", "cancelled"]


def test_a_lean_cancel_racing_a_gateways_complete_never_downgrades(two: tuple[str, str], tmp_path: Path,
                                                                   clock: FrozenClock) -> None:
    _, lean = two
    result: list[object] = []
    with Ledger.open(state_dir=tmp_path / "lean", database_url=lean, clock=clock) as ledger:
        with ledger.db.write() as conn:  # the gateway's complete holds the write lock first
            racer = threading.Thread(target=lambda: result.append(_try_cancel(lean, clock)))
            racer.start()
            current = ledger.tasks.resolve(conn, RUNNING_ID)
            assert current is not None
            ledger.tasks.apply(conn, current, current.replace(status=TaskStatus.SUCCEEDED, ended_at=clock.now(),
                                                              last_event_at=clock.now()),
                               expected={current.status}, now=clock.now())
        racer.join()
        assert ledger.tasks.require(RUNNING_ID).status.value == "succeeded"
    assert isinstance(result[0], CancelRefusedError)  # nothing written: "Task is already terminal.", as the full path
    assert _events(lean, RUNNING_ID) == ["running", "succeeded"]


def _try_cancel(url: str, clock: FrozenClock) -> object:
    try:
        with LeanWriter(_path(url), clock.now()) as writer:
            return writer.cancel(RUNNING_ID, None)
    except CancelRefusedError as exc:
        return exc


def test_the_wake_up_names_the_database_as_the_gateway_does(tmp_path: Path) -> None:
    from sqlalchemy.engine import make_url

    for url in (f"sqlite:///{tmp_path}/a/../runs.sqlite", "sqlite:///relative/runs.sqlite"):
        assert wakeup.sqlite_identity(url[len("sqlite:///"):]) == wakeup.database_identity(make_url(url))


@pytest.mark.parametrize("gateway_id", ["gw-host-1-abc", "run-host-1-abc"])  # a gateway; an in-process `run`
def test_run_detach_says_the_same_beside_a_running_gateway(two: tuple[str, str], tmp_path: Path, gateway_id: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    full, lean = two
    for url, where in ((full, "full"), (lean, "lean")):  # the CLI reads the system clock: a lease fresh now
        with Ledger.open(state_dir=tmp_path / where, database_url=url) as ledger:
            ledger.runs.renew_lease(gateway_id, host="host", pid=1, ttl=timedelta(minutes=5))
    answered, taken = _both(full, lean, tmp_path, ["run", "--detach", "--", "true"], capsys)
    new_lean, new_full = _newest(lean), _newest(full)
    assert answered[0] == taken[0] == 0
    assert answered[2].replace(new_lean.task_id, "<id>") == taken[2].replace(new_full.task_id, "<id>")
    assert ("handed to the gateway" in answered[2]) == gateway_id.startswith("gw-")


def test_a_failure_after_the_commit_is_reported_never_run_again(two: tuple[str, str], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Once the lean door committed, falling back would queue the command twice: it says what failed instead."""
    _, lean = two
    before = len(dump(lean)["task_runs"])

    def unreadable(_self: LeanWriter) -> set[str]:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(LeanWriter, "fresh_gateway_ids", unreadable)
    code = lean_writes.run_lean_write(["--state-dir", str(tmp_path / "lean"), "--database-url", lean,
                                       "run", "--detach", "--", "true"])
    assert code == 1
    assert capsys.readouterr().err == "flowledger: internal error: OperationalError: disk I/O error\n"
    assert len(dump(lean)["task_runs"]) == before + 1
