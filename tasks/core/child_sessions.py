"""Whether a session key is the child session an active task runs in.

Two writers ask before they create a session row for a key (a stored route in tasks/sessions/routes.py, a
generation job's requester row in tasks/core/generation.py): a new row there would make a vanished child session
look alive again to backing (tasks/health/backing.py).
"""

from __future__ import annotations

from sqlalchemy import Connection, and_, select

from flowledger.tasks.core.states import ACTIVE
from flowledger.tasks.core.tables import task_runs


def is_active_child_session(conn: Connection, session_key: str) -> bool:
    # Backing (tasks/health/backing.py) reads "a row exists" as "the active task's child session is alive", also
    # case-insensitively; the exact and lower-cased keys both use the child_session_key index.
    keys = {session_key, session_key.lower()}
    return conn.execute(select(task_runs.c.task_id).where(and_(
        task_runs.c.child_session_key.in_(keys), task_runs.c.status.in_([s.value for s in ACTIVE]))).limit(1)
    ).first() is not None
