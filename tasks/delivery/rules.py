"""Who is told and by which path (REFERENCE §4.2–4.4, SPEC §3): eligibility, the owner, the direct-path rules
and the sub-agent route fill. Reads only; the claim-and-settle machinery is tasks/delivery/dispatch.py.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from sqlalchemy import Connection, select

from flowledger.tasks.core import rules, store
from flowledger.tasks.core.models import DeliveryOrigin, Task
from flowledger.tasks.core.sessionkeys import ChatType, chat_type
from flowledger.tasks.core.states import Runtime, ScopeKind, TaskStatus
from flowledger.tasks.core.tables import flow_runs
from flowledger.tasks.delivery import messages
from flowledger.tasks.sessions.routes import complete_route, read_route


@dataclass(frozen=True, slots=True)
class Owner:
    session_key: str
    origin: DeliveryOrigin | None
    flow_id: str | None = None


def resolve_owner(conn: Connection, task: Task) -> Owner | None:
    """REFERENCE §4.3: the parent flow's owner when it matches, else the task's own owner session."""
    if task.scope_kind != ScopeKind.SESSION:
        return None
    if task.parent_flow_id:
        row = conn.execute(select(flow_runs.c.owner_key, flow_runs.c.requester_origin_json)
                           .where(flow_runs.c.flow_id == task.parent_flow_id)).first()
        if row is not None and row.owner_key == task.owner_key:
            origin = None
            if row.requester_origin_json:
                try:
                    origin = DeliveryOrigin.from_mapping(json.loads(row.requester_origin_json))
                except ValueError:
                    origin = None
            return Owner(row.owner_key, origin or task.requester_origin, task.parent_flow_id)
    return Owner(task.owner_key, task.requester_origin) if task.owner_key else None


def direct_possible(owner: Owner) -> bool:
    """Group and channel sessions answer through their parent agent; otherwise a channel and a target suffice."""
    if chat_type(owner.session_key) in (ChatType.GROUP, ChatType.CHANNEL):
        return False
    return complete_route(owner.origin)


def parent_review(task: Task) -> bool:
    """An ACP success with a child session goes to the parent for review before anyone calls it done."""
    return (task.runtime == Runtime.ACP and task.status == TaskStatus.SUCCEEDED and not messages.is_blocked(task)
            and bool((task.child_session_key or "").strip()))


def review_may_go_direct(origin: DeliveryOrigin | None) -> bool:
    return (origin is not None and origin.channel == "discord" and origin.to.startswith("channel:")
            and bool(origin.thread_id))


def suppressed_duplicate(conn: Connection, task: Task) -> bool:
    """Two ACP records of one run in one scope announce once: only the preferred one speaks."""
    if task.runtime != Runtime.ACP or not task.run_id:
        return False

    def scope(t: Task) -> tuple[object, ...]:
        return (t.runtime, t.scope_kind, t.owner_key, (t.child_session_key or "").strip())

    peers = [t for t in store.by_run_id(conn, task.run_id) if scope(t) == scope(task)]
    chosen = rules.preferred(peers)
    return chosen is not None and chosen.task_id != task.task_id


# --- the sub-agent route fill (SPEC §3) ------------------------------------------------------------------


def fill_origin(origin: DeliveryOrigin, route: DeliveryOrigin | None) -> DeliveryOrigin:
    """Complete `origin`'s missing `to`/account from a stored route of the same channel (pure).

    The origin's own fields always win, its thread included (bound thread/topic routing is kept). Fields stay
    paired with their target: the route's account is taken only for the route's own `to`, and the route's
    thread only when the route supplied the `to` as well.
    """
    if route is None or route.channel.strip().lower() != origin.channel.strip().lower():
        return origin
    to = origin.to or route.to
    account = origin.account_id or (route.account_id if route.to == to else None)
    thread = origin.thread_id or (route.thread_id if not origin.to else None)
    return dataclasses.replace(origin, to=to, account_id=account, thread_id=thread)


def fill_from_requester_route(conn: Connection, task: Task, owner: Owner) -> Owner:
    """A sub-agent completion whose origin has a channel but lacks `to`/account is completed from the
    requester session's own stored route. Other runtimes, and owners other than the requester session, keep
    their origin as it is: a route is never read across sessions."""
    origin = owner.origin
    if (task.runtime != Runtime.SUBAGENT or owner.session_key != task.requester_session_key or origin is None
            or not origin.channel or (origin.to and origin.account_id)):
        return owner
    filled = fill_origin(origin, read_route(conn, task.requester_session_key))
    return owner if filled == origin else dataclasses.replace(owner, origin=filled)
