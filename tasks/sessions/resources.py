"""What a child session holds that must be released when its run ends (SPEC §5, "completion cleanup").

A sub-agent or an isolated cron run may leave things behind that outlive its own process: a browser it started
in a session of its own, a tab it opened in a shared browser. The runtime (or the work itself) registers them
here against the child session: a process by pid together with the run marker its environment carries (so a
reused pid is never killed), or a cleanup command (`close-tab 17`). When the run ends, flows/resources.py
releases each one, best effort, and records how that went; the rows stay for inspection until the session's
registry row is pruned.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, insert, select, update

from flowledger.tasks.core.clock import iso_z
from flowledger.tasks.core.errors import InvalidInputError
from flowledger.tasks.core.ids import new_id
from flowledger.tasks.core.tables import session_resources, sessions

PROCESS = "process"
COMMAND = "command"


@dataclass(frozen=True, slots=True)
class Resource:
    resource_id: str
    session_key: str
    kind: str  # process | command
    pid: int | None
    run_marker: str | None
    argv: tuple[str, ...] | None
    label: str | None
    registered_at: datetime
    released_at: datetime | None = None
    outcome: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"resource_id": self.resource_id, "session_key": self.session_key, "kind": self.kind,
                "pid": self.pid, "run_marker": self.run_marker, "argv": list(self.argv) if self.argv else None,
                "label": self.label, "registered_at": iso_z(self.registered_at),
                "released_at": iso_z(self.released_at), "outcome": self.outcome}


def _resource(row: Any) -> Resource:
    m = row._mapping
    argv = tuple(json.loads(m["argv_json"])) if m["argv_json"] else None
    return Resource(m["resource_id"], m["session_key"], m["kind"], m["pid"], m["run_marker"], argv, m["label"],
                    m["registered_at"], m["released_at"], m["outcome"])


def validate_process(pid: object, run_marker: str | None) -> tuple[int, str]:
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 1:
        raise InvalidInputError(f"Invalid pid {pid!r}: expected a process id above 1.")
    marker = (run_marker or "").strip()
    if not marker:
        raise InvalidInputError("A tracked process needs the run id its environment carries (FLOWLEDGER_RUN_ID).")
    return pid, marker


def validate_argv(argv: Sequence[str]) -> tuple[str, ...]:
    if isinstance(argv, str) or not argv or not all(isinstance(a, str) for a in argv) or not argv[0].strip():
        raise InvalidInputError("A cleanup command is a non-empty argv list, e.g. ['close-tab', '17'].")
    return tuple(argv)


def register(conn: Connection, session_key: str, now: datetime, *, kind: str, pid: int | None = None,
             run_marker: str | None = None, argv: Sequence[str] | None = None, label: str | None = None) -> Resource:
    resource = Resource(new_id(), session_key, kind, pid, run_marker, tuple(argv) if argv else None,
                        (label or "").strip() or None, now)
    conn.execute(insert(session_resources).values(
        resource_id=resource.resource_id, session_key=session_key, kind=kind, pid=pid, run_marker=run_marker,
        argv_json=json.dumps(list(argv)) if argv else None, label=resource.label, registered_at=now))
    return resource


def pending(conn: Connection, session_key: str) -> list[Resource]:
    """Unreleased resources of the session, in registration order."""
    stmt = (select(session_resources)
            .where(and_(session_resources.c.session_key == session_key, session_resources.c.released_at.is_(None)))
            .order_by(session_resources.c.registered_at, session_resources.c.resource_id))
    return [_resource(r) for r in conn.execute(stmt)]


def listed(conn: Connection, session_key: str) -> list[Resource]:
    stmt = (select(session_resources).where(session_resources.c.session_key == session_key)
            .order_by(session_resources.c.registered_at, session_resources.c.resource_id))
    return [_resource(r) for r in conn.execute(stmt)]


def claim_release(conn: Connection, resource_id: str, now: datetime) -> bool:
    """Mark the resource being released; only the one process whose update lands releases it."""
    return bool(conn.execute(update(session_resources).where(and_(
        session_resources.c.resource_id == resource_id, session_resources.c.released_at.is_(None)))
        .values(released_at=now, outcome="releasing")).rowcount)


def record_outcome(conn: Connection, resource_id: str, outcome: str, now: datetime) -> None:
    conn.execute(update(session_resources).where(session_resources.c.resource_id == resource_id)
                 .values(outcome=outcome, released_at=now))


def mark_session_ended(conn: Connection, session_key: str, now: datetime) -> bool:
    """The session's run is over: generation completions for it go direct from now on (tasks/core/generation.py)."""
    return bool(conn.execute(update(sessions).where(and_(
        sessions.c.session_key == session_key, sessions.c.ended_at.is_(None))).values(ended_at=now)).rowcount)
