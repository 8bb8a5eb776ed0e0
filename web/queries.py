"""Query parameters → the filters the CLI takes as options, checked with the same one-line messages.

A parameter the endpoint does not know is refused (400) like an unknown CLI option, never silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flowledger.flows.models import FlowStatus
from flowledger.tasks.errors import InvalidInput
from flowledger.tasks.findings import Severity
from flowledger.tasks.states import Runtime, TaskStatus, parse_enum

DEFAULT_LIMIT = 100  # the CLI's `--limit` default for listings
PAGE_MAX = 1000  # a page the board draws; `limit=0` (all) is for the JSON API


def check_known(params: Mapping[str, str], known: tuple[str, ...]) -> None:
    for name in params:
        if name not in known:
            raise InvalidInput(f"Unknown query parameter {name!r}: expected one of {', '.join(known)}.")


def _text(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    return value.strip() or None if value is not None else None


def count_param(params: Mapping[str, str], name: str, default: int, *, zero_ok: bool = True) -> int:
    raw = _text(params, name)
    if raw is None:
        return default
    if not raw.isdigit() or (not zero_ok and int(raw) == 0):
        least = 0 if zero_ok else 1
        raise InvalidInput(f"--{name} must be an integer ≥ {least}, for example --{name} 25.")
    return int(raw)


@dataclass(frozen=True, slots=True)
class TaskQuery:
    runtime: str | None = None
    status: str | None = None
    limit: int = DEFAULT_LIMIT  # 0 = all
    offset: int = 0

    PARAMS = ("runtime", "status", "limit", "offset")

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> TaskQuery:
        check_known(params, cls.PARAMS)
        runtime, status = _text(params, "runtime"), _text(params, "status")
        return cls(runtime=parse_enum(Runtime, runtime, "runtime").value if runtime else None,
                   status=parse_enum(TaskStatus, status, "status").value if status else None,
                   limit=count_param(params, "limit", DEFAULT_LIMIT), offset=count_param(params, "offset", 0))


@dataclass(frozen=True, slots=True)
class FlowQuery:
    status: str | None = None
    limit: int = DEFAULT_LIMIT
    offset: int = 0

    PARAMS = ("status", "limit", "offset")

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> FlowQuery:
        check_known(params, cls.PARAMS)
        status = _text(params, "status")
        return cls(status=parse_enum(FlowStatus, status, "flow status").value if status else None,
                   limit=count_param(params, "limit", DEFAULT_LIMIT), offset=count_param(params, "offset", 0))


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
            raise InvalidInput("--limit must be a positive integer, for example --limit 25.")
        return cls(severity=parse_enum(Severity, severity, "severity").value if severity else None,
                   code=_text(params, "code"), limit=int(limit) if limit else None)
