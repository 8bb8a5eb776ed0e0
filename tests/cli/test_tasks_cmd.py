"""`flowledger tasks …` end to end through `run([...])` on both engines: output, JSON keys, exit codes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowledger import Ledger

CONTRACT_TASK_KEYS = {
    "task_id", "runtime", "task_kind", "source_id", "requester_session_key", "owner_key", "scope_kind",
    "child_session_key", "parent_flow_id", "parent_task_id", "agent_id", "requester_agent_id", "run_id", "label",
    "task", "status", "delivery_status", "notify_policy", "created_at", "started_at", "ended_at", "last_event_at",
    "cleanup_after", "error", "progress_summary", "terminal_summary", "terminal_outcome",
    "media",  # CONTRACT §7: a generation job's items
}
ISO_MS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
OWNER = "agent:main:main"


@pytest.fixture
def live(database_url: str, state_dir: Path) -> Iterator[Ledger]:
    """A ledger on the real clock, so the CLI's own reconciled view sees these tasks as fresh."""
    with Ledger.open(state_dir=state_dir, database_url=database_url) as opened:
        yield opened



def _seed(ledger: Ledger) -> dict[str, str]:
    a = ledger.tasks.create(runtime="acp", task="Summarise PR 12", owner_key=OWNER,
                            child_session_key="agent:main:acp:child", run_id="run-1", status="running",
                            started_at=ledger.clock.now(), progress_summary="reading diff")
    c = ledger.tasks.create(runtime="cron", task="nightly digest", source_id="job-1", run_id="cron:job-1:1",
                            status="succeeded", terminal_summary="sent 3 mails")
    s = ledger.tasks.create(runtime="subagent", task="broken", owner_key=OWNER,
                            child_session_key="agent:main:subagent:x", status="failed", error="boom\x1b[31m\nred")
    return {"acp": a.task_id, "cron": c.task_id, "subagent": s.task_id}


def test_list_json(live: Ledger, cli) -> None:  # type: ignore[no-untyped-def]
    ids = _seed(live)
    code, out, err = cli("tasks", "list", "--json")
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert set(doc) == {"count", "total", "runtime", "status", "owner", "flow", "since", "limit", "offset", "tasks"}
    assert (doc["count"], doc["total"], doc["runtime"], doc["status"]) == (3, 3, None, None)
    assert (doc["limit"], doc["offset"], doc["owner"], doc["flow"], doc["since"]) == (100, 0, None, None, None)
    assert [t["task_id"] for t in doc["tasks"]] == [ids["subagent"], ids["cron"], ids["acp"]]  # newest first
    for task in doc["tasks"]:
        assert set(task) - {"requester_origin"} == CONTRACT_TASK_KEYS
        for key in ("created_at", "started_at", "ended_at", "last_event_at", "cleanup_after"):
            assert task[key] is None or ISO_MS_Z.match(task[key]), (key, task[key])
    cron = doc["tasks"][1]
    assert (cron["scope_kind"], cron["requester_session_key"], cron["owner_key"]) == ("system", "", "")
    assert cron["terminal_outcome"] == "succeeded" and ISO_MS_Z.match(cron["cleanup_after"])
    assert doc["tasks"][2]["ended_at"] is None


def test_list_filters_json(live: Ledger, cli) -> None:  # type: ignore[no-untyped-def]
    ids = _seed(live)
    code, out, _ = cli("tasks", "list", "--runtime", "cron", "--json")
    doc = json.loads(out)
    assert (code, doc["count"], doc["runtime"], doc["status"]) == (0, 1, "cron", None)
    assert doc["tasks"][0]["task_id"] == ids["cron"]
    code, out, _ = cli("tasks", "--status", "failed", "--json")  # no sub-command == list
    doc = json.loads(out)
    assert (code, doc["count"], doc["status"]) == (0, 1, "failed")
    code, out, _ = cli("tasks", "list", "--status", "lost", "--json")
    assert json.loads(out) == {"count": 0, "total": 0, "runtime": None, "status": "lost", "owner": None,
                               "flow": None, "since": None, "limit": 100, "offset": 0, "tasks": []}


def test_bare_tasks_equals_list(live: Ledger, cli) -> None:  # type: ignore[no-untyped-def]
    _seed(live)
    listed = cli("tasks", "list")
    bare = cli("tasks")
    assert listed[0] == bare[0] and listed[1].splitlines()[:2] == bare[1].splitlines()[:2]  # ages move on
    def ids(text: str) -> list[str]:
        return [line.split()[0] for line in text.splitlines()[4:]]

    assert ids(listed[1]) == ids(bare[1])
    assert cli("tasks", "--json")[1] == cli("tasks", "list", "--json")[1]


def test_list_text(live: Ledger, cli) -> None:  # type: ignore[no-untyped-def]
    ids = _seed(live)
    code, out, err = cli("tasks", "list")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "Background tasks: 3"
    assert lines[1] == "Task pressure: 0 queued · 1 running · 1 issues"
    header = lines[2]
    assert header.split() == ["Task", "Kind", "Status", "Age", "Duration", "Summary"]
    body = "\n".join(lines[3:])
    assert ids["acp"][:8] in body and "reading diff" in body and "sent 3 mails" in body
    assert "boom\\nred" in body  # a failed task shows its error, escaped
    assert "\x1b" not in out


def test_list_text_empty_and_filter_lines(cli) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = cli("tasks", "list", "--runtime", "acp", "--status", "queued")
    assert code == 0
    assert out.splitlines() == [
        "Background tasks: 0",
        "Task pressure: 0 queued · 0 running · 0 issues",
        "Runtime filter: acp",
        "Status filter: queued",
        "No background tasks found. Run flowledger tasks audit to check for stale task state.",
    ]


def test_show_json_and_lookups(live: Ledger, cli) -> None:  # type: ignore[no-untyped-def]
    ids = _seed(live)
    for lookup in (ids["acp"], "run-1", "agent:main:acp:child"):
        code, out, err = cli("tasks", "show", lookup, "--json")
        assert (code, err) == (0, "")
        doc = json.loads(out)
        assert doc["task_id"] == ids["acp"]
        assert set(doc) - {"requester_origin"} == CONTRACT_TASK_KEYS
        assert ISO_MS_Z.match(doc["created_at"])


def test_show_text_escapes_control_characters(live: Ledger, cli) -> None:  # type: ignore[no-untyped-def]
    ids = _seed(live)
    code, out, _ = cli("tasks", "show", ids["subagent"])
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "Background task:"
    assert f"taskId: {ids['subagent']}" in lines
    assert "status: failed" in lines
    assert "error: boom\\nred" in lines  # newline escaped, ANSI stripped
    assert "\x1b" not in out
    created = next(line for line in lines if line.startswith("createdAt: "))
    assert ISO_MS_Z.match(created.removeprefix("createdAt: "))
    assert "endedAt: " in out


def test_show_unknown_lookup(cli) -> None:  # type: ignore[no-untyped-def]
    assert cli("tasks", "show", "nope") == (1, "", "Task not found: nope.\n")
    assert cli("tasks", "show", "nope", "--json") == (1, "", "Task not found: nope.\n")


def test_cancel(live: Ledger, cli) -> None:  # type: ignore[no-untyped-def]
    cli_task = live.tasks.create(runtime="cli", task="make", owner_key=OWNER, status="running",
                                 delivery_status="not_applicable")
    code, out, err = cli("tasks", "cancel", cli_task.task_id, "--reason", "no longer needed")
    assert (code, out, err) == (0, f"Cancelled {cli_task.task_id} (cli).\n", "")
    after = live.tasks.get(cli_task.task_id)
    assert after is not None and after.status.value == "cancelled" and after.error == "no longer needed"
    assert cli("tasks", "cancel", cli_task.task_id) == (1, "", "Task is already terminal.\n")
    assert cli("tasks", "cancel", "nope") == (1, "", "Task not found: nope.\n")
    lonely = live.tasks.create(runtime="acp", task="x", owner_key=OWNER, status="running")
    assert cli("tasks", "cancel", lonely.task_id) == (1, "", "Task has no cancellable child session.\n")


def test_notify(live: Ledger, cli) -> None:  # type: ignore[no-untyped-def]
    ids = _seed(live)
    code, out, err = cli("tasks", "notify", "run-1", "state_changes")
    assert (code, out, err) == (0, f"Updated {ids['acp']} notify policy to state_changes.\n", "")
    assert live.tasks.get(ids["acp"]).notify_policy.value == "state_changes"  # type: ignore[union-attr]
    assert cli("tasks", "notify", "nope", "silent") == (1, "", "Task not found: nope.\n")


@pytest.mark.parametrize("argv", [
    ("tasks", "list", "--status", "bogus"),
    ("tasks", "--status", "bogus"),
    ("tasks", "list", "--runtime", "lambda"),
    ("tasks", "notify", "run-1", "loud"),
    ("tasks", "show"),
    ("tasks", "list", "--bogus"),
])
def test_usage_errors_one_line_exit_2(live: Ledger, cli, argv: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    _seed(live)
    code, out, err = cli(*argv)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("flowledger: error: ")


def test_bad_policy_names_the_choices(live: Ledger, cli) -> None:  # type: ignore[no-untyped-def]
    ids = _seed(live)
    code, _, err = cli("tasks", "notify", ids["acp"], "loud")
    assert code == 2
    assert "loud" in err and "done_only" in err and "state_changes" in err and "silent" in err
    assert live.tasks.get(ids["acp"]).notify_policy.value == "done_only"  # type: ignore[union-attr]


def test_events(live: Ledger, cli) -> None:  # type: ignore[no-untyped-def]
    t = live.tasks.create(runtime="cli", task="x", owner_key=OWNER, run_id="r", delivery_status="not_applicable")
    live.tasks.start("r")
    live.tasks.progress("r", "half")
    code, out, _ = cli("tasks", "events", "r", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["task_id"] == t.task_id
    assert [(e["kind"], e["previous_status"], e["summary"]) for e in doc["events"]] == [
        ("queued", None, None), ("running", "queued", None), ("progress", "running", "half")]
    assert all(ISO_MS_Z.match(e["at"]) for e in doc["events"])
    code, out, _ = cli("tasks", "events", "r")
    assert code == 0 and len(out.splitlines()) == 3 and "half" in out
