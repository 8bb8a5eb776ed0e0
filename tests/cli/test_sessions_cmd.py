"""`flowledger sessions events <key> [--drain] [--json]` on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowledger import FrozenClock, Ledger
from flowledger.cli.main import run
from flowledger.tasks.sessions.events import SessionEvents

OWNER = "agent:main:main"


@pytest.fixture
def seeded(database_url: str, state_dir: Path, clock: FrozenClock) -> list[str]:
    """Two events for OWNER (one via a real session-queued delivery), one for another session."""
    with Ledger.open(state_dir=state_dir, database_url=database_url, clock=clock) as ledger:
        task = ledger.tasks.create(runtime="cli", task="Nightly export", owner_key=OWNER, status="running",
                                   run_id="run-cli")
        ledger.tasks.complete("run-cli", summary="Exported 12 tables.")
        queue = SessionEvents(ledger.db, ledger.clock)
        queue.enqueue(OWNER, "manual:1", "Line one\nline two \x1b[31mred\x1b[0m")
        queue.enqueue("agent:other:main", "manual:2", "Not yours")
    return ["--state-dir", str(state_dir), "--database-url", database_url, task.task_id]


def test_json_lists_the_queue_oldest_first(seeded: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    *opts, task_id = seeded
    assert run([*opts, "sessions", "events", OWNER, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document == {"session_key": OWNER, "events": [
        {"context_key": f"task:{task_id}", "text": "Background task done: Nightly export (run run-cli). "
                                                   "Exported 12 tables.", "created_at": "2026-03-30T01:00:00.000Z"},
        {"context_key": "manual:1", "text": "Line one\nline two \x1b[31mred\x1b[0m",
         "created_at": "2026-03-30T01:00:00.000Z"},
    ]}
    # Listing does not consume.
    assert run([*opts, "sessions", "events", OWNER, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["events"]) == 2


def test_text_mode_is_terminal_safe(seeded: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    *opts, task_id = seeded
    assert run([*opts, "sessions", "events", OWNER]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"2026-03-30T01:00:00.000Z  task:{task_id}  Background task done: Nightly export (run run-cli). "
        "Exported 12 tables.",
        "2026-03-30T01:00:00.000Z  manual:1  Line one\\nline two red",
    ]


def test_drain_removes_what_it_shows(seeded: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    *opts, _ = seeded
    assert run([*opts, "sessions", "events", OWNER, "--drain", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["events"]) == 2
    assert run([*opts, "sessions", "events", OWNER, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"session_key": OWNER, "events": []}
    assert run([*opts, "sessions", "events", "agent:other:main", "--drain"]) == 0
    captured = capsys.readouterr()
    assert "manual:2  Not yours" in captured.out
    assert "Drained 1 event(s) from agent:other:main." in captured.err


def test_empty_queue_and_bad_input(seeded: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    *opts, _ = seeded
    assert run([*opts, "sessions", "events", "agent:nobody:main"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "No queued system events for agent:nobody:main." in captured.err
    assert run([*opts, "sessions", "events", "  "]) == 2
    assert capsys.readouterr().err.strip() == "Session key is required."
    assert run([*opts, "sessions", "events"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_bad_config_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "config.toml").write_text('[channels.telegram]\ntoken = "SECRET-TOKEN"\nurl = "x"\n')
    assert run(["--state-dir", str(state), "sessions", "events", OWNER]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"Invalid config {state / 'config.toml'}: channels.telegram.url is not a known key."]


def test_sessions_ack_records_received_media(database_url: str, state_dir: Path, clock: FrozenClock,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    with Ledger.open(state_dir=state_dir, database_url=database_url, clock=clock) as ledger:
        job = ledger.tasks.start_generation("image_generate", OWNER, "a fox").task

    def ack(*argv: str) -> tuple[int, str, str]:
        code = run(["--state-dir", str(state_dir), "--database-url", database_url, "sessions", "ack", *argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    assert ack(OWNER, job.task_id, "a.png", "b.png") == (0, f"Acknowledged 2 item(s) of {job.task_id} for {OWNER}.\n",
                                                       "")
    code, out, _ = ack(OWNER, job.task_id, "a.png", "c.png", "--json")
    assert code == 0 and json.loads(out) == {"session_key": OWNER, "task": job.task_id, "acknowledged": 1}
    code, out, err = ack(OWNER, "no-such-task", "a.png")
    assert (code, out) == (1, "") and err.count("\n") == 1
    code, _, err = ack("agent:main:other", job.task_id, "a.png")
    assert code == 1 and "was not started by session" in err
    code, _, err = ack("main", job.task_id, "a.png")
    assert code == 2 and err.count("\n") == 1
    code, _, _ = ack(OWNER, job.task_id)
    assert code == 2
