"""SPEC §3: a sub-agent completion whose origin lacks `to`/account is completed from the requester session's
stored route before giving up on direct delivery. Real ledger on both engines, channels pointing at a real
local HTTP server (the fixtures of test_delivery.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import select
from test_delivery import OWNER, SEND, TELEGRAM, bodies, hooks_of, queued, write_config

from flowledger import FrozenClock, Ledger
from flowledger.tasks.core.errors import OperationRefused
from flowledger.tasks.core.models import DeliveryOrigin
from flowledger.tasks.core.states import DeliveryStatus, TaskStatus
from flowledger.tasks.core.tables import sessions
from flowledger.tasks.delivery.rules import fill_origin
from flowledger.tasks.sessions.events import SessionEvents

CHILD = "agent:research:subagent:1"
NO_TO = {"channel": "telegram", "thread_id": "321"}  # a bound topic, but no chat to send it to


@pytest.fixture
def dl(database_url: str, state_dir: Path, clock: FrozenClock, httpserver: HTTPServer) -> Iterator[Ledger]:
    write_config(state_dir, httpserver.url_for("").rstrip("/"))
    with Ledger.open(state_dir=state_dir, database_url=database_url, clock=clock) as opened:
        for channel in hooks_of(opened).channels.values():
            channel.sleep = lambda _s: None  # type: ignore[attr-defined]
        yield opened


def subagent(ledger: Ledger, run_id: str, **fields: Any) -> Any:
    values: dict[str, Any] = {"runtime": "subagent", "task": "Research", "owner_key": OWNER, "run_id": run_id,
                              "child_session_key": CHILD, "status": "running", "requester_origin": NO_TO}
    values.update(fields)
    return ledger.tasks.create(**values)


def session_row(ledger: Ledger, key: str) -> Any:
    with ledger.db.read() as conn:
        return conn.execute(select(sessions).where(sessions.c.session_key == key)).first()


# --- recording the route -------------------------------------------------------------------------------


def test_a_task_with_a_full_origin_records_its_requester_sessions_route(dl: Ledger) -> None:
    assert dl.sessions.route(OWNER) is None
    dl.tasks.create(runtime="cli", task="Export", owner_key=OWNER, requester_origin=TELEGRAM)
    assert dl.sessions.route(OWNER) == DeliveryOrigin("telegram", "telegram:123", None, "321")
    row = session_row(dl, OWNER)
    assert (row.kind, row.acp_json) == ("session", None)
    # The newest full origin wins; an origin without a `to` leaves the stored route alone.
    dl.tasks.create(runtime="cli", task="Import", owner_key=OWNER,
                    requester_origin={"channel": "discord", "to": "channel:9", "account_id": "bot-2"})
    dl.tasks.create(runtime="subagent", task="Research", owner_key=OWNER, requester_origin=NO_TO)
    assert dl.sessions.route(OWNER) == DeliveryOrigin("discord", "channel:9", "bot-2", None)
    # Without an account, the same target keeps its stored account; another target does not inherit it.
    dl.tasks.create(runtime="cli", task="Again", owner_key=OWNER, requester_origin={"channel": "discord",
                                                                                     "to": "channel:9"})
    assert dl.sessions.route(OWNER) == DeliveryOrigin("discord", "channel:9", "bot-2", None)
    dl.tasks.create(runtime="cli", task="Elsewhere", owner_key=OWNER, requester_origin={"channel": "discord",
                                                                                         "to": "channel:10"})
    assert dl.sessions.route(OWNER) == DeliveryOrigin("discord", "channel:10", None, None)
    # Another session's tasks never touch this one's route.
    dl.tasks.create(runtime="cli", task="Other", owner_key="agent:other:main", requester_origin=TELEGRAM)
    assert dl.sessions.route(OWNER) == DeliveryOrigin("discord", "channel:10", None, None)


def test_a_route_only_row_is_neither_pruned_nor_backing_a_vanished_child(dl: Ledger, clock: FrozenClock) -> None:
    dl.sessions.record_route(OWNER, channel="telegram", to="telegram:123")
    # A parent sub-agent whose child session row is gone; its own child asks for work with a full origin.
    parent = subagent(dl, "run-parent", requester_origin=None)
    nested = dl.tasks.create(runtime="cli", task="Nested", owner_key=OWNER, requester_session_key=CHILD,
                             requester_origin=TELEGRAM)
    assert nested.requester_session_key == CHILD
    assert session_row(dl, CHILD) is None  # no row made up for an active task's child session
    with pytest.raises(OperationRefused):
        dl.sessions.record_route(CHILD, channel="telegram", to="telegram:123")
    clock.advance(timedelta(days=8))
    dl.maintenance(apply=True)
    assert dl.tasks.require(parent.task_id).status == TaskStatus.LOST  # still judged without backing
    assert dl.sessions.route(OWNER) == DeliveryOrigin("telegram", "telegram:123")  # not pruned
    # Once no active task runs in that session, its route is stored like any other.
    dl.tasks.create(runtime="cli", task="Later", owner_key=OWNER, requester_session_key=CHILD,
                    requester_origin=TELEGRAM)
    assert dl.sessions.route(CHILD) == DeliveryOrigin("telegram", "telegram:123", None, "321")


# --- filling a sub-agent's missing `to` ----------------------------------------------------------------


def test_a_subagent_without_to_is_delivered_to_the_stored_to_in_its_own_thread(
        dl: Ledger, httpserver: HTTPServer) -> None:
    httpserver.expect_request(SEND, method="POST").respond_with_json({"ok": True})
    dl.sessions.record_route(OWNER, channel="telegram", to="telegram:777", thread_id="999")
    task = subagent(dl, "run-sub")
    assert dl.tasks.cancel(task.task_id).cancelled
    [sent] = bodies(httpserver)
    assert (sent["chat_id"], sent["message_thread_id"]) == (777, 321)  # the origin's topic, the stored chat
    assert sent["text"] == "Background task cancelled: Subagent task (run run-sub)."
    assert dl.tasks.require(task.task_id).delivery_status == DeliveryStatus.DELIVERED
    assert queued(dl) == []
    assert dl.tasks.require(task.task_id).requester_origin == DeliveryOrigin("telegram", "", None, "321")


def test_without_an_origin_thread_the_stored_thread_comes_with_the_stored_to(
        dl: Ledger, httpserver: HTTPServer) -> None:
    httpserver.expect_request(SEND, method="POST").respond_with_json({"ok": True})
    dl.sessions.record_route(OWNER, channel="telegram", to="telegram:777", thread_id="999")
    task = subagent(dl, "run-sub", requester_origin={"channel": "telegram"})
    dl.tasks.fail("run-sub", status="cancelled")
    [sent] = bodies(httpserver)
    assert (sent["chat_id"], sent["message_thread_id"]) == (777, 999)
    assert dl.tasks.require(task.task_id).delivery_status == DeliveryStatus.DELIVERED


def test_a_missing_account_is_filled_for_the_stored_target(dl: Ledger, httpserver: HTTPServer) -> None:
    httpserver.expect_request(SEND).respond_with_json({"ok": False}, status=403)  # the fallback shows the route
    dl.sessions.record_route(OWNER, channel="telegram", to="telegram:777", account_id="bot-7")
    task = subagent(dl, "run-sub", requester_origin={"channel": "telegram", "to": "telegram:777"})
    dl.tasks.cancel(task.task_id)
    assert len(httpserver.log) == 1
    assert dl.tasks.require(task.task_id).delivery_status == DeliveryStatus.FAILED
    [event] = SessionEvents(dl.db, dl.clock).list(OWNER)
    assert event.delivery_context == {"channel": "telegram", "to": "telegram:777", "account_id": "bot-7",
                                      "thread_id": None}


def test_a_stored_route_on_another_channel_is_not_used(dl: Ledger, httpserver: HTTPServer) -> None:
    dl.sessions.record_route(OWNER, channel="discord", to="channel:9")
    task = subagent(dl, "run-sub")
    dl.tasks.cancel(task.task_id)
    assert httpserver.log == []
    assert dl.tasks.require(task.task_id).delivery_status == DeliveryStatus.SESSION_QUEUED
    assert queued(dl) == [(f"task:{task.task_id}", "Background task cancelled: Subagent task (run run-sub).")]


def test_without_a_stored_route_the_session_queue_is_used(dl: Ledger, httpserver: HTTPServer) -> None:
    task = subagent(dl, "run-sub")
    dl.tasks.cancel(task.task_id)
    assert httpserver.log == []
    assert dl.tasks.require(task.task_id).delivery_status == DeliveryStatus.SESSION_QUEUED
    assert [c for c, _ in queued(dl)] == [f"task:{task.task_id}"]


def test_only_the_requester_sessions_own_route_is_read(dl: Ledger, httpserver: HTTPServer) -> None:
    dl.sessions.record_route(OWNER, channel="telegram", to="telegram:777")
    requester = "agent:main:telegram:direct:5"
    task = subagent(dl, "run-sub", requester_session_key=requester)
    dl.tasks.cancel(task.task_id)
    assert httpserver.log == []  # the owner's route is not the requester's
    assert dl.tasks.require(task.task_id).delivery_status == DeliveryStatus.SESSION_QUEUED
    # And a requester's route is not used when the owner told is another session.
    dl.sessions.record_route(requester, channel="telegram", to="telegram:555")
    other = subagent(dl, "run-sub2", requester_session_key=requester, child_session_key="agent:research:subagent:2")
    dl.tasks.cancel(other.task_id)
    assert httpserver.log == []
    assert dl.tasks.require(other.task_id).delivery_status == DeliveryStatus.SESSION_QUEUED


@pytest.mark.parametrize("runtime", ["cli", "acp"])
def test_other_runtimes_are_not_filled(dl: Ledger, httpserver: HTTPServer, runtime: str) -> None:
    dl.sessions.record_route(OWNER, channel="telegram", to="telegram:777")
    task = dl.tasks.create(runtime=runtime, task="Inspect", owner_key=OWNER, run_id="run-1", status="running",
                           child_session_key=f"agent:main:{runtime}:child", requester_origin=NO_TO)
    dl.tasks.fail("run-1", error="boom")
    assert httpserver.log == []
    assert dl.tasks.require(task.task_id).delivery_status == DeliveryStatus.SESSION_QUEUED


# --- the fill rule itself (pure) ------------------------------------------------------------------------


def test_fill_origin_keeps_fields_paired_with_their_target() -> None:
    route = DeliveryOrigin("telegram", "telegram:777", "bot-7", "999")
    assert fill_origin(DeliveryOrigin("telegram", ""), None) == DeliveryOrigin("telegram", "")
    assert fill_origin(DeliveryOrigin("Telegram", ""), route) == DeliveryOrigin("Telegram", "telegram:777", "bot-7",
                                                                                "999")
    # Another target keeps its own (absent) account: the stored account belongs to the stored chat.
    assert fill_origin(DeliveryOrigin("telegram", "telegram:1"), route) == DeliveryOrigin("telegram", "telegram:1")
    assert fill_origin(DeliveryOrigin("telegram", "", "bot-1", "5"), route) == \
        DeliveryOrigin("telegram", "telegram:777", "bot-1", "5")
    assert fill_origin(DeliveryOrigin("slack", ""), route) == DeliveryOrigin("slack", "")
