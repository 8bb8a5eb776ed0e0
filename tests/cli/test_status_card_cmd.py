"""`flowledger status --session KEY [--json]` end to end on both engines (CONTRACT §7). The CLI reads the wall
clock, so records are written by a ledger whose frozen clock sits at a fixed offset before it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from flowledger import FrozenClock, Ledger
from flowledger.tasks.core.clock import SystemClock

SESSION = "agent:main:main"
Invoke = Callable[..., tuple[int, str, str]]  # the `cli` fixture of tests/cli/conftest.py


@pytest.fixture
def seeded(database_url: str, state_dir: Path) -> Iterator[Ledger]:
    with Ledger.open(state_dir=state_dir, database_url=database_url,
                     clock=FrozenClock(SystemClock().now() - timedelta(minutes=1))) as ledger:
        yield ledger


def test_card_for_active_work(cli: Invoke, seeded: Ledger) -> None:
    seeded.tasks.create(runtime="cli", task="build \x1b[31mred\x1b[0m", owner_key=SESSION, run_id="r1",
                        status="running", started_at=seeded.clock.now())
    code, out, err = cli("status", "--session", SESSION)
    assert (code, err) == (0, "")
    assert out == "📌 Tasks: 1 active · 1 total · CLI · build red\n"
    code, out, _ = cli("status", "--session", SESSION, "--json")
    document = json.loads(out)
    assert set(document) == {"session_key", "card", "focus", "active", "recent_failures"}
    assert (document["active"], document["recent_failures"]) == (1, 0)
    assert document["focus"]["run_id"] == "r1"


def test_card_for_only_recent_failures(cli: Invoke, seeded: Ledger) -> None:
    seeded.tasks.create(runtime="cli", task="deploy", owner_key=SESSION, run_id="r2", status="running",
                        started_at=seeded.clock.now())
    seeded.tasks.fail("r2", error="exit 1")
    code, out, _ = cli("status", "--session", SESSION)
    assert (code, out) == (0, "📌 Tasks: 1 recent failure · CLI · deploy · exit 1\n")
    document = json.loads(cli("status", "--session", SESSION, "--json")[1])
    assert (document["active"], document["recent_failures"]) == (0, 1)


def test_card_for_nothing(cli: Invoke) -> None:
    code, out, _ = cli("status", "--session", SESSION)
    assert (code, out) == (0, "📌 Tasks: 0 active · 0 total · agent-local\n")
    document = json.loads(cli("status", "--session", SESSION, "--json")[1])
    assert document == {"session_key": SESSION, "card": "📌 Tasks: 0 active · 0 total · agent-local",
                        "focus": None, "active": 0, "recent_failures": 0}


def test_blank_session_is_a_usage_error(cli: Invoke) -> None:
    code, out, err = cli("status", "--session", " ")
    assert (code, out) == (2, "")
    assert err.strip().splitlines() == [err.strip()] and "session" in err


def test_a_stdout_that_cannot_encode_the_pin_gets_a_star(database_url: str, state_dir: Path) -> None:
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    done = subprocess.run([sys.executable, "-m", "flowledger.cli.main", "--state-dir", str(state_dir),
                           "--database-url", database_url, "status", "--session", SESSION],
                          capture_output=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"* Tasks: 0 active ? 0 total ? agent-local\n"
