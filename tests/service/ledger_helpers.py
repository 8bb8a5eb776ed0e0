"""Small helpers shared by the service tests: run at another moment, and hand-edit a stored row."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import update

from flowledger import FrozenClock, Ledger
from flowledger.tasks.core.tables import task_runs

T = TypeVar("T")


def at(clock: FrozenClock, when: datetime, fn: Callable[[], T]) -> T:
    """Run `fn` with the clock set to `when`, then put the clock back."""
    saved = clock.now()
    clock.set(when)
    try:
        return fn()
    finally:
        clock.set(saved)


def set_columns(ledger: Ledger, task_id: str, **values: Any) -> None:
    """Write columns of a stored task directly, as an older version or an operator might have."""
    with ledger.db.write() as conn:
        conn.execute(update(task_runs).where(task_runs.c.task_id == task_id).values(**values))


def wait_until_started(pid: int, deadline_s: float = 10.0) -> None:
    """Until a freshly spawned child has finished its exec (or already ended): /proc/<pid>/environ reads empty
    before that, so a marker check made too early would see no marker (seen under load in CI)."""
    import time
    from pathlib import Path

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/environ").read_bytes():
                return
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return  # gone already
        if stat[stat.rfind(")") + 2] == "Z":
            return  # ended; a zombie's environment reads empty for good
