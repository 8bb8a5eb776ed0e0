"""Terminal and state-change delivery end to end: a real ledger (SQLite file and PostgreSQL), channels
configured in config.toml pointing at a real local HTTP server, the session queue and heartbeat wakes.

REFERENCE §11 scenarios 5–11, 14–16 and 26. Adaptation: every acp task created through the service gets a
one-task mirrored flow (flows/mirror.py), so ACP idempotency keys are `flow-terminal:…`; scenario 16's
`task-terminal:…` key is checked on a `cli` task, which has no such flow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from flowledger import FrozenClock, Ledger
from flowledger.tasks.core import store
from flowledger.tasks.core.states import DeliveryStatus, TaskStatus
from flowledger.tasks.core.tables import task_delivery_state
from flowledger.tasks.delivery.dispatch import DeliveryHooks, delivery_hooks
from flowledger.tasks.sessions.events import SessionEvents

TOKEN = "123:TESTTOKEN"
SECRET = "whsec-test"
OWNER = "agent:main:main"
TELEGRAM = {"channel": "telegram", "to": "telegram:123", "thread_id": "321"}
SEND = f"/bot{TOKEN}/sendMessage"


def write_config(state_dir: Path, base: str, extra: str = "") -> None:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (state_dir / "config.toml").write_text(f"""
[channels.telegram]
token = "{TOKEN}"
api_base = "{base}"
[channels.discord]
webhook_url = "{base}/discord"
[channels.webhook]
url = "{base}/hook"
secret = "{SECRET}"
{extra}""")


def hooks_of(ledger: Ledger) -> DeliveryHooks:
    found = delivery_hooks(ledger.tasks)
    assert found is not None
    return found


@pytest.fixture
def base(httpserver: HTTPServer) -> str:
    return httpserver.url_for("").rstrip("/")


@pytest.fixture
def dl(database_url: str, state_dir: Path, clock: FrozenClock, base: str) -> Iterator[Ledger]:
    """A ledger whose config.toml points every channel at the local HTTP server; retries do not wait."""
    write_config(state_dir, base)
    with Ledger.open(state_dir=state_dir, database_url=database_url, clock=clock) as opened:
        for channel in hooks_of(opened).channels.values():
            channel.sleep = lambda _s: None  # type: ignore[attr-defined]
        yield opened


def queued(ledger: Ledger, key: str = OWNER) -> list[tuple[str, str]]:
    return [(e.context_key, e.text) for e in SessionEvents(ledger.db, ledger.clock).list(key)]


def wakes(ledger: Ledger) -> list[tuple[str, str]]:
    return [(w.session_key, w.reason) for w in SessionEvents(ledger.db, ledger.clock).pending_wakes()]


def bodies(httpserver: HTTPServer) -> list[dict[str, Any]]:
    return [json.loads(request.get_data()) for request, _ in httpserver.log]


def delivery_row(ledger: Ledger, task_id: str) -> Any:
    with ledger.db.read() as conn:
        return conn.execute(task_delivery_state.select().where(task_delivery_state.c.task_id == task_id)).first()


def acp(ledger: Ledger, run_id: str, **fields: Any) -> Any:
    values: dict[str, Any] = {"runtime": "acp", "task": "Inspect the repo", "owner_key": OWNER, "run_id": run_id,
                              "status": "running"}
    values.update(fields)
    return ledger.tasks.create(**values)


# --- scenarios 5–11 ----------------------------------------------------------------------------------


def test_direct_delivery_scenario_5(dl: Ledger, httpserver: HTTPServer) -> None:
    httpserver.expect_request(SEND, method="POST").respond_with_json({"ok": True})
    task = acp(dl, "run-1", requester_origin=TELEGRAM)
    dl.tasks.ingest("run-1", "lifecycle", {"phase": "end"})
    [sent] = bodies(httpserver)
    assert sent["chat_id"] == 123 and sent["message_thread_id"] == 321
    assert sent["text"].startswith("Background task done: ACP background task")
    done = dl.tasks.require(task.task_id)
    assert (done.status, done.delivery_status) == (TaskStatus.SUCCEEDED, DeliveryStatus.DELIVERED)
    assert queued(dl) == [] and wakes(dl) == []
    row = delivery_row(dl, task.task_id)
    assert row.attempts == 1 and row.last_error is None
    assert row.claimed_by == f"done:flow-terminal:{done.parent_flow_id}:{task.task_id}:succeeded:succeeded"


def test_direct_failure_falls_back_to_the_session_scenario_6(dl: Ledger, httpserver: HTTPServer) -> None:
    httpserver.expect_request(SEND).respond_with_json({"ok": False, "description": "forbidden"}, status=403)
    task = acp(dl, "run-err", requester_origin=TELEGRAM)
    dl.tasks.ingest("run-err", "lifecycle", {"phase": "error", "error": "Permission denied by ACP runtime"})
    failed = dl.tasks.require(task.task_id)
    assert (failed.status, failed.delivery_status) == (TaskStatus.FAILED, DeliveryStatus.FAILED)
    assert failed.error == "Permission denied by ACP runtime"
    [(context, text)] = queued(dl)
    assert context == f"task:{task.task_id}"
    assert text.startswith("Background task failed: ACP background task (run run-err). Permission denied")
    assert wakes(dl) == [(OWNER, "background-task")]
    assert len(httpserver.log) == 1  # a 403 is not retried
    row = delivery_row(dl, task.task_id)
    assert row.attempts == 1 and row.last_error == "HTTP 403"
    # delivery_failed is visible: the audit reports it because the policy is not silent.
    assert "delivery_failed" in [f.code for f in dl.audit().findings]


def test_transient_failures_are_retried_before_failing(dl: Ledger, httpserver: HTTPServer) -> None:
    httpserver.expect_request(SEND).respond_with_data("down", status=503)
    task = acp(dl, "run-503", requester_origin=TELEGRAM)
    dl.tasks.complete("run-503")
    assert dl.tasks.require(task.task_id).delivery_status == DeliveryStatus.FAILED
    assert len(httpserver.log) == 4
    row = delivery_row(dl, task.task_id)
    assert row.attempts == 4 and row.last_error == "HTTP 503 after 4 attempt(s)"
    assert TOKEN not in (row.last_error or "")
    assert [c for c, _ in queued(dl)] == [f"task:{task.task_id}"]


def test_no_origin_is_session_queued_with_a_wake_scenario_7(dl: Ledger, httpserver: HTTPServer) -> None:
    task = acp(dl, "run-quiet")
    dl.tasks.complete("run-quiet", ended_at=dl.clock.now())
    done = dl.tasks.require(task.task_id)
    assert (done.status, done.delivery_status) == (TaskStatus.SUCCEEDED, DeliveryStatus.SESSION_QUEUED)
    assert queued(dl) == [(f"task:{task.task_id}", "Background task done: ACP background task (run run-quie).")]
    assert wakes(dl) == [(OWNER, "background-task")]
    assert httpserver.log == []


BLOCKED_SUMMARY = "Writable session or apply_patch authorization required."


def blocked_task(ledger: Ledger, **fields: Any) -> Any:
    now = ledger.clock.now()
    return ledger.tasks.create(runtime="acp", task="Patch it", owner_key=OWNER, run_id="run-blocked",
                               status="succeeded", terminal_outcome="blocked", terminal_summary=BLOCKED_SUMMARY,
                               started_at=now - timedelta(seconds=5), ended_at=now, **fields)


def test_blocked_outcome_direct_scenario_8(dl: Ledger, httpserver: HTTPServer) -> None:
    httpserver.expect_request(SEND).respond_with_json({"ok": True})
    task = blocked_task(dl, requester_origin=TELEGRAM)
    [sent] = bodies(httpserver)
    assert sent["text"] == f"Background task blocked: ACP background task (run run-bloc). {BLOCKED_SUMMARY}"
    assert queued(dl) == [(f"task:{task.task_id}:blocked-followup",
                           f"Task needs follow-up: ACP background task (run run-bloc). {BLOCKED_SUMMARY}")]
    assert wakes(dl) == [(OWNER, "background-task-blocked")]
    assert dl.tasks.require(task.task_id).delivery_status == DeliveryStatus.DELIVERED


def test_blocked_outcome_without_origin_scenario_9(dl: Ledger, httpserver: HTTPServer) -> None:
    task = blocked_task(dl)
    assert dl.tasks.require(task.task_id).delivery_status == DeliveryStatus.SESSION_QUEUED
    assert queued(dl) == [
        (f"task:{task.task_id}", f"Background task blocked: ACP background task (run run-bloc). {BLOCKED_SUMMARY}"),
        (f"task:{task.task_id}:blocked-followup",
         f"Task needs follow-up: ACP background task (run run-bloc). {BLOCKED_SUMMARY}"),
    ]
    assert wakes(dl) == [(OWNER, "background-task-blocked")]
    assert httpserver.log == []


def test_blocked_outcome_with_a_failing_origin_scenario_9(dl: Ledger, httpserver: HTTPServer) -> None:
    httpserver.expect_request(SEND).respond_with_data("nope", status=400)
    task = blocked_task(dl, requester_origin=TELEGRAM)
    assert dl.tasks.require(task.task_id).delivery_status == DeliveryStatus.FAILED
    assert [c for c, _ in queued(dl)] == [f"task:{task.task_id}", f"task:{task.task_id}:blocked-followup"]
    assert wakes(dl) == [(OWNER, "background-task-blocked")]


def test_ordinary_success_with_a_summary_scenario_10(dl: Ledger, httpserver: HTTPServer) -> None:
    httpserver.expect_request(SEND).respond_with_json({"ok": True})
    acp(dl, "run-succeeded", requester_origin=TELEGRAM)
    dl.tasks.complete("run-succeeded", summary="Created /tmp/file.txt and verified contents.")
    assert [b["text"] for b in bodies(httpserver)] == [
        "Background task done: ACP background task (run run-succ). Created /tmp/file.txt and verified contents."]
    assert queued(dl) == [] and wakes(dl) == []


def test_progress_is_never_leaked_into_the_terminal_message_scenario_11(dl: Ledger, httpserver: HTTPServer) -> None:
    httpserver.expect_request(SEND).respond_with_json({"ok": True})
    acp(dl, "run-detail", requester_origin=TELEGRAM)
    dl.tasks.progress("run-detail", "Reading 40 files, half way there")
    assert httpserver.log == []  # done_only: progress is not announced
    dl.tasks.complete("run-detail")
    assert [b["text"] for b in bodies(httpserver)] == ["Background task done: ACP background task (run run-deta)."]


# --- scenarios 14–16: one message per run, per owner, per task -----------------------------------------


def test_acp_collapse_and_duplicate_suppression_scenario_14(dl: Ledger, httpserver: HTTPServer) -> None:
    # Linked to one managed flow, so every create names the same run scope (an unlinked acp task would get its
    # own one-task flow, which today keeps a second create from collapsing into it: see the report).
    flow = dl.flows.create_managed(OWNER, "tests/controller", "Review PR 12")
    scope = {"parent_flow_id": flow.flow_id}  # no child session: a child would route it to parent review
    first = acp(dl, "run-x", requester_origin=TELEGRAM, label="Old", **scope)
    same = acp(dl, "run-x", task="Different text", label="New", prefer_metadata=True, **scope)
    assert same.task_id == first.task_id and (same.label, same.task) == ("New", "Different text")
    kept = acp(dl, "run-x", task="Third text", label="Newer", **scope)
    assert kept.task_id == first.task_id and kept.task == "Different text"
    # A second record of the same run scope (written by an older producer, bypassing the collapse).
    twin = same.replace(task_id="twin-task", created_at=first.created_at + timedelta(seconds=1), label=None)
    dl.db.transact(lambda conn: store.insert_task(conn, twin))
    httpserver.expect_request(SEND).respond_with_json({"ok": True})
    changed = dl.tasks.complete("run-x")
    assert {t.task_id for t in changed} == {first.task_id, "twin-task"}
    assert len(httpserver.log) == 1
    assert dl.tasks.require(first.task_id).delivery_status == DeliveryStatus.DELIVERED
    assert dl.tasks.require("twin-task").delivery_status == DeliveryStatus.NOT_APPLICABLE


def test_no_cross_owner_suppression_scenario_15(dl: Ledger) -> None:
    one = acp(dl, "run-shared", owner_key="agent:alpha:main")
    two = acp(dl, "run-shared", owner_key="agent:beta:main")
    assert one.task_id != two.task_id
    dl.tasks.complete("run-shared", session_key="agent:alpha:main")
    dl.tasks.complete("run-shared", session_key="agent:beta:main")
    for task, owner in ((one, "agent:alpha:main"), (two, "agent:beta:main")):
        assert dl.tasks.require(task.task_id).delivery_status == DeliveryStatus.SESSION_QUEUED
        assert [c for c, _ in queued(dl, owner)] == [f"task:{task.task_id}"]


def _terminal_without_delivery(ledger: Ledger, **fields: Any) -> Any:
    """Create a terminal, still-pending task with the delivery hooks detached, as if another process had."""
    hooks = hooks_of(ledger)
    ledger.tasks.hooks.members.remove(hooks)
    try:
        return ledger.tasks.create(**fields)
    finally:
        ledger.tasks.hooks.members.append(hooks)


def test_racing_notifiers_send_once_scenario_16(dl: Ledger, httpserver: HTTPServer) -> None:
    def slow_ok(request: Request) -> Response:
        time.sleep(0.2)  # keep the first send in flight while the second notifier arrives
        return Response("", status=204)

    httpserver.expect_request("/hook").respond_with_handler(slow_ok)
    now = dl.clock.now()
    task = _terminal_without_delivery(dl, runtime="cli", task="Nightly export", owner_key=OWNER, run_id="run-race",
                                      status="succeeded", terminal_outcome="blocked", started_at=now, ended_at=now,
                                      requester_origin={"channel": "webhook", "to": "ops"})
    assert task.delivery_status == DeliveryStatus.PENDING
    hooks = hooks_of(dl)
    barrier = threading.Barrier(2)
    results: list[Any] = []

    def notify() -> None:
        barrier.wait()
        results.append(hooks.deliver_terminal(task.task_id))

    threads = [threading.Thread(target=notify) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(map(str, results)) == ["None", "delivered"]
    [(request, _)] = httpserver.log
    assert request.headers["Idempotency-Key"] == f"task-terminal:{task.task_id}:succeeded:blocked"
    assert dl.tasks.require(task.task_id).delivery_status == DeliveryStatus.DELIVERED
    # A late third notifier finds the settled marker and sends nothing.
    assert hooks.deliver_terminal(task.task_id) is None and len(httpserver.log) == 1


WORKER = """
import os, sys, time
from pathlib import Path
from flowledger import Ledger
state_dir, url, run_id, me, other = sys.argv[1:6]
with Ledger.open(state_dir=state_dir, database_url=url) as ledger:
    Path(me).touch()
    deadline = time.monotonic() + 30
    while not Path(other).exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    ledger.tasks.complete(run_id, summary="Exported 12 tables.")
"""


def test_two_processes_completing_one_task_send_exactly_one_request(
    database_url: str, state_dir: Path, base: str, httpserver: HTTPServer, tmp_path: Path
) -> None:
    def slow_ok(request: Request) -> Response:
        time.sleep(0.2)
        return Response("", status=204)

    httpserver.expect_request("/hook").respond_with_handler(slow_ok)
    write_config(state_dir, base)
    with Ledger.open(state_dir=state_dir, database_url=database_url) as ledger:
        task = ledger.tasks.create(runtime="cli", task="Nightly export", owner_key=OWNER, run_id="run-two",
                                   status="running", requester_origin={"channel": "webhook", "to": "ops"})
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    ready = [tmp_path / "a.ready", tmp_path / "b.ready"]
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(state_dir), database_url, "run-two",
                               str(ready[i]), str(ready[1 - i])], env=env, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    for proc in procs:
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr
    assert len(httpserver.log) == 1
    request, _ = httpserver.log[0]
    assert request.headers["Idempotency-Key"] == f"task-terminal:{task.task_id}:succeeded:succeeded"
    assert json.loads(request.get_data())["text"] == "Background task done: Nightly export (run run-two). " \
                                                     "Exported 12 tables."
    with Ledger.open(state_dir=state_dir, database_url=database_url) as ledger:
        assert ledger.tasks.require(task.task_id).delivery_status == DeliveryStatus.DELIVERED


# --- scenario 26 and notify policies ---------------------------------------------------------------------


def test_state_change_notify_scenario_26(dl: Ledger, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/discord").respond_with_data("", status=204)
    task = acp(dl, "run-sc", status="queued", requester_origin={"channel": "discord", "to": "channel:42"})
    dl.tasks.start("run-sc")
    assert httpserver.log == []  # done_only says nothing on start
    dl.clock.advance(timedelta(seconds=1))
    dl.tasks.set_notify_policy(task.task_id, "state_changes")
    dl.clock.advance(timedelta(seconds=1))
    [changed] = dl.tasks.progress("run-sc", "No output for 60s. It may be waiting for input.")
    assert bodies(httpserver) == [
        {"content": "Background task update: ACP background task. No output for 60s. It may be waiting for input."}]
    [*_, event] = dl.tasks.events(task.task_id)
    assert not hooks_of(dl).deliver_state_change(changed, event)  # a repeat call does not re-send
    assert len(httpserver.log) == 1
    row = delivery_row(dl, task.task_id)
    assert row.last_notified_event_at == event.at
    assert dl.tasks.require(task.task_id).delivery_status == DeliveryStatus.PENDING


def test_state_changes_without_origin_are_queued(dl: Ledger, httpserver: HTTPServer) -> None:
    task = acp(dl, "run-q", status="queued", notify_policy="state_changes")
    dl.tasks.start("run-q")
    dl.clock.advance(timedelta(seconds=1))
    dl.tasks.progress("run-q", "Half way.")
    texts = [t for _, t in queued(dl)]
    assert texts == ["Background task started: ACP background task.",
                     "Background task update: ACP background task. Half way."]
    assert wakes(dl) == [(OWNER, "background-task"), (OWNER, "background-task")]
    dl.clock.advance(timedelta(seconds=1))
    dl.tasks.complete("run-q")
    assert dl.tasks.require(task.task_id).delivery_status == DeliveryStatus.SESSION_QUEUED
    assert len(queued(dl)) == 3 and httpserver.log == []


def test_silencing_a_running_task_takes_effect_at_once(dl: Ledger, httpserver: HTTPServer) -> None:
    httpserver.expect_request(SEND).respond_with_json({"ok": True})
    task = acp(dl, "run-silent", requester_origin=TELEGRAM)
    dl.tasks.set_notify_policy("run-silent", "silent")
    dl.tasks.complete("run-silent")
    after = dl.tasks.require(task.task_id)
    assert after.delivery_status == DeliveryStatus.PENDING and after.notify_policy.value == "silent"
    assert httpserver.log == [] and queued(dl) == [] and wakes(dl) == []


# --- routing ---------------------------------------------------------------------------------------------


def test_group_sessions_route_through_the_requester_session(dl: Ledger, httpserver: HTTPServer) -> None:
    group = "agent:main:telegram:group:-100"
    task = acp(dl, "run-group", owner_key=group, requester_origin=TELEGRAM)
    dl.tasks.complete("run-group")
    assert dl.tasks.require(task.task_id).delivery_status == DeliveryStatus.SESSION_QUEUED
    assert [c for c, _ in queued(dl, group)] == [f"task:{task.task_id}"]
    assert httpserver.log == []


def test_parent_review_stays_with_the_parent(dl: Ledger, httpserver: HTTPServer) -> None:
    task = acp(dl, "run-review", child_session_key="agent:main:acp:child", requester_origin=TELEGRAM)
    dl.tasks.complete("run-review", summary="Patched 3 files.")
    assert httpserver.log == []
    assert queued(dl) == [(f"task:{task.task_id}",
                           "Background task ready for review: ACP background task (run run-revi). Patched 3 files. "
                           "Next: parent will review/verify before calling it done.")]
    # It could have gone direct, so it stays pending for the parent to deliver; a repeat does not re-queue.
    assert dl.tasks.require(task.task_id).delivery_status == DeliveryStatus.PENDING
    assert hooks_of(dl).deliver_terminal(task.task_id) is None
    assert wakes(dl) == [(OWNER, "background-task")]


def test_parent_review_may_go_direct_to_a_discord_thread(dl: Ledger, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/discord", query_string="thread_id=9").respond_with_data("", status=204)
    task = acp(dl, "run-thread", child_session_key="agent:main:acp:child",
               requester_origin={"channel": "discord", "to": "channel:42", "thread_id": "9"})
    dl.tasks.complete("run-thread")
    assert bodies(httpserver) == [{"content": "Background task done: ACP background task (run run-thre)."}]
    assert dl.tasks.require(task.task_id).delivery_status == DeliveryStatus.DELIVERED
    assert queued(dl) == []


def test_an_unconfigured_channel_falls_back_to_the_session(dl: Ledger) -> None:
    task = acp(dl, "run-slack", requester_origin={"channel": "slack", "to": "#ops"})
    dl.tasks.complete("run-slack")
    assert dl.tasks.require(task.task_id).delivery_status == DeliveryStatus.FAILED
    assert delivery_row(dl, task.task_id).last_error == "channel 'slack' is not configured"
    assert [c for c, _ in queued(dl)] == [f"task:{task.task_id}"]


def test_system_tasks_have_no_owner_to_tell(dl: Ledger) -> None:
    task = dl.tasks.create(runtime="cron", task="nightly", scope_kind="system", run_id="cron:j:1",
                           status="running", delivery_status="pending", notify_policy="done_only")
    dl.tasks.complete("cron:j:1")
    assert dl.tasks.require(task.task_id).delivery_status == DeliveryStatus.NOT_APPLICABLE


def test_a_flow_owner_supplies_the_origin_and_the_flow_key(dl: Ledger, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook").respond_with_data("", status=204)
    flow = dl.flows.create_managed(OWNER, "tests/controller", "Release",
                                   requester_origin={"channel": "webhook", "to": "release-room"})
    task = dl.tasks.create(runtime="cli", task="Build", owner_key=OWNER, run_id="run-flow", status="running",
                           parent_flow_id=flow.flow_id)
    dl.tasks.fail("run-flow", error="make: *** [build] Error 2")
    [(request, _)] = httpserver.log
    raw = request.get_data()
    assert json.loads(raw) == {"task_id": task.task_id, "status": "failed",
                               "text": "Background task failed: Build (run run-flow). make: *** [build] Error 2",
                               "to": "release-room", "thread_id": None,
                               "idempotency_key": f"flow-terminal:{flow.flow_id}:{task.task_id}:failed:default"}
    import hashlib
    import hmac
    assert request.headers["X-Flowledger-Signature"] == \
        "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()


def test_cancel_and_maintenance_deliver_too(dl: Ledger, clock: FrozenClock) -> None:
    cancelled = dl.tasks.create(runtime="cli", task="Cancel me", owner_key=OWNER, status="running")
    dl.tasks.cancel(cancelled.task_id)
    assert dl.tasks.require(cancelled.task_id).delivery_status == DeliveryStatus.SESSION_QUEUED
    lost = dl.tasks.create(runtime="cli", task="Orphan", owner_key=OWNER, run_id="run-orphan", status="running")
    clock.advance(timedelta(minutes=5))
    dl.maintenance(apply=True)
    after = dl.tasks.require(lost.task_id)
    assert after.status == TaskStatus.LOST and after.delivery_status == DeliveryStatus.SESSION_QUEUED
    texts = dict(queued(dl))
    assert texts[f"task:{cancelled.task_id}"] == "Background task cancelled: Cancel me."
    assert texts[f"task:{lost.task_id}"].startswith("Background task lost: Orphan (run run-orph).")


def test_the_heartbeat_command_fires_at_once(database_url: str, state_dir: Path, clock: FrozenClock, base: str,
                                             tmp_path: Path) -> None:
    marker = tmp_path / "woke.txt"
    script = f"import os; open({str(marker)!r}, 'a').write(os.environ['FLOWLEDGER_SESSION_KEY'] + '\\n')"
    write_config(state_dir, base, f"[heartbeat]\ncommand = [{json.dumps(sys.executable)}, \"-c\", "
                                  f"{json.dumps(script)}]\n")
    with Ledger.open(state_dir=state_dir, database_url=database_url, clock=clock) as ledger:
        acp(ledger, "run-wake")
        ledger.tasks.complete("run-wake")
        assert marker.read_text() == f"{OWNER}\n"
        assert wakes(ledger) == []  # fired, so no longer pending


def test_deliver_pending_catches_up_and_takes_over_a_stale_claim_at_5_minutes(dl: Ledger, clock: FrozenClock) -> None:
    now = clock.now()
    orphan = _terminal_without_delivery(dl, runtime="cli", task="Crashed writer", owner_key=OWNER,
                                        status="succeeded", started_at=now, ended_at=now)
    stuck = _terminal_without_delivery(dl, runtime="cli", task="Crashed sender", owner_key=OWNER,
                                       status="failed", started_at=now, ended_at=now)
    dl.db.transact(lambda conn: conn.execute(task_delivery_state.insert().values(
        task_id=stuck.task_id, claimed_by="dead-host:1:abcd", claimed_at=now)))
    hooks = hooks_of(dl)
    assert hooks.deliver_pending() == 1  # the orphan; the fresh claim is respected
    assert dl.tasks.require(orphan.task_id).delivery_status == DeliveryStatus.SESSION_QUEUED
    clock.advance(timedelta(minutes=5) - timedelta(milliseconds=1))
    assert hooks.deliver_pending() == 0
    clock.advance(timedelta(milliseconds=1))
    assert hooks.deliver_pending() == 1
    assert dl.tasks.require(stuck.task_id).delivery_status == DeliveryStatus.SESSION_QUEUED
    assert hooks.deliver_pending() == 0
    assert [c for c, _ in queued(dl)] == [f"task:{orphan.task_id}", f"task:{stuck.task_id}"]


def test_subagent_completions_are_left_to_the_subagent_registry_unless_cancelled(dl: Ledger) -> None:
    done = dl.tasks.create(runtime="subagent", task="Research", owner_key=OWNER, run_id="run-sub",
                           child_session_key="agent:research:subagent:1", status="running")
    dl.tasks.complete("run-sub")
    assert dl.tasks.require(done.task_id).delivery_status == DeliveryStatus.PENDING
    stopped = dl.tasks.create(runtime="subagent", task="Research more", owner_key=OWNER, run_id="run-sub2",
                              child_session_key="agent:research:subagent:2", status="running")
    assert dl.tasks.cancel(stopped.task_id).cancelled
    assert dl.tasks.require(stopped.task_id).delivery_status == DeliveryStatus.SESSION_QUEUED
    assert queued(dl) == [(f"task:{stopped.task_id}", "Background task cancelled: Subagent task (run run-sub2).")]


def test_a_failed_state_change_send_is_released_not_queued(dl: Ledger, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/discord").respond_with_data("down", status=500)
    task = acp(dl, "run-flaky", status="queued", notify_policy="state_changes",
               requester_origin={"channel": "discord", "to": "channel:42"})
    dl.tasks.start("run-flaky")
    assert len(httpserver.log) == 4  # retried, then given up
    assert delivery_row(dl, task.task_id).last_notified_event_at is None
    assert queued(dl) == []


def test_the_heartbeat_webhook_is_posted_at_once(database_url: str, state_dir: Path, clock: FrozenClock,
                                                 base: str, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/wake", method="POST").respond_with_data("", status=204)
    write_config(state_dir, base, f'[heartbeat]\nwebhook = "{base}/wake"\n')
    with Ledger.open(state_dir=state_dir, database_url=database_url, clock=clock) as ledger:
        blocked_task(ledger)
        assert bodies(httpserver) == [{"session_key": OWNER, "reason": "background-task-blocked"}]
        assert wakes(ledger) == []


# --- issue 12 item 7: a success overridden by a later failure is corrected ----------------------------------


@pytest.mark.parametrize(("policy", "status"), [("done_only", "failed"), ("done_only", "timed_out"),
                                                ("silent", "failed")])
def test_a_success_overridden_by_a_failure_sends_one_correction(dl: Ledger, httpserver: HTTPServer, policy: str,
                                                                status: str) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    task = dl.tasks.create(runtime="cli", task="Nightly export", owner_key=OWNER, run_id="run-c", status="running",
                           notify_policy=policy, requester_origin={"channel": "webhook", "to": "ops"})
    dl.tasks.complete("run-c", summary="exported")
    dl.tasks.fail("run-c", error="checksum mismatch", status=status)
    dl.tasks.fail("run-c", error="checksum mismatch", status=status)  # a repeated report corrects nothing more
    sent = bodies(httpserver)
    if policy == "silent":
        assert sent == []
        return
    assert [b["status"] for b in sent] == ["succeeded", status]
    assert "checksum mismatch" in sent[1]["text"] or status == "timed_out"
    keys = [request.headers["Idempotency-Key"] for request, _ in httpserver.log]
    assert keys[0] != keys[1]
    assert dl.tasks.require(task.task_id).delivery_status == DeliveryStatus.DELIVERED
