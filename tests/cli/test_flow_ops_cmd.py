"""Operating flows from the command line (CONTRACT §7): `flow show` per step and why, the run output, `flow logs`,
`flow wait`, `flow retry`, bad flow-file keys, `run --notify/--channel/--to`, and commands that never wait on a
webhook — on SQLite and PostgreSQL, with real subprocesses."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from flowledger import Ledger
from flowledger.flows.controller import define_flow
from flowledger.flows.definitions import parse_flow
from flowledger.tasks.delivery import outbox

Invoke = Callable[..., tuple[int, str, str]]  # the `cli` fixture (tests/cli/conftest.py)
OWNER = "agent:main:main"


def flow_file(tmp_path: Path, marker: Path, extra: str = "") -> Path:
    """Three steps; the middle one fails (stderr `boom`) until `marker` exists."""
    path = tmp_path / "flow.toml"
    path.write_text(f"""
[flow]
goal = "Demo"
{extra}
[[step]]
id = "build"
label = "Build it"
run = ["sh", "-c", "echo built"]
[[step]]
id = "unit-tests"
needs = ["build"]
retries = 1
shell = true
run = "echo testing; test -e {marker} || {{ echo boom >&2; exit 1; }}"
[[step]]
id = "deploy"
needs = ["unit-tests"]
run = ["true"]
""")
    return path


def only_flow_id(cli: Invoke) -> str:
    code, out, _ = cli("tasks", "flow", "list", "--json")
    assert code == 0
    flow_id: str = json.loads(out)["flows"][0]["flow_id"]
    return flow_id


def test_a_failed_run_counts_steps_names_attempts_and_is_retried(cli: Invoke, tmp_path: Path) -> None:
    marker = tmp_path / "fixed"
    code, out, err = cli("tasks", "flow", "run", str(flow_file(tmp_path, marker)))
    assert code == 1
    assert "Steps: 1 succeeded · 1 failed · 1 cancelled · 3 steps (3 attempts)" in out
    assert "Reason: Step unit-tests failed after 2 attempts: exit code 1: boom" in out
    assert "↻ unit-tests attempt 1/2 failed: exit 1 — boom" in err
    flow_id = only_flow_id(cli)

    code, out, _ = cli("tasks", "flow", "show", flow_id)
    assert code == 0
    steps = out[out.index("Steps (3):"):].splitlines()
    assert steps[1].split()[:2] == ["build", "succeeded"] and "(Build it)" in steps[1]
    assert steps[2].split()[:3] == ["unit-tests", "failed", "×2"] and steps[2].endswith("exit code 1: boom")
    assert steps[3].split()[:3] == ["deploy", "cancelled", "×0"]
    assert steps[4] == "Why: Step unit-tests failed after 2 attempts: exit code 1: boom"
    assert flow_id not in "\n".join(steps)  # the flow id is not repeated per line

    code, out, err = cli("tasks", "flow", "logs", flow_id)
    assert code == 0
    assert out.splitlines() == ["[build] built", "[unit-tests] testing", "[unit-tests] testing"]
    assert err.splitlines() == ["[unit-tests] boom", "[unit-tests] boom"]

    assert cli("tasks", "flow", "logs", flow_id, "--follow")[1:] == (out, err)  # an ended flow: at once
    code, _, err = cli("tasks", "flow", "wait", flow_id)
    assert code == 1 and "Why: Step unit-tests failed" in err

    marker.write_text("ok")
    code, out, _ = cli("tasks", "flow", "retry", flow_id)
    assert code == 0, out
    assert out.splitlines()[0] == f"Retrying {flow_id}: 2 steps to run, 1 kept."
    code, out, _ = cli("tasks", "flow", "show", flow_id, "--json")
    document = json.loads(out)
    assert document["status"] == "succeeded"
    assert [(s["step_id"], s["status"], s["attempts"]) for s in document["steps"]] == [
        ("build", "succeeded", 1), ("unit-tests", "succeeded", 3), ("deploy", "succeeded", 1)]
    assert cli("tasks", "flow", "wait", flow_id)[0] == 0

    code, _, err = cli("tasks", "flow", "retry", flow_id)
    assert code == 1 and err.strip() == f"Flow {flow_id} is succeeded; only a failed, cancelled or lost flow can " \
                                        "be retried."


def test_retry_detach_queues_the_flow_for_a_gateway(ledger: Ledger, cli: Invoke) -> None:
    flow = define_flow(ledger, parse_flow('[flow]\ngoal = "G"\n[[step]]\nid = "a"\nrun = ["true"]\n'))
    ledger.flows.cancel(flow.flow_id)
    code, out, _ = cli("tasks", "flow", "retry", flow.flow_id, "--detach", "--json")
    assert code == 0
    document = json.loads(out)
    assert document["status"] == "queued" and document["cancel_requested_at"] is None
    assert [s["status"] for s in document["steps"]] == ["pending"]
    assert document["state"]["history"][0]["previous_status"] == "cancelled"


def test_wait_times_out_with_124_and_unknown_flows_exit_1(ledger: Ledger, cli: Invoke) -> None:
    flow = define_flow(ledger, parse_flow('[flow]\ngoal = "G"\n[[step]]\nid = "a"\nrun = ["true"]\n'))
    code, _, err = cli("tasks", "flow", "wait", flow.flow_id, "--timeout", "100ms")
    assert code == 124 and err.strip() == f"Timed out waiting for flow {flow.flow_id}: it is queued."
    code, _, err = cli("tasks", "flow", "wait", "no-such-flow")
    assert code == 1 and err.strip() == "Flow not found: no-such-flow."
    assert cli("tasks", "flow", "retry", "no-such-flow")[0] == 1
    assert cli("tasks", "flow", "retry", flow.flow_id)[0] == 1  # queued: not ended


@pytest.mark.parametrize(("extra", "message"), [
    ('retry_delay = "soon"', "Step 'a': Invalid retry_delay 'soon'"),
    ("retry_delay = 5", "Step 'a': retry_delay must be a duration string"),
    ("retry_backoff = 0.5", "Step 'a': retry_backoff must be between 1 and 100, got 0.5"),
    ('retry_backoff = "2"', "Step 'a': retry_backoff must be a number"),
])
def test_bad_retry_keys_are_one_line_exit_2(cli: Invoke, tmp_path: Path, extra: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'[flow]\ngoal = "G"\n[[step]]\nid = "a"\nrun = ["true"]\n{extra}\n')
    code, _, err = cli("tasks", "flow", "validate", str(path))
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err


@pytest.mark.parametrize(("origin", "message"), [
    ('origin = "ops"', "[flow] origin must be a table"),
    ('origin = { channel = "webhook" }', "Missing key 'to' in [flow] origin"),
    ('origin = { channel = "webhook", to = "x", via = "y" }', "Unknown key 'via' in [flow] origin"),
])
def test_bad_origin_is_one_line_exit_2(cli: Invoke, tmp_path: Path, origin: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'[flow]\ngoal = "G"\n{origin}\n[[step]]\nid = "a"\nrun = ["true"]\n')
    code, _, err = cli("tasks", "flow", "run", str(path))
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err


def test_a_silent_session_run_is_not_left_pending(cli: Invoke) -> None:
    code, out, _ = cli("run", "--json", "--session", OWNER, "--", "true")
    task = json.loads(out)
    assert code == 0 and (task["notify_policy"], task["delivery_status"]) == ("silent", "not_applicable")
    code, out, _ = cli("run", "--json", "--session", OWNER, "--notify", "done_only", "--", "true")
    task = json.loads(out)
    assert task["notify_policy"] == "done_only"  # its delivery is due: a sender settles it, never this command
    code, _, err = cli("run", "--notify", "done_only", "--", "true")
    assert code == 2 and "need --session" in err
    code, _, err = cli("run", "--session", OWNER, "--channel", "webhook", "--", "true")
    assert code == 2 and "--channel and --to go together" in err


def test_cancel_never_waits_on_a_hanging_webhook(cli: Invoke, ledger: Ledger, state_dir: Path) -> None:
    release = threading.Event()

    def hang(_request: Request) -> Response:
        release.wait(20)
        return Response("late", status=503)

    # A server of its own, stopped at the end: the detached sender it keeps busy then fails fast and exits.
    httpserver = HTTPServer()
    httpserver.start()
    httpserver.expect_request("/hook").respond_with_handler(hang)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (state_dir / "config.toml").write_text(f'[channels.webhook]\nurl = "{httpserver.url_for("/hook")}"\n'
                                           "timeout = 20\n")
    task = ledger.tasks.create(runtime="cli", task="Inspect", owner_key=OWNER, run_id="run-hang", status="running",
                               requester_origin={"channel": "webhook", "to": "ops"})
    try:
        began = time.monotonic()
        code, out, err = cli("tasks", "cancel", task.task_id)
        elapsed = time.monotonic() - began
        assert code == 0 and out.startswith(f"Cancelled {task.task_id}")
        assert elapsed < 5, elapsed  # the webhook's timeout is 20 s, with retries up to 60 s
        assert "WARNING" not in err and err == ""
        notice = outbox.get(ledger.db, f"task:{task.task_id}:cancelled")
        assert notice is not None and notice.kind == outbox.TASK_TERMINAL
    finally:
        release.set()
        httpserver.clear()
        httpserver.stop()


def test_a_foreground_flow_announces_its_end_through_a_short_lived_sender(
        cli: Invoke, ledger: Ledger, state_dir: Path, tmp_path: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook", method="POST").respond_with_json({"ok": True})
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (state_dir / "config.toml").write_text(f'[channels.webhook]\nurl = "{httpserver.url_for("/hook")}"\n')
    marker = tmp_path / "fixed"
    marker.write_text("ok")
    path = flow_file(tmp_path, marker)
    code, _, _ = cli("tasks", "flow", "run", str(path), "--channel", "webhook", "--to", "ops")
    assert code == 0
    flow_id = only_flow_id(cli)
    deadline = time.monotonic() + 60  # the sender is another process (a Python start-up): wait for it, bounded
    while not httpserver.log and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(httpserver.log) == 1, [r.get_data() for r, _ in httpserver.log]
    [(request, _)] = httpserver.log
    body = json.loads(request.get_data())
    assert body["text"] == f'Flow "Demo" succeeded. (flow {flow_id})' and body["to"] == "ops"
    [notice] = outbox.for_subject(ledger.db, flow_id)
    assert notice.status in (outbox.DELIVERED, outbox.PENDING)  # settled right after the POST returns
