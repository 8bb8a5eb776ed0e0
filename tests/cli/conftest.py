"""The CLI as a user runs it: `flowledger --state-dir … --database-url … <args>`, on each engine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from flowledger import Ledger
from flowledger.cli.main import run

Invoke = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(database_url: str, state_dir: Path, capsys: pytest.CaptureFixture[str]) -> Invoke:
    """Run one CLI invocation against the test's database; returns (exit code, stdout, stderr). The ledger
    exists already (read-only commands never create one: tests/cli/test_missing_ledger.py)."""
    Ledger.open(state_dir=state_dir, database_url=database_url).close()

    def invoke(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = run(["--state-dir", str(state_dir), "--database-url", database_url, *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return invoke
