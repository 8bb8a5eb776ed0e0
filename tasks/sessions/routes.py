"""A session's stored chat route (`sessions.last_route_json`): where its conversation last spoke.

SPEC §3: a sub-agent completion whose origin lacks `to`/account may be completed from the requester session's
stored route (the reference's `lastChannel` / `lastTo` / `lastAccountId`). The route is recorded when a task is
created with a full origin (channel and `to`) and through `Sessions.record_route`; it is read back only for the
session it belongs to.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import Connection, and_, insert, select, update

from flowledger.tasks.core.child_sessions import is_active_child_session
from flowledger.tasks.core.clock import Clock
from flowledger.tasks.core.db import Database
from flowledger.tasks.core.errors import InvalidInputError, OperationRefusedError
from flowledger.tasks.core.models import DeliveryOrigin
from flowledger.tasks.core.sessionkeys import required_key
from flowledger.tasks.core.tables import sessions
from flowledger.tasks.sessions import resources as session_resources
from flowledger.tasks.sessions.resources import Resource

# The row made for a session that only carries a route: an ordinary conversation session, never a child
# session kind (subagent, acp, cron), and without ACP metadata, so the ACP repair and the cron-run prune
# (tasks/sessions/sweep.py) never pick it up.
ROUTE_SESSION_KIND = "session"


def complete_route(origin: DeliveryOrigin | None) -> bool:
    """A route worth storing names both a channel and a target."""
    return origin is not None and bool(origin.channel.strip()) and bool(origin.to.strip())


def read_route(conn: Connection, session_key: str) -> DeliveryOrigin | None:
    """The session's own stored route (exact key); None when nothing usable is stored."""
    text = conn.execute(select(sessions.c.last_route_json).where(sessions.c.session_key == session_key)).scalar()
    if not text:
        return None
    try:
        route = DeliveryOrigin.from_mapping(json.loads(text))
    except ValueError:  # a hand-edited row: no route rather than a failed delivery
        return None
    return route if complete_route(route) else None


def record_route(conn: Connection, session_key: str, route: DeliveryOrigin, now: datetime) -> bool:
    """Store `route` on the session's row, in the caller's transaction; True when stored.

    An existing row keeps its `updated_at`: a route is not session activity, so the cron-run prune's clock is
    untouched. A missing row is created as a plain `session` row, except for a key an active task runs in as its
    child session: a new row there would make a vanished child session look alive again, so nothing is stored.
    """
    if not session_key or not complete_route(route):
        return False
    document = json.dumps(route.to_json())
    if conn.execute(update(sessions).where(sessions.c.session_key == session_key)
                    .values(last_route_json=document)).rowcount:
        return True
    if is_active_child_session(conn, session_key):
        return False
    conn.execute(insert(sessions).values(session_key=session_key, kind=ROUTE_SESSION_KIND, created_at=now,
                                         updated_at=now, last_route_json=document))
    return True


class Sessions:
    """The session door of the Python API (`ledger.sessions`): stored routes, generated media the session
    received (tasks/core/generation.py), and its end."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def route(self, session_key: str) -> DeliveryOrigin | None:
        key = required_key(session_key)
        with self.db.read() as conn:
            return read_route(conn, key)

    def record_route(self, session_key: str, *, channel: str, to: str, account_id: str | None = None,
                     thread_id: str | None = None) -> DeliveryOrigin:
        """Store the session's route (replacing the previous one) and return it as stored."""
        key = required_key(session_key)
        route = DeliveryOrigin.from_mapping({"channel": channel, "to": to, "account_id": account_id,
                                             "thread_id": thread_id})
        if route is None or not route.channel:
            raise InvalidInputError("A route needs a channel.")
        if not route.to:
            raise InvalidInputError("A route needs a target (to).")
        now = self.clock.now()
        if not self.db.transact(lambda conn: record_route(conn, key, route, now)):
            raise OperationRefusedError(f"Session {key} is the child session of an active task without a registry row; "
                                   "its route is not stored.")
        return route

    def ack_media(self, session_key: str, task_id: str, items: Iterable[str]) -> int:
        """The session received these items of generation job `task_id` (CONTRACT §7): a direct fallback never
        sends them. Returns how many were newly acknowledged."""
        from flowledger.tasks.core import generation

        return generation.ack_media(self.db, self.clock, session_key, task_id, items)

    def end(self, session_key: str) -> bool:
        """Mark the session ended (its generation jobs' completions then go direct); True when a row was marked."""
        key = required_key(session_key)
        now = self.clock.now()
        return bool(self.db.transact(lambda conn: conn.execute(
            update(sessions).where(and_(sessions.c.session_key == key, sessions.c.ended_at.is_(None)))
            .values(ended_at=now, updated_at=now)).rowcount))

    # --- resources released when a session's run ends (tasks/sessions/resources.py, flows/resources.py)

    def track_process(self, session_key: str, pid: int, run_id: str, *, label: str | None = None) -> Resource:
        """Kill this process (when it still carries FLOWLEDGER_RUN_ID=<run_id>) when the session's run ends."""
        key = required_key(session_key)
        number, marker = session_resources.validate_process(pid, run_id)
        now = self.clock.now()
        return self.db.transact(lambda conn: session_resources.register(
            conn, key, now, kind=session_resources.PROCESS, pid=number, run_marker=marker, label=label))

    def track_cleanup(self, session_key: str, argv: Sequence[str], *, label: str | None = None) -> Resource:
        """Run this command (e.g. closing a browser tab) when the session's run ends; killed if it hangs."""
        key = required_key(session_key)
        command = session_resources.validate_argv(argv)
        now = self.clock.now()
        return self.db.transact(lambda conn: session_resources.register(
            conn, key, now, kind=session_resources.COMMAND, argv=command, label=label))

    def resources(self, session_key: str) -> list[Resource]:
        """Every resource tracked for the session, released or not, in registration order."""
        key = required_key(session_key)
        with self.db.read() as conn:
            return session_resources.listed(conn, key)
