"""Direct delivery channels: one small protocol and its HTTP adapters (CONTRACT §5b).

A send either settles `ok` (the far end answered 2xx) or fails with a one-line, secret-free reason after
the retry policy gave up: timeouts, connection errors, 5xx and 429 (honouring Retry-After) are retried with
capped exponential backoff inside a 60-second budget; any other 4xx fails at once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # httpx is imported where a send happens: ~70 ms that a read-only command never needs
    import httpx

from flowledger.tasks.core.config import (
    ChannelConfig,
    Config,
    DiscordConfig,
    Secret,
    SlackConfig,
    TelegramConfig,
    WebhookConfig,
    redact_url,
)

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Flowledger-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
Sleep = Callable[[float], None]
Monotonic = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Message:
    """One notice for one target. `idempotency_key` is stable across retries and processes."""

    task_id: str
    status: str
    text: str
    to: str
    idempotency_key: str
    thread_id: str | None = None
    account_id: str | None = None


@dataclass(frozen=True, slots=True)
class SendOutcome:
    ok: bool
    attempts: int
    status_code: int | None = None
    error: str | None = None


class Channel(Protocol):
    name: str

    def send(self, message: Message) -> SendOutcome: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    budget_s: float = 60.0

    def backoff(self, attempt: int) -> float:
        """Delay after the `attempt`-th failure (1-based): 0.5, 1, 2, 4 … capped."""
        return float(min(self.max_delay_s, self.base_delay_s * (2 ** (attempt - 1))))


def retry_after_seconds(value: str | None, now_epoch: float) -> float | None:
    """Retry-After as delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now_epoch)


class _ClientLogRedactor(logging.Filter):
    """httpx logs every request URL at INFO, and a webhook URL's path or a bot token in it is the credential:
    scrub every configured secret from those records before any handler (a gateway at --log-level info) sees
    them."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def guard(self, secrets: tuple[str, ...]) -> None:
        self.secrets.update(secrets)
        client_log = logging.getLogger("httpx")
        if self not in client_log.filters:
            client_log.addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if any(secret in text for secret in self.secrets):
            for secret in sorted(self.secrets, key=len, reverse=True):
                text = text.replace(secret, "***")
            record.msg, record.args = text, None
        return True


_CLIENT_LOG_REDACTOR = _ClientLogRedactor()


@dataclass(frozen=True, slots=True)
class Request:
    url: str
    body: bytes
    headers: Mapping[str, str]


class HttpChannel:
    """The retry loop shared by every HTTP adapter; subclasses only build the request."""

    name = "http"

    def __init__(self, *, timeout_s: float = 10.0, retry: RetryPolicy | None = None, sleep: Sleep | None = None,
                 monotonic: Monotonic | None = None, transport: httpx.BaseTransport | None = None,
                 secrets: tuple[str, ...] = ()) -> None:
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.sleep: Sleep = sleep or time.sleep
        self.monotonic: Monotonic = monotonic or time.monotonic
        self.transport = transport
        self._secrets = tuple(s for s in secrets if s)
        _CLIENT_LOG_REDACTOR.guard(self._secrets)
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()

    def client(self) -> httpx.Client:
        """One pooled client per channel: building one (TLS context included) costs ~60 ms, a send ~1 ms."""
        import httpx

        with self._client_lock:
            if self._client is None or self._client.is_closed:
                self._client = httpx.Client(timeout=self.timeout_s, transport=self.transport, follow_redirects=False)
            return self._client

    def close(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def build(self, message: Message) -> Request:
        raise NotImplementedError

    def accepted(self, response: httpx.Response) -> str | None:
        """None when a 2xx answer really means delivered; adapters may look inside the body."""
        _ = response
        return None

    def send(self, message: Message) -> SendOutcome:
        import httpx

        request = self.build(message)
        started = self.monotonic()
        attempt = 0
        last_code: int | None = None
        client = self.client()
        while True:
            attempt += 1
            wait: float | None = None
            try:
                response = client.post(request.url, content=request.body, headers=dict(request.headers))
            except httpx.TimeoutException:
                error = "timed out"
                wait = self.retry.backoff(attempt)
            except httpx.TransportError as exc:
                error = f"connection failed: {self._scrub(type(exc).__name__ + ': ' + str(exc))}"
                wait = self.retry.backoff(attempt)
            else:
                last_code = response.status_code
                if 200 <= response.status_code < 300:
                    refusal = self.accepted(response)
                    if refusal is None:
                        return SendOutcome(True, attempt, last_code)
                    return SendOutcome(False, attempt, last_code, self._scrub(refusal))
                error = f"HTTP {response.status_code}"
                if response.status_code == 429 or response.status_code >= 500:
                    hinted = retry_after_seconds(response.headers.get("Retry-After"), time.time())
                    wait = hinted if hinted is not None else self.retry.backoff(attempt)
            if wait is None:
                return SendOutcome(False, attempt, last_code, error)
            elapsed = self.monotonic() - started
            if attempt >= self.retry.attempts or elapsed + wait + self.timeout_s > self.retry.budget_s:
                return SendOutcome(False, attempt, last_code, f"{error} after {attempt} attempt(s)")
            log.info("%s delivery for task %s: %s; retry %d in %.1fs", self.name, message.task_id, error,
                     attempt + 1, wait)
            self.sleep(wait)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return " ".join(text.split())[:300]


def _json(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class WebhookChannel(HttpChannel):
    name = "webhook"

    def __init__(self, config: WebhookConfig, **kwargs: Any) -> None:
        secrets = (config.url.reveal(), config.secret.reveal() if config.secret else "")
        super().__init__(timeout_s=config.timeout_s, secrets=secrets, **kwargs)
        self.url = config.url
        self.secret = config.secret

    def build(self, message: Message) -> Request:
        body = _json({"task_id": message.task_id, "status": message.status, "text": message.text,
                      "to": message.to, "thread_id": message.thread_id,
                      "idempotency_key": message.idempotency_key})
        headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: message.idempotency_key}
        if self.secret:
            headers[SIGNATURE_HEADER] = "sha256=" + sign(self.secret, body)
        return Request(self.url.reveal(), body, headers)

    def __repr__(self) -> str:
        return f"WebhookChannel({redact_url(self.url.reveal())})"


def sign(secret: Secret, body: bytes) -> str:
    return hmac.new(secret.reveal().encode("utf-8"), body, hashlib.sha256).hexdigest()


class SlackChannel(HttpChannel):
    name = "slack"

    def __init__(self, config: SlackConfig, **kwargs: Any) -> None:
        super().__init__(timeout_s=config.timeout_s, secrets=(config.webhook_url.reveal(),), **kwargs)
        self.url = config.webhook_url

    def build(self, message: Message) -> Request:
        return Request(self.url.reveal(), _json({"text": message.text}), {"Content-Type": "application/json"})

    def __repr__(self) -> str:
        return f"SlackChannel({redact_url(self.url.reveal())})"


class DiscordChannel(HttpChannel):
    name = "discord"

    def __init__(self, config: DiscordConfig, **kwargs: Any) -> None:
        super().__init__(timeout_s=config.timeout_s, secrets=(config.webhook_url.reveal(),), **kwargs)
        self.url = config.webhook_url

    def build(self, message: Message) -> Request:
        url = self.url.reveal()
        if message.thread_id:
            # Discord posts into a thread through the query string, not the body.
            url += ("&" if "?" in url else "?") + f"thread_id={message.thread_id}"
        return Request(url, _json({"content": message.text}), {"Content-Type": "application/json"})

    def __repr__(self) -> str:
        return f"DiscordChannel({redact_url(self.url.reveal())})"


class TelegramChannel(HttpChannel):
    name = "telegram"

    def __init__(self, config: TelegramConfig, **kwargs: Any) -> None:
        super().__init__(timeout_s=config.timeout_s, secrets=(config.token.reveal(),), **kwargs)
        self.token = config.token
        self.api_base = config.api_base

    def build(self, message: Message) -> Request:
        payload: dict[str, Any] = {"chat_id": _telegram_id(message.to, strip_prefix=True), "text": message.text}
        if message.thread_id:
            payload["message_thread_id"] = _telegram_id(message.thread_id)
        url = f"{self.api_base}/bot{self.token.reveal()}/sendMessage"
        return Request(url, _json(payload), {"Content-Type": "application/json"})

    def accepted(self, response: httpx.Response) -> str | None:
        try:
            body = response.json()
        except ValueError:
            return None
        if isinstance(body, dict) and body.get("ok") is False:
            return f"telegram refused: {body.get('description') or 'ok=false'}"
        return None

    def __repr__(self) -> str:
        return f"TelegramChannel({self.api_base})"


def _telegram_id(value: str, *, strip_prefix: bool = False) -> int | str:
    text = value.strip()
    if strip_prefix and text.lower().startswith("telegram:"):
        text = text.split(":", 1)[1]
    return int(text) if re.fullmatch(r"-?\d+", text) else text


_ADAPTERS: dict[type[Any], type[HttpChannel]] = {
    WebhookConfig: WebhookChannel,
    SlackConfig: SlackChannel,
    DiscordConfig: DiscordChannel,
    TelegramConfig: TelegramChannel,
}


def build_channel(config: ChannelConfig, **kwargs: Any) -> Channel:
    adapter: Any = _ADAPTERS[type(config)]
    channel: Channel = adapter(config, **kwargs)
    return channel


def build_channels(config: Config, **kwargs: Any) -> dict[str, Channel]:
    """One adapter per configured channel; kwargs (sleep, transport, retry) go to every adapter."""
    return {name: build_channel(body, **kwargs) for name, body in config.channels.items()}
