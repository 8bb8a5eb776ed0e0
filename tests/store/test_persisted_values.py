"""Rows written by hand: a bad enum is named on load, never coerced; unreadable origin JSON is absent."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import insert, update

from flowledger import Ledger
from flowledger.cli.main import run
from flowledger.tasks.core.errors import InvalidPersistedValue, StorageUnavailable
from flowledger.tasks.core.tables import task_delivery_state, task_runs

OWNER = "agent:main:main"


def _poke(ledger: Ledger, task_id: str, **values: object) -> None:
    with ledger.db.write() as conn:
        conn.execute(update(task_runs).where(task_runs.c.task_id == task_id).values(**values))


@pytest.mark.parametrize(("column", "value"), [
    ("status", "blocked"),
    ("runtime", "lambda"),
    ("scope_kind", "global"),
    ("delivery_status", "sent"),
    ("notify_policy", "loud"),
    ("terminal_outcome", "maybe"),
])
def test_bad_enum_is_named_on_load(ledger: Ledger, column: str, value: str) -> None:
    t = ledger.tasks.create(runtime="acp", task="x", owner_key=OWNER, run_id="r")
    _poke(ledger, t.task_id, **{column: value})
    with pytest.raises(InvalidPersistedValue) as info:
        ledger.tasks.get(t.task_id)
    assert info.value.column == column
    assert info.value.value == value
    assert str(info.value) == f"Invalid persisted task {t.task_id}: {column}={value!r}"
    assert isinstance(info.value, StorageUnavailable)
    with pytest.raises(InvalidPersistedValue):
        ledger.tasks.list()
    with pytest.raises(InvalidPersistedValue):
        ledger.tasks.start("r")  # a write path reads first and refuses too; nothing is rewritten
    with ledger.db.read() as conn:
        stored = conn.execute(task_runs.select().where(task_runs.c.task_id == t.task_id)).mappings().one()
    assert stored[column] == value


def test_case_variant_is_not_coerced(ledger: Ledger) -> None:
    t = ledger.tasks.create(runtime="acp", task="x", owner_key=OWNER)
    _poke(ledger, t.task_id, status="RUNNING")
    with pytest.raises(InvalidPersistedValue, match="status='RUNNING'"):
        ledger.tasks.get(t.task_id)


@pytest.mark.parametrize("payload", ["{not json", "[1, 2]", '"text"', "null"])
def test_unreadable_origin_json_is_absent(ledger: Ledger, payload: str) -> None:
    t = ledger.tasks.create(runtime="acp", task="x", owner_key=OWNER)
    with ledger.db.write() as conn:
        conn.execute(insert(task_delivery_state).values(task_id=t.task_id, requester_origin_json=payload))
    loaded = ledger.tasks.get(t.task_id)
    assert loaded is not None and loaded.requester_origin is None


def test_empty_requester_on_session_row_falls_back_to_owner(ledger: Ledger) -> None:
    t = ledger.tasks.create(runtime="acp", task="x", owner_key=OWNER)
    _poke(ledger, t.task_id, requester_session_key="")
    loaded = ledger.tasks.get(t.task_id)
    assert loaded is not None and loaded.requester_session_key == OWNER


def test_cli_reports_bad_row_in_one_line(sqlite_ledger: Ledger, state_dir: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    t = sqlite_ledger.tasks.create(runtime="acp", task="x", owner_key=OWNER)
    _poke(sqlite_ledger, t.task_id, notify_policy="loud")
    code = run(["--state-dir", str(state_dir), "tasks", "show", t.task_id])
    captured = capsys.readouterr()
    assert code == 3
    assert captured.out == ""
    assert captured.err == f"Invalid persisted task {t.task_id}: notify_policy='loud'\n"
