"""Closing a ledger never waits on other processes (issue 12, item 16) and says nothing when it cannot truncate
the WAL (item 13): a TRUNCATE checkpoint is tried with a zero busy timeout, else a PASSIVE one is left."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

import pytest

from flowledger import Ledger

# Far below the 30 s busy timeout a waiting checkpoint would sit out; far above a close's real cost.
CLOSE_BUDGET_S = 3.0


def _open_with_a_task(state_dir: Path) -> Ledger:
    ledger = Ledger.open(state_dir=state_dir)
    ledger.tasks.create(runtime="cli", task="t", owner_key="agent:main:main", run_id="r1", status="running")
    return ledger


def _db(state_dir: Path) -> Path:
    return state_dir / "tasks" / "runs.sqlite"


@pytest.mark.parametrize("holder", ["reader", "writer"])
def test_close_does_not_wait_for_another_process(state_dir: Path, caplog: pytest.LogCaptureFixture,
                                                 holder: str) -> None:
    ledger = _open_with_a_task(state_dir)
    other = sqlite3.connect(_db(state_dir), isolation_level=None)
    try:
        if holder == "reader":
            other.execute("BEGIN")
            other.execute("SELECT count(*) FROM task_runs").fetchall()
        else:
            other.execute("BEGIN IMMEDIATE")
        caplog.set_level(logging.DEBUG)
        started = time.monotonic()
        ledger.close()
        elapsed = time.monotonic() - started
    finally:
        other.rollback()
        other.close()
    assert elapsed < CLOSE_BUDGET_S, f"close waited {elapsed:.1f} s on a {holder}"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_close_truncates_the_wal_when_nobody_else_holds_it(state_dir: Path) -> None:
    ledger = _open_with_a_task(state_dir)
    wal = Path(f"{_db(state_dir)}-wal")
    assert wal.exists() and wal.stat().st_size > 0
    ledger.close()
    assert not wal.exists() or wal.stat().st_size == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file modes")
def test_close_on_a_read_only_database_prints_no_warning(state_dir: Path, caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    _open_with_a_task(state_dir).close()
    db = _db(state_dir)
    db.chmod(0o400)
    try:
        caplog.set_level(logging.DEBUG)
        with Ledger.open(state_dir=state_dir) as ledger:
            assert ledger.tasks.get("r1") is not None
    except Exception:
        pass  # opening may refuse a read-only file (one error line elsewhere); closing must add nothing
    finally:
        db.chmod(0o600)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "checkpoint" in r.getMessage()], \
        caplog.text
