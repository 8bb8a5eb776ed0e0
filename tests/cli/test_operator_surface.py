"""The operator's surface of CONTRACT §7 through `run([...])` on both engines: typeable ids, parent options,
filters with `total`, tables that fit, and usage errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

import pytest

from flowledger import Ledger
from flowledger.tasks.core.clock import iso_z

Invoke = Callable[..., tuple[int, str, str]]
OWNER = "agent:main:main"


def _burst(ledger: Ledger, n: int, **fields: object) -> list[str]:
    """Tasks made within the same instant: time-ordered ids that share their first 13 characters."""
    return [ledger.tasks.create(runtime="cli", task=f"job {i}", owner_key=OWNER, **fields).task_id  # type: ignore[arg-type]
            for i in range(n)]


def test_tables_fit_80_columns_with_distinct_typeable_ids(ledger: Ledger, cli: Invoke,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _burst(ledger, 5)
    ledger.tasks.create(runtime="cli", task="x" * 300, owner_key=OWNER, status="failed",
                        error="[bold]boom[/bold] \x1b[31mred")
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = cli("tasks", "list")
    lines = out.splitlines()
    assert code == 0 and all(len(line) <= 80 for line in lines), lines
    rows = lines[4:]
    shown = [row.split()[0] for row in rows]
    assert len(shown) == 6 == len(set(shown))  # never the same cut for every row
    assert "[bold]boom[/bold] red" in out and "\x1b" not in out  # markup literal, escapes stripped
    for short in shown[1:]:  # each id as shown types back
        assert json.loads(cli("tasks", "show", short, "--json")[1])["task_id"].startswith(short)
    monkeypatch.setenv("COLUMNS", "40")
    code, out, err = cli("tasks", "list")
    assert code == 0 and err == "" and "Background tasks: 6" in out
    monkeypatch.setenv("NO_COLOR", "1")
    assert cli("tasks", "flow", "list")[0] == 0


def test_prefix_lookup_through_the_cli(ledger: Ledger, cli: Invoke) -> None:
    for suffix in ("a1", "a2", "b1"):
        ledger.tasks.create(runtime="cli", task=suffix, owner_key=OWNER, task_id=f"0badcafe-{suffix}")
    code, out, err = cli("tasks", "show", "0badcafe-b", "--json")
    assert (code, json.loads(out)["task_id"], err) == (0, "0badcafe-b1", "")
    assert cli("tasks", "show", "0badcafe-a") == (
        1, "", "Ambiguous id prefix '0badcafe-a': matches 2 tasks.\n  0badcafe-a1\n  0badcafe-a2\n")
    assert cli("tasks", "show", "0badc") == (1, "", "Task not found: 0badc.\n")
    flow = ledger.flows.create_managed(OWNER, "ctl", "Ship it", flow_id="f00dbabe-1")
    code, out, _ = cli("tasks", "flow", "show", "f00dbabe", "--json")
    assert (code, json.loads(out)["flow_id"]) == (0, flow.flow_id)
    assert cli("tasks", "list", "--flow", "f00dbabe", "--json")[0] == 0
    assert cli("tasks", "list", "--flow", "nope")[2] == "Flow not found: nope.\n"


def test_parent_options_hold_for_sub_commands(ledger: Ledger, cli: Invoke) -> None:
    task = ledger.tasks.create(runtime="cron", task="nightly", status="running")
    ledger.tasks.create(runtime="cli", task="other", owner_key=OWNER)
    code, out, _ = cli("tasks", "--json", "show", task.task_id)
    assert (code, json.loads(out)["task_id"]) == (0, task.task_id)
    code, out, _ = cli("tasks", "--runtime", "cron", "--json", "list")
    doc = json.loads(out)
    assert (doc["runtime"], doc["count"], doc["total"]) == ("cron", 1, 1)
    assert "findings" in json.loads(cli("tasks", "--json", "audit")[1])
    assert json.loads(cli("tasks", "--json", "flow", "list")[1])["flows"] == []
    assert json.loads(cli("tasks", "--status", "running", "--json", "flow", "list")[1])["status"] == "running"
    assert cli("tasks", "--status", "timed_out", "flow", "list")[0] == 2  # not a flow status


def test_filters_total_and_pressure_over_every_match(ledger: Ledger, cli: Invoke, clock) -> None:  # type: ignore[no-untyped-def]
    flow = ledger.flows.create_managed(OWNER, "ctl", "Flow")
    old = ledger.tasks.create(runtime="cli", task="old", owner_key="agent:other:main", status="queued")
    clock.advance(timedelta(hours=3))
    _burst(ledger, 4, status="queued")
    ledger.tasks.create(runtime="cli", task="in flow", owner_key=OWNER, parent_flow_id=flow.flow_id,
                        status="failed", error="exit code 2")
    doc = json.loads(cli("tasks", "list", "--limit", "2", "--json")[1])
    assert (doc["count"], doc["total"], doc["limit"], doc["offset"]) == (2, 6, 2, 0)
    doc = json.loads(cli("tasks", "list", "--limit", "2", "--offset", "5", "--json")[1])
    assert (doc["count"], doc["total"], doc["tasks"][0]["task_id"]) == (1, 6, old.task_id)
    doc = json.loads(cli("tasks", "list", "--owner", "agent:other:main", "--json")[1])
    assert (doc["count"], doc["total"], doc["owner"]) == (1, 1, "agent:other:main")
    doc = json.loads(cli("tasks", "list", "--flow", flow.flow_id, "--json")[1])
    assert (doc["total"], doc["flow"], doc["tasks"][0]["task"]) == (1, flow.flow_id, "in flow")
    since = clock.now() - timedelta(hours=1)
    doc = json.loads(cli("tasks", "list", "--since", since.isoformat(), "--json")[1])
    assert (doc["total"], doc["since"]) == (5, iso_z(since))
    doc = json.loads(cli("tasks", "list", "--status", "queued", "--limit", "1", "--json")[1])
    assert (doc["count"], doc["total"]) == (1, 5)
    code, out, _ = cli("tasks", "list", "--limit", "1")
    assert code == 0 and "Background tasks: 6" in out and "Task pressure: 5 queued · 0 running · 1 issues" in out
    assert "Showing 1–1 of 6" in out and "exit code 2" in out  # a failed task's Summary is its error
    out = cli("tasks", "list", "--status", "queued", "--limit", "1")[1]
    assert "Background tasks: 5" in out and "Task pressure: 5 queued · 0 running · 0 issues" in out


def test_listing_usage_errors(cli: Invoke) -> None:
    for args in (["--since", "2026-12-03T10:00:00"], ["--since", "yesterday"], ["--limit", "-1"],
                 ["--offset", "-3"]):
        code, out, err = cli("tasks", "list", *args)
        assert (code, out) == (2, "") and len(err.strip().splitlines()) == 1, (args, err)
    assert cli("tasks", "flow", "list", "--since", "2026-12-03")[0] == 2
    code, out, err = cli("tasks", "audit", "--code", "nope")
    assert (code, out) == (2, "") and err.startswith("Unknown --code 'nope'")
    assert cli("tasks", "audit", "--severity", "bogus")[0] == 2
    assert cli("tasks", "audit", "--code", "lost")[0] == 0


def test_version(cli: Invoke) -> None:
    code, out, _ = cli("--version")
    assert code == 0 and out.startswith("flowledger ") and len(out.split()) == 2
