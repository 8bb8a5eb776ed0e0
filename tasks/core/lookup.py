"""Finding a task by what an operator or a producer calls it."""

from __future__ import annotations

from sqlalchemy import Connection

from flowledger.tasks.core import prefixes, rules, store
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.tables import task_runs


def lookup_task(conn: Connection, lookup: str) -> Task | None:
    """Task id, then run id (preferred task), then the newest task of that owner or child session, then a
    unique task id prefix (CONTRACT §7; AmbiguousLookupError when several ids start so)."""
    token = (lookup or "").strip()
    if not token:
        return None
    found = store.get(conn, token)
    if found is not None:
        return found
    by_run = rules.preferred(store.by_run_id(conn, token))
    if by_run is not None:
        return by_run
    related = store.newest_related(conn, token)
    if related is not None:
        return related
    task_id = prefixes.unique_id(conn, task_runs.c.task_id, token, "tasks")
    return store.get(conn, task_id) if task_id is not None else None
