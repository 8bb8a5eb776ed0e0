"""Query parameters → the filters the CLI takes as options, checked with the same one-line messages.

A parameter the endpoint does not know is refused (400) like an unknown CLI option, never silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from flowledger.flows.listing import Paging, parse_since
from flowledger.flows.models import FlowStatus
from flowledger.tasks.core.errors import InvalidInputError
from flowledger.tasks.core.states import Runtime, TaskStatus, parse_enum
from flowledger.tasks.health.findings import Severity

DEFAULT_LIMIT = 100  # the CLI's `--limit` default for listings


def check_known(params: Mapping[str, str], known: tuple[str, ...]) -> None:
    for name in params:
        if name not in known:
            raise InvalidInputError(f"Unknown query parameter {name!r}: expected one of {', '.join(known)}.")


def _text(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    return value.strip() or None if value is not None else None


def count_param(params: Mapping[str, str], name: str, default: int) -> int:
    raw = _text(params, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInputError(f"Invalid value for '--{name}': {raw!r} is not a valid integer.") from None
    return value


def _paging(params: Mapping[str, str]) -> Paging:
    """`limit` (default 100, 0 = all) and `offset`, refused as `--limit`/`--offset` are."""
    return Paging.parse(count_param(params, "limit", DEFAULT_LIMIT), count_param(params, "offset", 0))


def _since(params: Mapping[str, str], now: datetime) -> datetime | None:
    raw = _text(params, "since")
    return parse_since(raw, now) if raw is not None else None


@dataclass(frozen=True, slots=True)
class TaskQuery:
    """`tasks list`'s filters: runtime, status, owner, flow (a flow lookup), since, limit, offset."""

    runtime: str | None = None
    status: str | None = None
    owner: str | None = None
    flow: str | None = None
    since: datetime | None = None
    paging: Paging = field(default_factory=Paging)

    PARAMS = ("runtime", "status", "owner", "flow", "since", "limit", "offset")

    @classmethod
    def parse(cls, params: Mapping[str, str], now: datetime) -> TaskQuery:
        check_known(params, cls.PARAMS)
        runtime, status = _text(params, "runtime"), _text(params, "status")
        return cls(runtime=parse_enum(Runtime, runtime, "runtime").value if runtime else None,
                   status=parse_enum(TaskStatus, status, "status").value if status else None,
                   owner=_text(params, "owner"), flow=_text(params, "flow"), since=_since(params, now),
                   paging=_paging(params))


@dataclass(frozen=True, slots=True)
class FlowQuery:
    """`tasks flow list`'s filters: status, owner, since, limit, offset."""

    status: str | None = None
    owner: str | None = None
    since: datetime | None = None
    paging: Paging = field(default_factory=Paging)

    PARAMS = ("status", "owner", "since", "limit", "offset")

    @classmethod
    def parse(cls, params: Mapping[str, str], now: datetime) -> FlowQuery:
        check_known(params, cls.PARAMS)
        status = _text(params, "status")
        return cls(status=parse_enum(FlowStatus, status, "flow status").value if status else None,
                   owner=_text(params, "owner"), since=_since(params, now), paging=_paging(params))


@dataclass(frozen=True, slots=True)
class AuditQuery:
    severity: str | None = None
    code: str | None = None
    limit: int | None = None

    PARAMS = ("severity", "code", "limit")

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> AuditQuery:
        check_known(params, cls.PARAMS)
        severity = _text(params, "severity")
        limit = _text(params, "limit")
        if limit is not None and (not limit.isdigit() or int(limit) < 1):
            raise InvalidInputError("--limit must be a positive integer, for example --limit 25.")
        return cls(severity=parse_enum(Severity, severity, "severity").value if severity else None,
                   code=_text(params, "code"), limit=int(limit) if limit else None)
