"""`<state dir>/config.toml`: delivery channels and the heartbeat hook (CONTRACT §5b).

Secrets (a webhook secret, a bot token, webhook URLs whose path *is* the credential) are held in `Secret`,
whose repr/str never shows the value. Errors name the offending key, never its value.
"""

from __future__ import annotations

import logging
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flowledger.tasks.core.errors import InvalidInputError
from flowledger.tasks.core.limits import load_toml, read_regular_file

log = logging.getLogger(__name__)

CONFIG_FILE = "config.toml"
DEFAULT_TELEGRAM_API = "https://api.telegram.org"
DEFAULT_TIMEOUT_S = 10.0
REDACTED = "***"


class Secret:
    """A credential: usable through `.reveal()`, invisible in repr, str, logs and JSON."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    def __str__(self) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def redact_url(url: str) -> str:
    """Scheme and host only: webhook paths and queries carry the token."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return REDACTED
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/{REDACTED}"


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    url: Secret
    secret: Secret | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __repr__(self) -> str:
        signed = "signed" if self.secret else "unsigned"
        return f"WebhookConfig(url={redact_url(self.url.reveal())!r}, {signed})"


@dataclass(frozen=True, slots=True)
class SlackConfig:
    webhook_url: Secret
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __repr__(self) -> str:
        return f"SlackConfig(webhook_url={redact_url(self.webhook_url.reveal())!r})"


@dataclass(frozen=True, slots=True)
class DiscordConfig:
    webhook_url: Secret
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __repr__(self) -> str:
        return f"DiscordConfig(webhook_url={redact_url(self.webhook_url.reveal())!r})"


@dataclass(frozen=True, slots=True)
class TelegramConfig:
    token: Secret
    api_base: str = DEFAULT_TELEGRAM_API
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __repr__(self) -> str:
        return f"TelegramConfig(api_base={self.api_base!r}, token={REDACTED})"


ChannelConfig = WebhookConfig | SlackConfig | DiscordConfig | TelegramConfig


@dataclass(frozen=True, slots=True)
class HeartbeatConfig:
    command: tuple[str, ...] | None = None
    webhook: Secret | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __repr__(self) -> str:
        hook = redact_url(self.webhook.reveal()) if self.webhook else None
        return f"HeartbeatConfig(command={self.command!r}, webhook={hook!r})"


@dataclass(frozen=True, slots=True)
class Config:
    channels: Mapping[str, ChannelConfig] = field(default_factory=dict)
    heartbeat: HeartbeatConfig | None = None

    def secrets(self) -> list[str]:
        """Every credential value, so error texts can be scrubbed of any that leaked into them."""
        found: list[str] = []
        for channel in self.channels.values():
            for name in ("url", "secret", "webhook_url", "token"):
                value = getattr(channel, name, None)
                if isinstance(value, Secret) and value:
                    found.append(value.reveal())
        if self.heartbeat is not None and self.heartbeat.webhook:
            found.append(self.heartbeat.webhook.reveal())
        return found


class _Section:
    """Reads one table of the file, naming `where.key` in every complaint."""

    def __init__(self, path: Path, where: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise _bad(path, where, "must be a table")
        self.path, self.where, self.data = path, where, dict(data)

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}"

    def string(self, key: str, *, required: bool = False) -> str | None:
        value = self.data.pop(key, None)
        if value is None:
            if required:
                raise _bad(self.path, self._name(key), "is required")
            return None
        if not isinstance(value, str) or not value.strip():
            raise _bad(self.path, self._name(key), "must be a non-empty string")
        return value.strip()

    def url(self, key: str, *, required: bool = False) -> str | None:
        value = self.string(key, required=required)
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in {"http", "https"} or not parts.netloc:
                raise _bad(self.path, self._name(key), "must be an http(s) URL")
        return value

    def timeout(self) -> float:
        value = self.data.pop("timeout", DEFAULT_TIMEOUT_S)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 60:
            raise _bad(self.path, self._name("timeout"), "must be a number of seconds in (0, 60]")
        return float(value)

    def done(self) -> None:
        if self.data:
            raise _bad(self.path, self._name(sorted(self.data)[0]), "is not a known key")


def _bad(path: Path, key: str, problem: str) -> InvalidInputError:
    return InvalidInputError(f"Invalid config {path}: {key} {problem}.")


def _channel(path: Path, name: str, data: Any) -> ChannelConfig:
    section = _Section(path, f"channels.{name}", data)
    result: ChannelConfig
    if name == "webhook":
        url = section.url("url", required=True)
        secret = section.string("secret")
        assert url is not None
        result = WebhookConfig(Secret(url), Secret(secret) if secret else None, section.timeout())
    elif name in {"slack", "discord"}:
        hook = section.url("webhook_url", required=True)
        assert hook is not None
        kind = SlackConfig if name == "slack" else DiscordConfig
        result = kind(Secret(hook), section.timeout())
    elif name == "telegram":
        token = section.string("token", required=True)
        base = section.url("api_base") or DEFAULT_TELEGRAM_API
        assert token is not None
        result = TelegramConfig(Secret(token), base.rstrip("/"), section.timeout())
    else:
        raise _bad(path, f"channels.{name}", "is not a known channel (webhook, slack, discord, telegram)")
    section.done()
    return result


def _heartbeat(path: Path, data: Any) -> HeartbeatConfig:
    section = _Section(path, "heartbeat", data)
    command = section.data.pop("command", None)
    if command is not None and (
        not isinstance(command, list) or not command or not all(isinstance(a, str) and a for a in command)
    ):
        raise _bad(path, "heartbeat.command", "must be a non-empty list of strings (an argv)")
    webhook = section.url("webhook")
    result = HeartbeatConfig(tuple(command) if command else None, Secret(webhook) if webhook else None,
                             section.timeout())
    section.done()
    return result


def parse_config(text: str, path: Path) -> Config:
    try:
        data = load_toml(text)
    except tomllib.TOMLDecodeError as exc:
        # The decoder's message gives a position, never the line's content, so no secret can leak here.
        raise InvalidInputError(f"Invalid config {path}: {exc}.") from None
    except InvalidInputError as exc:
        raise InvalidInputError(f"Invalid config {path}: {exc.message}.") from None
    root = _Section(path, "config", data)
    channels_data = root.data.pop("channels", {})
    if not isinstance(channels_data, dict):
        raise _bad(path, "channels", "must be a table")
    channels = {name: _channel(path, name, body) for name, body in channels_data.items()}
    heartbeat_data = root.data.pop("heartbeat", None)
    heartbeat = _heartbeat(path, heartbeat_data) if heartbeat_data is not None else None
    if root.data:
        raise _bad(path, sorted(root.data)[0], "is not a known section (channels, heartbeat)")
    return Config(channels=channels, heartbeat=heartbeat)


def load_config(state_dir: Path) -> Config:
    """The state dir's config; a missing file means no channels and no heartbeat hook.

    Only a regular file of at most 1 MiB is read (CONTRACT §7): a FIFO named config.toml would hang every
    command. One holding secrets that others may read is used, with one warning per process.
    """
    path = Path(state_dir) / CONFIG_FILE
    try:
        text = read_regular_file(path).decode("utf-8")
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return Config()
    except InvalidInputError as exc:
        raise InvalidInputError(f"Invalid config {path}: {exc.message}.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"Invalid config {path}: cannot be read ({type(exc).__name__}).") from None
    config = parse_config(text, path)
    if mode & 0o077 and config.secrets() and path not in _WARNED_READABLE:
        _WARNED_READABLE.add(path)
        log.warning("%s holds secrets and is readable by others (mode %o); run: chmod 600 %s", path, mode, path)
    return config


# Paths already warned about in this process: a gateway reloads its config, one warning is enough.
_WARNED_READABLE: set[Path] = set()
