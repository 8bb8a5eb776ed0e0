"""Two processes writing one database at once: an event ingester and an operator using the CLI.

Neither may see `database is locked` (or any storage error), and no update may be lost: every task's final
record agrees with its append-only event log and with what each process was told.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from flowledger import Ledger
from flowledger.cli.main import run
from flowledger.tasks.core.states import NotifyPolicy, TaskStatus

N = int(os.environ.get("FLOWLEDGER_CONCURRENCY_TASKS", "30"))
PROGRESS = 20


def _ingester(url: str, state_dir: str, out: str, go: multiprocessing.synchronize.Event) -> None:
    results: dict[str, object] = {"errors": []}
    go.wait(30)
    try:
        with Ledger.open(state_dir=state_dir, database_url=url) as ledger:
            for i in range(N):
                run_id = f"run-{i}"
                ledger.tasks.start(run_id)
                for k in range(PROGRESS):
                    ledger.tasks.progress(run_id, f"step {i}.{k}")
                ledger.tasks.ingest(run_id, "lifecycle", {"phase": "end"})
    except Exception as exc:  # reported to the parent, which fails the test with it
        results["errors"] = [f"{type(exc).__name__}: {exc}"]
    Path(out).write_text(json.dumps(results))


def _operator(url: str, state_dir: str, out: str, go: multiprocessing.synchronize.Event) -> None:
    codes: dict[str, list[int]] = {"notify": [], "cancel": []}
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        # Walk the tasks from the other end, so the two processes cross on the same rows mid-way.
        for i in reversed(range(N)):
            base = ["--database-url", url, "--state-dir", state_dir, "tasks"]
            codes["notify"].append(run([*base, "notify", f"run-{i}", "state_changes"]))
            go.set()  # the ingester starts once the CLI is warm, so the two really overlap
            if i % 2 == 0:
                codes["cancel"].append(run([*base, "cancel", f"run-{i}"]))
    codes["notify"].reverse()
    codes["cancel"].reverse()
    Path(out).write_text(json.dumps({"codes": codes, "stderr": stderr.getvalue()}))


def test_ingester_and_cli_operator_at_once(database_url: str, state_dir: Path, tmp_path: Path) -> None:
    with Ledger.open(state_dir=state_dir, database_url=database_url) as ledger:
        for i in range(N):
            ledger.tasks.create(runtime="cli", task=f"job {i}", owner_key="agent:main:main", run_id=f"run-{i}",
                                delivery_status="not_applicable")
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    a_out, b_out = tmp_path / "a.json", tmp_path / "b.json"
    a = ctx.Process(target=_ingester, args=(database_url, str(state_dir), str(a_out), go))
    b = ctx.Process(target=_operator, args=(database_url, str(state_dir), str(b_out), go))
    a.start()
    b.start()
    a.join(120)
    b.join(120)
    assert (a.exitcode, b.exitcode) == (0, 0)
    ingest = json.loads(a_out.read_text())
    operator = json.loads(b_out.read_text())
    assert ingest["errors"] == []
    assert "locked" not in operator["stderr"] and "Storage unavailable" not in operator["stderr"], operator["stderr"]
    assert operator["codes"]["notify"] == [0] * N  # notify works on any task, running or finished
    assert set(operator["codes"]["cancel"]) <= {0, 1}  # 1 = "Task is already terminal." when the end won

    with Ledger.open(state_dir=state_dir, database_url=database_url) as ledger:
        for i in range(N):
            task = ledger.tasks.get(f"run-{i}")
            assert task is not None
            history = ledger.tasks.events(task.task_id)
            statuses = [e.kind for e in history if e.kind != "progress"]
            assert statuses[-1] == task.status.value  # the record agrees with its log
            progress = [e.summary for e in history if e.kind == "progress"]
            assert progress == [f"step {i}.{k}" for k in range(PROGRESS)]  # progress never lost
            assert task.notify_policy == NotifyPolicy.STATE_CHANGES  # the operator's write is never lost
            assert task.progress_summary == f"step {i}.{PROGRESS - 1}"
            if i % 2:
                assert task.status == TaskStatus.SUCCEEDED
            else:
                cancelled = operator["codes"]["cancel"][i // 2] == 0
                assert task.status == (TaskStatus.CANCELLED if cancelled else TaskStatus.SUCCEEDED), (i, statuses)
                assert task.status != TaskStatus.CANCELLED or "succeeded" not in statuses


@pytest.mark.parametrize("writers", [4])
def test_many_writers_one_task(database_url: str, state_dir: Path, writers: int) -> None:
    """Several processes hammer progress on one task: every report lands in the log, none is overwritten."""
    with Ledger.open(state_dir=state_dir, database_url=database_url) as ledger:
        task = ledger.tasks.create(runtime="cli", task="shared", owner_key="agent:main:main", run_id="hot",
                                   status="running", delivery_status="not_applicable")
    ctx = multiprocessing.get_context("fork")

    def writer(n: int) -> None:
        with Ledger.open(state_dir=state_dir, database_url=database_url) as mine:
            for k in range(15):
                mine.tasks.progress("hot", f"w{n}-{k}")

    procs = [ctx.Process(target=writer, args=(n,)) for n in range(writers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * writers
    with Ledger.open(state_dir=state_dir, database_url=database_url) as ledger:
        summaries = [e.summary for e in ledger.tasks.events(task.task_id) if e.kind == "progress"]
    assert sorted(summaries) == sorted(f"w{n}-{k}" for n in range(writers) for k in range(15))


def test_cli_waits_for_a_held_write_lock(sqlite_url: str, state_dir: Path) -> None:
    """Another process holds the SQLite write lock: the CLI queues behind it instead of failing."""
    with Ledger.open(state_dir=state_dir, database_url=sqlite_url) as ledger:
        task = ledger.tasks.create(runtime="cli", task="x", owner_key="agent:main:main", status="running")
        path = ledger.db.sqlite_path
    ctx = multiprocessing.get_context("fork")
    locked, release = ctx.Event(), ctx.Event()

    def holder() -> None:
        conn = sqlite3.connect(str(path), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE task_runs SET label = 'held' WHERE task_id = ?", (task.task_id,))
        locked.set()
        release.wait(30)
        conn.execute("COMMIT")
        conn.close()

    proc = ctx.Process(target=holder)
    proc.start()
    assert locked.wait(30)
    result: dict[str, int] = {}
    def cancel() -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            result["code"] = run(["--state-dir", str(state_dir), "tasks", "cancel", task.task_id])

    thread = threading.Thread(target=cancel)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive()  # still waiting for the lock, not failed with "database is locked"
    release.set()
    thread.join(30)
    proc.join(30)
    assert result == {"code": 0}
    with Ledger.open(state_dir=state_dir, database_url=sqlite_url) as ledger:
        after = ledger.tasks.get(task.task_id)
    assert after is not None and (after.status, after.label) == (TaskStatus.CANCELLED, "held")  # both writes kept


def test_concurrent_creates_of_one_run_scope_make_one_task(database_url: str, state_dir: Path) -> None:
    """Producers racing to record the same run (same scope) end with one task per run, never two."""
    with Ledger.open(state_dir=state_dir, database_url=database_url):
        pass  # the schema exists before the race starts
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()

    def producer(n: int) -> None:
        go.wait(30)
        with Ledger.open(state_dir=state_dir, database_url=database_url) as mine:
            for r in range(10):
                mine.tasks.create(runtime="acp", task=f"attempt {n}", owner_key="agent:main:main",
                                  child_session_key=f"agent:main:acp:{r}", run_id=f"race-{r}",
                                  delivery_status="not_applicable")

    procs = [ctx.Process(target=producer, args=(n,)) for n in range(3)]
    for p in procs:
        p.start()
    go.set()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 3
    with Ledger.open(state_dir=state_dir, database_url=database_url) as ledger:
        tasks = ledger.tasks.list(runtime="acp")
    assert sorted(t.run_id or "" for t in tasks) == sorted(f"race-{r}" for r in range(10))
