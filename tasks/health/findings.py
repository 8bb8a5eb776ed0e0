"""The shape of an audit finding, shared by task and flow audits (REFERENCE §7.3)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    WARN = "warn"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # "task" | "task_flow"
    severity: Severity
    code: str
    detail: str
    age_ms: int | None
    status: str
    token: str | None  # task id or flow id
    created_at: datetime | None = None
    subject: Any = None  # the Task or Flow the finding is about

    def sort_key(self) -> tuple[int, int, float]:
        """Errors first, then oldest activity first, then creation order (REFERENCE §7.1)."""
        age = self.age_ms if self.age_ms is not None else -1
        created = self.created_at.timestamp() if self.created_at is not None else 0.0
        return (0 if self.severity == Severity.ERROR else 1, -age, created)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "severity": self.severity.value, "code": self.code, "detail": self.detail,
                "age_ms": self.age_ms, "status": self.status, "token": self.token}
