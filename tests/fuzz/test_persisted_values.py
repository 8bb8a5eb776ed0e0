"""Values written into the database by something other than flowledger (a hand edit, a newer version, a bad
restore) are reported by name on load — record, column and value — with exit 3 from the CLI; never coerced,
never a traceback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import text

from flowledger import Ledger
from flowledger.cli.main import run
from flowledger.tasks.core.errors import InvalidPersistedValue, StorageUnavailable


def _corrupt(ledger: Ledger, sql: str, **params: object) -> None:
    with ledger.db.write() as conn:
        conn.execute(text(sql), params)


def _seed(ledger: Ledger) -> str:
    return ledger.tasks.create(runtime="cli", task="hand-edited later", owner_key="agent:main:main",
                               run_id="run-edit", status="running").task_id


def _cli(ledger: Ledger, state_dir: Path, *args: str) -> int:
    url = ledger.db.engine.url.render_as_string(hide_password=False)
    return run(["--state-dir", str(state_dir), "--database-url", url, *args])


@pytest.mark.parametrize(("column", "value"), [("status", "paused"), ("runtime", "lambda"),
                                               ("notify_policy", "loud"), ("delivery_status", "maybe"),
                                               ("scope_kind", "global"), ("terminal_outcome", "meh")])
def test_bad_task_enum_is_named_on_load_and_exits_3(
    ledger: Ledger, state_dir: Path, capsys: pytest.CaptureFixture[str], column: str, value: str
) -> None:
    task_id = _seed(ledger)
    _corrupt(ledger, f"UPDATE task_runs SET {column} = :v WHERE task_id = :t", v=value, t=task_id)
    with pytest.raises(InvalidPersistedValue) as caught:
        ledger.tasks.get(task_id)
    assert caught.value.column == column and caught.value.value == value
    assert task_id in caught.value.message
    capsys.readouterr()
    assert _cli(ledger, state_dir, "tasks", "list") == 3
    out, err = capsys.readouterr()
    assert err.strip() == f"Invalid persisted task {task_id}: {column}={value!r}"
    assert "Traceback" not in out + err


def test_bad_flow_values_are_named_on_load(ledger: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    flow = ledger.flows.create_managed("agent:main:main", "ctl", "goal")
    _corrupt(ledger, "UPDATE flow_runs SET status = 'sideways' WHERE flow_id = :f", f=flow.flow_id)
    with pytest.raises(InvalidPersistedValue, match=f"flow {flow.flow_id}: status='sideways'"):
        ledger.flows.get(flow.flow_id)
    _corrupt(ledger, "UPDATE flow_runs SET status = 'running', state_json = '{not json' WHERE flow_id = :f",
             f=flow.flow_id)
    with pytest.raises(InvalidPersistedValue, match=f"flow {flow.flow_id}: state_json="):
        ledger.flows.get(flow.flow_id)


def test_unreadable_delivery_origin_is_reported_by_name(ledger: Ledger, caplog: pytest.LogCaptureFixture) -> None:
    task = ledger.tasks.create(runtime="acp", task="t", owner_key="agent:main:main", run_id="run-o",
                               child_session_key="agent:main:acp:c", status="running",
                               requester_origin={"channel": "telegram", "to": "telegram:1"})
    _corrupt(ledger, "UPDATE task_delivery_state SET requester_origin_json = '{\"channel\": ' WHERE task_id = :t",
             t=task.task_id)
    with caplog.at_level(logging.WARNING):
        loaded = ledger.tasks.get(task.task_id)
    assert loaded is not None and loaded.requester_origin is None  # the record stays usable…
    assert any(task.task_id in r.getMessage() and "requester_origin_json" in r.getMessage()
               for r in caplog.records)  # …and the damage is named, not silently dropped


def test_non_numeric_timestamp_in_sqlite_is_named(sqlite_ledger: Ledger, state_dir: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """SQLite stores whatever it is given; a text timestamp must be a named storage error, not a crash."""
    task_id = _seed(sqlite_ledger)
    _corrupt(sqlite_ledger, "UPDATE task_runs SET last_event_at = 'yesterday' WHERE task_id = :t", t=task_id)
    with pytest.raises(StorageUnavailable, match="yesterday"):
        sqlite_ledger.tasks.get(task_id)
    capsys.readouterr()
    assert _cli(sqlite_ledger, state_dir, "tasks", "show", task_id) == 3
    _, err = capsys.readouterr()
    assert "yesterday" in err and "internal error" not in err and len(err.strip().splitlines()) == 1
