"""Read-only commands never create a state dir or a database; a broken config.toml only warns them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowledger import Ledger
from flowledger.cli.main import run

READ_ONLY = [
    ["tasks"], ["tasks", "list", "--json"], ["tasks", "show", "abcdef12"], ["status", "--json"], ["status"],
    ["tasks", "audit", "--json"], ["tasks", "flow", "list"], ["tasks", "flow", "show", "x"],
    ["tasks", "board", "--session", "agent:main:main"],
]


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("args", READ_ONLY, ids=" ".join)
def test_read_only_commands_on_a_missing_state_dir_create_nothing(tmp_path: Path, args: list[str],
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "typo"
    code, out, err = _run(capsys, "--state-dir", str(state), *args)
    assert not state.exists()
    assert err.splitlines()[0] == f"No ledger at {state / 'tasks' / 'runs.sqlite'} yet."
    assert code in (0, 1) and "Traceback" not in err  # an empty result, or a lookup miss
    if "--json" in args:
        json.loads(out)


def test_missing_postgres_schema_is_an_empty_ledger(pg_url: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(pg_url)
    with engine.begin() as conn:  # a database nobody has used yet
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    code, out, err = _run(capsys, "--state-dir", str(tmp_path / "s"), "--database-url", pg_url, "tasks", "--json")
    assert code == 0 and json.loads(out)["total"] == 0 and err.startswith("No ledger at postgresql")
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT to_regclass('task_runs')")).scalar() is None
    engine.dispose()


def test_broken_config_warns_readers_and_stops_deliverers(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    Ledger.open(state_dir=state).close()
    (state / "config.toml").write_text("[channels\n")
    code, out, err = _run(capsys, "--state-dir", str(state), "tasks", "list")
    assert code == 0 and "Background tasks: 0" in out and err.startswith("Warning: Invalid config")
    code, out, err = _run(capsys, "--state-dir", str(state), "status", "--json")
    assert code == 0 and json.loads(out)["tasks"]["total"] == 0
    code, _, err = _run(capsys, "--state-dir", str(state), "run", "--", "true")
    assert code == 2 and "Invalid config" in err
