"""Generation jobs (CONTRACT §7, SPEC §1) on a real ledger, SQLite file and PostgreSQL: the concurrency guard, the
wake back to the requester session, and the direct fallback that carries each unacknowledged item at most once,
sent to a real local HTTP server through the configured webhook channel."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from flowledger import FrozenClock, Ledger
from flowledger.tasks.core.errors import InvalidInput, OperationRefused, TaskNotFound
from flowledger.tasks.core.states import DeliveryStatus, NotifyPolicy, Runtime, TaskStatus
from flowledger.tasks.delivery.dispatch import delivery_hooks
from flowledger.tasks.runs.liveness import upsert_session
from flowledger.tasks.sessions.events import SessionEvents

SESSION = "agent:main:telegram:direct:42"
ORIGIN = {"channel": "webhook", "to": "chat-42"}


@pytest.fixture
def gl(database_url: str, state_dir: Path, clock: FrozenClock, httpserver: HTTPServer) -> Iterator[Ledger]:
    """A ledger whose webhook channel posts to the local HTTP server, retrying without waiting."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (state_dir / "config.toml").write_text(f'[channels.webhook]\nurl = "{httpserver.url_for("/hook")}"\n')
    with Ledger.open(state_dir=state_dir, database_url=database_url, clock=clock) as opened:
        hooks = delivery_hooks(opened.tasks)
        assert hooks is not None
        for channel in hooks.channels.values():
            channel.sleep = lambda _s: None  # type: ignore[attr-defined]
        yield opened


def sent_texts(httpserver: HTTPServer) -> list[str]:
    return [json.loads(request.get_data())["text"] for request, _ in httpserver.log]


def events(ledger: Ledger, key: str = SESSION) -> list[str]:
    return [e.context_key for e in SessionEvents(ledger.db, ledger.clock).list(key)]


def wakes(ledger: Ledger, key: str = SESSION) -> int:
    return len(SessionEvents(ledger.db, ledger.clock).pending_wakes(key))


def end_session(ledger: Ledger, key: str = SESSION) -> None:
    assert ledger.sessions.end(key)


# --- starting: the concurrency guard ---------------------------------------------------------------------


def test_a_generation_job_is_a_silent_session_scoped_cli_task(gl: Ledger) -> None:
    start = gl.tasks.start_generation("image_generate", SESSION, "a red fox", requester_origin=ORIGIN)
    task = start.task
    assert start.started
    assert (task.runtime, task.task_kind, task.status) == (Runtime.CLI, "image_generate", TaskStatus.RUNNING)
    assert (task.notify_policy, task.delivery_status) == (NotifyPolicy.SILENT, DeliveryStatus.NOT_APPLICABLE)
    assert task.owner_key == task.requester_session_key == SESSION
    assert task.run_id == f"image_generate:{task.task_id}"
    assert task.to_json()["media"] is None


def test_same_image_prompt_returns_the_active_task_another_prompt_starts_its_own(gl: Ledger) -> None:
    first = gl.tasks.start_generation("image_generate", SESSION, "a red fox")
    again = gl.tasks.start_generation("image_generate", SESSION, "  a red fox ")
    other = gl.tasks.start_generation("image_generate", SESSION, "a blue whale")
    elsewhere = gl.tasks.start_generation("image_generate", "agent:main:main", "a red fox")
    assert (again.started, again.task.task_id) == (False, first.task.task_id)
    assert other.started and other.task.task_id != first.task.task_id
    assert elsewhere.started and elsewhere.task.task_id != first.task.task_id
    assert first.task.run_id is not None
    gl.tasks.complete(first.task.run_id, media=["/tmp/fox.png"])
    after = gl.tasks.start_generation("image_generate", SESSION, "a red fox")
    assert after.started and after.task.task_id != first.task.task_id


@pytest.mark.parametrize("tool", ["music_generate", "video_generate"])
def test_music_and_video_return_the_sessions_active_task_of_that_tool(gl: Ledger, tool: str) -> None:
    first = gl.tasks.start_generation(tool, SESSION, "a calm sea")
    second = gl.tasks.start_generation(tool, SESSION, "something else entirely")
    image = gl.tasks.start_generation("image_generate", SESSION, "a calm sea")
    assert (second.started, second.task.task_id) == (False, first.task.task_id)
    assert image.started


def test_two_threads_starting_at_once_start_one_job(gl: Ledger) -> None:
    results: list[Any] = []
    barrier = threading.Barrier(4)

    def call() -> None:
        barrier.wait()
        results.append(gl.tasks.start_generation("video_generate", SESSION, "a storm"))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r.started for r in results) == 1
    assert len({r.task.task_id for r in results}) == 1
    assert len(gl.tasks.list(runtime="cli")) == 1


@pytest.mark.parametrize(("tool", "key", "prompt", "message"), [
    ("paint_generate", SESSION, "x", "Unknown generation tool 'paint_generate'"),
    ("image_generate", SESSION, "   ", "A generation prompt is required."),
    ("image_generate", "main", "x", "Not a session key: 'main'"),
    ("image_generate", "", "x", "Session key is required."),
])
def test_bad_input_is_refused_before_anything_is_written(gl: Ledger, tool: str, key: str, prompt: str,
                                                         message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(")):
        gl.tasks.start_generation(tool, key, prompt)
    assert gl.tasks.list() == []


# --- completion: a wake for a live session -------------------------------------------------------------


def test_completion_records_media_and_queues_one_wake_not_a_message(gl: Ledger, httpserver: HTTPServer) -> None:
    job = gl.tasks.start_generation("image_generate", SESSION, "a red fox", requester_origin=ORIGIN).task
    assert job.run_id is not None
    [done] = gl.tasks.complete(job.run_id, summary="1 image", media=["/tmp/fox.png", "/tmp/fox.png"])
    assert done.media == ("/tmp/fox.png",)
    assert gl.tasks.require(job.task_id).to_json()["media"] == ["/tmp/fox.png"]
    gl.tasks.complete(job.run_id, media=["/tmp/fox.png"])  # reported twice
    assert events(gl) == [f"generation:{job.task_id}"]
    assert wakes(gl) == 1
    [event] = SessionEvents(gl.db, gl.clock).list(SESSION)
    assert "media: /tmp/fox.png" in event.text
    assert httpserver.log == []


def test_a_second_report_adds_items_and_keeps_the_first(gl: Ledger) -> None:
    job = gl.tasks.start_generation("video_generate", SESSION, "a storm").task
    assert job.run_id is not None
    gl.tasks.complete(job.run_id, media=["a.mp4"])
    gl.tasks.complete(job.run_id, media=["b.mp4", "a.mp4"])
    assert gl.tasks.require(job.task_id).media == ("a.mp4", "b.mp4")
    with pytest.raises(InvalidInput):
        gl.tasks.complete(job.run_id, media="c.mp4")  # type: ignore[arg-type]


# --- completion: the direct fallback --------------------------------------------------------------------


def test_gone_session_gets_only_the_missing_items_once(gl: Ledger, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook", method="POST").respond_with_json({"ok": True})
    job = gl.tasks.start_generation("image_generate", SESSION, "three foxes", requester_origin=ORIGIN).task
    assert job.run_id is not None
    assert gl.sessions.ack_media(SESSION, job.task_id, ["/tmp/fox1.png"]) == 1
    end_session(gl)
    gl.tasks.complete(job.run_id, media=["/tmp/fox1.png", "/tmp/fox2.png", "/tmp/fox3.png"])
    gl.tasks.complete(job.run_id, media=["/tmp/fox1.png", "/tmp/fox2.png", "/tmp/fox3.png"])  # reported twice
    [text] = sent_texts(httpserver)
    assert text.splitlines() == ["Generated media: three foxes.", "/tmp/fox2.png", "/tmp/fox3.png"]
    assert events(gl) == [] and wakes(gl) == 0
    # A later item is the only one a later report carries.
    gl.tasks.complete(job.run_id, media=["/tmp/fox4.png"])
    assert sent_texts(httpserver)[1:] == ["Generated media: three foxes.\n/tmp/fox4.png"]


@pytest.mark.parametrize("gone", ["missing", "tombstoned", "ended"])
def test_every_kind_of_gone_falls_back(gl: Ledger, httpserver: HTTPServer, clock: FrozenClock, gone: str) -> None:
    httpserver.expect_request("/hook", method="POST").respond_with_json({"ok": True})
    job = gl.tasks.start_generation("music_generate", SESSION, "a waltz", requester_origin=ORIGIN).task
    assert job.run_id is not None
    if gone == "missing":
        with gl.db.write() as conn:
            from flowledger.tasks.runs.liveness import delete_session

            delete_session(conn, SESSION)
    elif gone == "tombstoned":
        with gl.db.write() as conn:
            upsert_session(conn, SESSION, clock.now(), tombstone="gateway died")
    else:
        end_session(gl)
    gl.tasks.complete(job.run_id, media=["waltz.mp3"])
    assert sent_texts(httpserver) == ["Generated media: a waltz.\nwaltz.mp3"]


def test_a_failed_send_is_retried_by_the_next_report_and_sends_once(gl: Ledger, httpserver: HTTPServer) -> None:
    job = gl.tasks.start_generation("image_generate", SESSION, "a red fox", requester_origin=ORIGIN).task
    assert job.run_id is not None
    end_session(gl)
    httpserver.expect_request("/hook", method="POST").respond_with_data("down", status=500)
    gl.tasks.complete(job.run_id, media=["/tmp/fox.png"])
    failed_attempts = len(httpserver.log)
    assert failed_attempts >= 1
    httpserver.clear_all_handlers()
    httpserver.expect_request("/hook", method="POST").respond_with_json({"ok": True})
    gl.tasks.complete(job.run_id, media=["/tmp/fox.png"])
    gl.tasks.complete(job.run_id, media=["/tmp/fox.png"])
    assert len(httpserver.log) == failed_attempts + 1


def test_acknowledged_items_are_never_sent_and_nothing_is_sent_without_an_origin(gl: Ledger,
                                                                                  httpserver: HTTPServer) -> None:
    job = gl.tasks.start_generation("image_generate", SESSION, "a red fox", requester_origin=ORIGIN).task
    bare = gl.tasks.start_generation("image_generate", SESSION, "no route").task
    assert job.run_id is not None and bare.run_id is not None
    gl.sessions.ack_media(SESSION, job.task_id, ["/tmp/fox.png"])
    end_session(gl)
    gl.tasks.complete(job.run_id, media=["/tmp/fox.png"])
    gl.tasks.complete(bare.run_id, media=["/tmp/x.png"])
    assert httpserver.log == []


def test_ack_media_refuses_what_is_not_the_sessions_job(gl: Ledger) -> None:
    job = gl.tasks.start_generation("image_generate", SESSION, "a red fox").task
    plain = gl.tasks.create(runtime="cli", task="not media", owner_key=SESSION)
    with pytest.raises(TaskNotFound):
        gl.sessions.ack_media(SESSION, "no-such-task", ["x"])
    with pytest.raises(OperationRefused, match="not a generation job"):
        gl.sessions.ack_media(SESSION, plain.task_id, ["x"])
    with pytest.raises(OperationRefused, match="was not started by session"):
        gl.sessions.ack_media("agent:main:other", job.task_id, ["x"])
    with pytest.raises(InvalidInput):
        gl.sessions.ack_media(SESSION, job.task_id, [])
    assert gl.sessions.ack_media(SESSION, job.task_id, ["x", "x"]) == 1
    assert gl.sessions.ack_media(SESSION, job.task_id, ["x"]) == 0


# --- backing ------------------------------------------------------------------------------------------


def test_a_job_is_never_lost_while_its_session_lives(gl: Ledger, clock: FrozenClock) -> None:
    job = gl.tasks.start_generation("video_generate", SESSION, "a storm").task
    clock.advance(timedelta(hours=2))
    gl.maintenance(apply=True)
    assert gl.tasks.require(job.task_id).status == TaskStatus.RUNNING
    end_session(gl)
    clock.advance(timedelta(minutes=5))
    gl.maintenance(apply=True)
    assert gl.tasks.require(job.task_id).status == TaskStatus.LOST


def test_a_repeated_system_event_is_reported_as_not_added(gl: Ledger) -> None:
    """The session queue's insert-once answer drives the one-wake rule; PostgreSQL's rowcount of a skipped
    ON CONFLICT insert is -1, so it must be read from RETURNING."""
    queue = SessionEvents(gl.db, gl.clock)
    assert [queue.enqueue(SESSION, "k", "text") for _ in range(2)] == [True, False]


def test_a_wake_that_cannot_be_queued_falls_back(gl: Ledger, httpserver: HTTPServer) -> None:
    """A live session whose event cannot be stored (here: its queue table is gone) still gets its media."""
    from sqlalchemy import text

    from flowledger.tasks.core.tables import METADATA, system_events

    httpserver.expect_request("/hook", method="POST").respond_with_json({"ok": True})
    job = gl.tasks.start_generation("image_generate", SESSION, "a red fox", requester_origin=ORIGIN).task
    assert job.run_id is not None
    with gl.db.write() as conn:
        conn.execute(text("DROP TABLE system_events"))
    try:
        gl.tasks.complete(job.run_id, media=["/tmp/fox.png"])
        assert sent_texts(httpserver) == ["Generated media: a red fox.\n/tmp/fox.png"]
    finally:
        with gl.db.write() as conn:
            METADATA.create_all(conn, tables=[system_events])


def test_the_sweep_retries_a_failed_fallback_once(gl: Ledger, httpserver: HTTPServer, clock: FrozenClock) -> None:
    from flowledger.tasks.delivery.generation import generation_hooks

    hooks = generation_hooks(gl.tasks)
    assert hooks is not None
    job = gl.tasks.start_generation("image_generate", SESSION, "a red fox", requester_origin=ORIGIN).task
    live = gl.tasks.start_generation("image_generate", "agent:main:main", "alive", requester_origin=ORIGIN).task
    assert job.run_id is not None and live.run_id is not None
    end_session(gl)
    httpserver.expect_request("/hook", method="POST").respond_with_data("down", status=500)
    gl.tasks.complete(job.run_id, media=["/tmp/fox.png"])
    gl.tasks.complete(live.run_id, media=["/tmp/alive.png"])  # its session lives: woken, never sent directly
    failed_attempts = len(httpserver.log)
    httpserver.clear_all_handlers()
    httpserver.expect_request("/hook", method="POST").respond_with_json({"ok": True})
    assert hooks.retry_unsent() == 1
    assert hooks.retry_unsent() == 0
    assert sent_texts(httpserver)[failed_attempts:] == ["Generated media: a red fox.\n/tmp/fox.png"]
