"""`tasks list --limit`: a ledger may hold millions of records, so listing is capped by default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowledger import Ledger
from flowledger.cli.main import run
from flowledger.cli.tasks_cmd import DEFAULT_LIST_LIMIT


def _cli(capsys: pytest.CaptureFixture[str], state_dir: Path, url: str, *args: str) -> tuple[int, str, str]:
    code = run(["--state-dir", str(state_dir), "--database-url", url, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_default_limit_keeps_newest_and_says_so(ledger: Ledger, database_url: str, state_dir: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    ledger.tasks.create_many([{"runtime": "cli", "task": f"job {i}", "owner_key": "agent:main:main"}
                              for i in range(DEFAULT_LIST_LIMIT + 5)])
    code, out, err = _cli(capsys, state_dir, database_url, "tasks", "list", "--json")
    doc = json.loads(out)
    assert code == 0
    assert doc["count"] == DEFAULT_LIST_LIMIT == len(doc["tasks"])
    assert (doc["total"], doc["limit"], doc["offset"], err) == (DEFAULT_LIST_LIMIT + 5, DEFAULT_LIST_LIMIT, 0, "")
    code, out, err = _cli(capsys, state_dir, database_url, "tasks", "list")
    assert f"Background tasks: {DEFAULT_LIST_LIMIT + 5}" in out
    assert f"Showing 1–{DEFAULT_LIST_LIMIT} of {DEFAULT_LIST_LIMIT + 5}; --limit N (0 = all)" in out

    code, out, err = _cli(capsys, state_dir, database_url, "tasks", "--limit", "0", "--json")
    assert json.loads(out)["count"] == DEFAULT_LIST_LIMIT + 5
    assert err == ""


def test_limit_exactly_at_the_count_is_not_truncated(ledger: Ledger, database_url: str, state_dir: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(3):
        ledger.tasks.create(runtime="cli", task=f"job {i}", owner_key="agent:main:main")
    code, out, err = _cli(capsys, state_dir, database_url, "tasks", "list", "--limit", "3")
    assert (code, err) == (0, "")
    assert "Background tasks: 3" in out
    assert "Showing" not in out
    code, out, _ = _cli(capsys, state_dir, database_url, "tasks", "list", "--limit", "2")
    assert "Background tasks: 3" in out  # every match, not the page
    assert "Showing 1–2 of 3" in out
    assert "job 2" in out and "job 0" not in out
    code, out, _ = _cli(capsys, state_dir, database_url, "tasks", "list", "--limit", "2", "--offset", "2")
    assert "Showing 3–3 of 3" in out and "job 0" in out and "job 2" not in out


def test_negative_limit_is_a_usage_error(ledger: Ledger, database_url: str, state_dir: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, state_dir, database_url, "tasks", "list", "--limit", "-1")
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
