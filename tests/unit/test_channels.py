"""Channel adapters against a real local HTTP server, the retry policy, and config.toml parsing."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from flowledger.tasks.core.config import (
    Config,
    DiscordConfig,
    Secret,
    SlackConfig,
    TelegramConfig,
    WebhookConfig,
    load_config,
    parse_config,
)
from flowledger.tasks.core.errors import InvalidInput
from flowledger.tasks.delivery.channels import (
    DiscordChannel,
    Message,
    RetryPolicy,
    SlackChannel,
    TelegramChannel,
    WebhookChannel,
    build_channels,
    retry_after_seconds,
)

MSG = Message(task_id="task-1", status="succeeded", text="Background task done: Export.", to="123",
              idempotency_key="task-terminal:task-1:succeeded:succeeded", thread_id="321")


class Sleeps:
    """Records the backoff instead of waiting it out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def body(httpserver: HTTPServer, index: int = 0) -> dict[str, object]:
    request, _ = httpserver.log[index]
    loaded: dict[str, object] = json.loads(request.get_data())
    return loaded


# --- payload shapes ----------------------------------------------------------------------------------


def test_webhook_payload_signature_and_idempotency_header(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook", method="POST").respond_with_data("", status=204)
    channel = WebhookChannel(WebhookConfig(Secret(httpserver.url_for("/hook")), Secret("s3cret")))
    outcome = channel.send(MSG)
    assert outcome.ok and outcome.attempts == 1 and outcome.status_code == 204
    request, _ = httpserver.log[0]
    raw = request.get_data()
    assert json.loads(raw) == {"task_id": "task-1", "status": "succeeded", "text": "Background task done: Export.",
                               "to": "123", "thread_id": "321",
                               "idempotency_key": "task-terminal:task-1:succeeded:succeeded"}
    expected = hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()
    assert request.headers["X-Flowledger-Signature"] == f"sha256={expected}"
    assert request.headers["Idempotency-Key"] == "task-terminal:task-1:succeeded:succeeded"
    assert request.headers["Content-Type"] == "application/json"


def test_webhook_without_secret_is_unsigned(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    assert WebhookChannel(WebhookConfig(Secret(httpserver.url_for("/hook")))).send(MSG).ok
    request, _ = httpserver.log[0]
    assert "X-Flowledger-Signature" not in request.headers


def test_slack_payload(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/services/T0/B0/XYZ", method="POST").respond_with_data("ok")
    assert SlackChannel(SlackConfig(Secret(httpserver.url_for("/services/T0/B0/XYZ")))).send(MSG).ok
    assert body(httpserver) == {"text": "Background task done: Export."}


def test_discord_payload_posts_into_the_thread(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/api/webhooks/1/tok", method="POST",
                              query_string="thread_id=321").respond_with_data("", status=204)
    assert DiscordChannel(DiscordConfig(Secret(httpserver.url_for("/api/webhooks/1/tok")))).send(MSG).ok
    assert body(httpserver) == {"content": "Background task done: Export."}


def test_telegram_send_message(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/bot123:ABC/sendMessage", method="POST").respond_with_json({"ok": True})
    channel = TelegramChannel(TelegramConfig(Secret("123:ABC"), httpserver.url_for("").rstrip("/")))
    assert channel.send(MSG.__class__(**{**_fields(MSG), "to": "telegram:123"})).ok
    assert body(httpserver) == {"chat_id": 123, "text": "Background task done: Export.", "message_thread_id": 321}


def test_telegram_without_thread_and_a_refusal_in_a_200(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/botT/sendMessage").respond_with_json({"ok": False, "description": "chat not found"})
    channel = TelegramChannel(TelegramConfig(Secret("T"), httpserver.url_for("").rstrip("/")))
    outcome = channel.send(Message(task_id="t", status="failed", text="x", to="@news", idempotency_key="k"))
    assert not outcome.ok and outcome.error == "telegram refused: chat not found"
    assert body(httpserver) == {"chat_id": "@news", "text": "x"}


def _fields(message: Message) -> dict[str, object]:
    return {name: getattr(message, name) for name in message.__slots__}


# --- retries -----------------------------------------------------------------------------------------


def test_503_is_retried_with_exponential_backoff(httpserver: HTTPServer) -> None:
    for _ in range(2):
        httpserver.expect_ordered_request("/hook").respond_with_data("busy", status=503)
    httpserver.expect_ordered_request("/hook").respond_with_data("ok")
    sleeps = Sleeps()
    outcome = WebhookChannel(WebhookConfig(Secret(httpserver.url_for("/hook"))), sleep=sleeps).send(MSG)
    assert outcome.ok and outcome.attempts == 3
    assert sleeps.delays == [0.5, 1.0]
    # The same idempotency key travels with every attempt, so the far end can drop a duplicate.
    assert {r.headers["Idempotency-Key"] for r, _ in httpserver.log} == {MSG.idempotency_key}


def test_persistent_503_fails_after_the_attempts(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook").respond_with_data("down", status=503)
    sleeps = Sleeps()
    outcome = SlackChannel(SlackConfig(Secret(httpserver.url_for("/hook"))), sleep=sleeps).send(MSG)
    assert not outcome.ok and outcome.attempts == 4 and len(httpserver.log) == 4
    assert outcome.error == "HTTP 503 after 4 attempt(s)"
    assert sleeps.delays == [0.5, 1.0, 2.0]


def test_429_honours_retry_after(httpserver: HTTPServer) -> None:
    httpserver.expect_ordered_request("/hook").respond_with_data("slow down", status=429,
                                                                 headers={"Retry-After": "7"})
    httpserver.expect_ordered_request("/hook").respond_with_data("", status=204)
    sleeps = Sleeps()
    outcome = DiscordChannel(DiscordConfig(Secret(httpserver.url_for("/hook"))), sleep=sleeps).send(MSG)
    assert outcome.ok and outcome.attempts == 2
    assert sleeps.delays == [7.0]


def test_retry_after_beyond_the_60_second_budget_fails_at_once(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook").respond_with_data("", status=429, headers={"Retry-After": "3600"})
    sleeps = Sleeps()
    outcome = SlackChannel(SlackConfig(Secret(httpserver.url_for("/hook"))), sleep=sleeps).send(MSG)
    assert not outcome.ok and outcome.attempts == 1 and sleeps.delays == []


def test_other_4xx_fails_at_once(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook").respond_with_data("gone", status=404)
    sleeps = Sleeps()
    outcome = WebhookChannel(WebhookConfig(Secret(httpserver.url_for("/hook"))), sleep=sleeps).send(MSG)
    assert not outcome.ok and outcome.attempts == 1 and outcome.status_code == 404
    assert outcome.error == "HTTP 404" and sleeps.delays == [] and len(httpserver.log) == 1


def test_connection_refused_is_retried_and_the_error_hides_the_url() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = "123456:SECRET-TOKEN"
    sleeps = Sleeps()
    channel = TelegramChannel(TelegramConfig(Secret(token), f"http://127.0.0.1:{port}"), sleep=sleeps)
    outcome = channel.send(MSG)
    assert not outcome.ok and outcome.attempts == 4 and sleeps.delays == [0.5, 1.0, 2.0]
    assert outcome.error is not None and outcome.error.startswith("connection failed")
    assert token not in outcome.error


def test_a_timeout_is_retried() -> None:
    calls: list[int] = []

    def first_slow(request: Request) -> Response:
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.4)  # the far end is slower than the per-attempt timeout, once
        return Response("ok")

    server = HTTPServer(threaded=True)  # the retry must not queue behind the slow first request
    server.start()
    try:
        server.expect_request("/hook").respond_with_handler(first_slow)
        sleeps = Sleeps()
        channel = WebhookChannel(WebhookConfig(Secret(server.url_for("/hook")), timeout_s=0.1), sleep=sleeps)
        outcome = channel.send(MSG)
    finally:
        server.clear()
        server.stop()
    assert outcome.ok and outcome.attempts == 2 and sleeps.delays == [0.5]


def test_backoff_is_capped_and_stays_inside_the_budget() -> None:
    policy = RetryPolicy(attempts=10)
    assert [policy.backoff(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert retry_after_seconds("12", 0) == 12.0
    assert retry_after_seconds("Thu, 01 Jan 1970 00:00:30 GMT", 10.0) == 20.0
    assert retry_after_seconds("soon", 0) is None
    default = RetryPolicy()
    assert default.attempts >= 3
    worst = sum(default.backoff(n) for n in range(1, default.attempts)) + default.attempts * 10.0
    assert worst <= default.budget_s


# --- config.toml -------------------------------------------------------------------------------------

FULL = """
[channels.webhook]
url = "https://example.org/hook?token=abc123"
secret = "whsec-very-secret"
[channels.slack]
webhook_url = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"
[channels.discord]
webhook_url = "https://discord.com/api/webhooks/1/DISCORDSECRET"
timeout = 5
[channels.telegram]
token = "999:TELEGRAMSECRET"
api_base = "http://127.0.0.1:9/"
[heartbeat]
command = ["notify-send", "flowledger"]
"""
SECRETS = ("abc123", "whsec-very-secret", "XXXXSECRET", "DISCORDSECRET", "TELEGRAMSECRET")


def test_full_config_parses_and_never_shows_a_secret(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(FULL)
    config = load_config(tmp_path)
    assert set(config.channels) == {"webhook", "slack", "discord", "telegram"}
    telegram = config.channels["telegram"]
    assert isinstance(telegram, TelegramConfig) and telegram.api_base == "http://127.0.0.1:9"
    assert telegram.token.reveal() == "999:TELEGRAMSECRET"
    assert config.channels["discord"].timeout_s == 5.0
    assert config.heartbeat is not None and config.heartbeat.command == ("notify-send", "flowledger")
    shown = repr(config) + str(config) + repr(build_channels(config)) + repr(list(config.channels.values()))
    for secret in SECRETS:
        assert secret not in shown
    assert "https://hooks.slack.com/***" in shown
    assert sorted(config.secrets()) == sorted([
        "https://example.org/hook?token=abc123", "whsec-very-secret",
        "https://hooks.slack.com/services/T000/B000/XXXXSECRET",
        "https://discord.com/api/webhooks/1/DISCORDSECRET", "999:TELEGRAMSECRET"])


def test_missing_file_means_no_channels(tmp_path: Path) -> None:
    assert load_config(tmp_path) == Config()


@pytest.mark.parametrize(("text", "named"), [
    ('[channels.slack]\nwebhook_url = 3\n', "channels.slack.webhook_url must be a non-empty string"),
    ('[channels.slack]\n', "channels.slack.webhook_url is required"),
    ('[channels.webhook]\nurl = "ftp://x/y"\n', "channels.webhook.url must be an http(s) URL"),
    ('[channels.webhook]\nurl = "https://x/y"\nsecert = "typo"\n', "channels.webhook.secert is not a known key"),
    ('[channels.pager]\nurl = "https://x"\n', "channels.pager is not a known channel"),
    ('[channels.telegram]\ntoken = "t"\ntimeout = 0\n', "channels.telegram.timeout must be a number"),
    ('[heartbeat]\ncommand = "notify-send"\n', "heartbeat.command must be a non-empty list of strings"),
    ('[nonsense]\n', "nonsense is not a known section"),
    ('channels = 1\n', "channels must be a table"),
])
def test_bad_config_names_the_key(tmp_path: Path, text: str, named: str) -> None:
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(InvalidInput) as caught:
        load_config(tmp_path)
    assert named in caught.value.message
    assert str(tmp_path / "config.toml") in caught.value.message
    assert "\n" not in caught.value.message


def test_toml_syntax_error_does_not_echo_the_line() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_config('[channels.telegram]\ntoken = "SECRET-TOKEN\n', Path("/s/config.toml"))
    assert "SECRET-TOKEN" not in caught.value.message
    assert caught.value.message.startswith("Invalid config /s/config.toml:")
