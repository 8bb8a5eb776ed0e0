"""Session-key grammar: `agent:<agentId>:<rest>` and the chat type hidden in `<rest>` (REFERENCE §1)."""

from __future__ import annotations

import re
from enum import StrEnum

from flowledger.tasks.core.errors import InvalidInputError
from flowledger.tasks.core.limits import check_session_key


class ChatType(StrEnum):
    DIRECT = "direct"
    GROUP = "group"
    CHANNEL = "channel"
    UNKNOWN = "unknown"


def required_key(session_key: str | None) -> str:
    """The trimmed key, or InvalidInputError (exit 2) when it is blank or longer than CONTRACT §7 allows."""
    key = (session_key or "").strip()
    if not key:
        raise InvalidInputError("Session key is required.")
    check_session_key(key)
    return key


def parse_agent_id(session_key: str | None) -> str | None:
    """The agent id of a canonical key, else None. Needs three parts and a leading `agent`."""
    if not session_key:
        return None
    parts = session_key.strip().split(":")
    if len(parts) < 3 or parts[0].lower() != "agent" or not parts[1].strip():
        return None
    return parts[1].strip().lower()


def rest_of(session_key: str) -> str | None:
    parts = session_key.strip().split(":", 2)
    if len(parts) < 3 or parts[0].lower() != "agent":
        return None
    return parts[2]


_LEGACY_DISCORD_CHANNEL = re.compile(r"^discord:(?:[^:]+:)?guild-[^:]+:channel-[^:]+$")


def chat_type(session_key: str | None) -> ChatType:
    """Derive the chat type from the key's tokens; legacy group/channel patterns still count."""
    if not session_key:
        return ChatType.UNKNOWN
    key = session_key.strip().lower()
    rest = rest_of(key)
    if rest is None:
        if key.startswith("group:") or key.endswith("@g.us"):
            return ChatType.GROUP
        if _LEGACY_DISCORD_CHANNEL.match(key):
            return ChatType.CHANNEL
        return ChatType.UNKNOWN
    tokens = set(rest.split(":"))
    if "group" in tokens or rest.endswith("@g.us"):
        return ChatType.GROUP
    if "channel" in tokens:
        return ChatType.CHANNEL
    if "direct" in tokens or "dm" in tokens:
        return ChatType.DIRECT
    return ChatType.UNKNOWN


_CRON_RUN_REST = re.compile(r"^cron:([^:]+):run:[^:]+$")


def cron_run_job_id(session_key: str) -> str | None:
    """The job id of an isolated cron run row `agent:<id>:cron:<jobId>:run:<uuid>`, else None."""
    rest = rest_of(session_key)
    if rest is None:
        return None
    match = _CRON_RUN_REST.match(rest)
    return match.group(1) if match else None


def cron_segment(value: str, fallback: str) -> str:
    """Lowercase, runs outside [a-z0-9_-] become '-', dashes trimmed, cut to 64 (REFERENCE §1)."""
    seg = re.sub(r"[^a-z0-9_-]+", "-", value.lower()).strip("-")[:64]
    return seg or fallback
