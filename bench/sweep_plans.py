"""The plans of the set-based prune's statements on a seeded ledger (the notes in docs/performance.md).

    python bench/sweep_plans.py URL NOW_ISO
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, create_engine, delete, select

from flowledger.tasks.core.tables import task_events, task_runs
from flowledger.tasks.health import maintenance, prune


def explain(conn: Connection, statement: Any) -> list[str]:
    compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    processors = compiled._bind_processors
    values = {k: processors[k](v) if k in processors else v for k, v in params.items()}
    if conn.dialect.name == "sqlite":
        args: Any = tuple(values[k] for k in compiled.positiontup)
        return [str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), args)]
    return [str(r[0]) for r in conn.exec_driver_sql("EXPLAIN " + str(compiled), values)]


def main() -> None:
    url, now = sys.argv[1], datetime.fromisoformat(sys.argv[2])
    engine = create_engine(url)
    due = maintenance.due(now)
    c = task_runs.c
    with engine.connect() as conn:
        first = prune.batch_bound(conn, due, None, 500)
        assert first is not None
        bound_stmt = (select(c.cleanup_after, c.seq).where(prune._range(due, first, None))
                      .order_by(c.cleanup_after, c.seq).offset(499).limit(1))
        doomed = select(c.task_id).where(prune._range(due, first, first)).scalar_subquery()
        for label, stmt in (("batch bound", bound_stmt),
                            ("events", delete(task_events).where(task_events.c.task_id.in_(doomed))),
                            ("tasks", delete(task_runs).where(prune._range(due, first, first)))):
            print(f"-- {label}")
            for line in explain(conn, stmt):
                print("  ", line)


if __name__ == "__main__":
    main()
