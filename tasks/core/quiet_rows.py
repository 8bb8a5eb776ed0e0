"""The kinds of task row an audit flags that no other index finds (schema 7), kept apart from tables.py so the
lean SQLite door (tasks/health/sqlite_reads.py) reads the same SQL text without importing the schema classes."""

from __future__ import annotations

# Rows the audit flags that no other index finds: a failed delivery someone wants to hear of, timestamps out of
# order, a terminal row without its cleanup stamp. Each is a partial index over `seq`, empty on a healthy ledger,
# so `status` finds them without reading every row (tasks/health/projection.py). The same SQL text is the index's WHERE
# and the query's, so both engines see that the index answers it; the active statuses are queued and running.
# `+cleanup_after` (unary plus, a no-op) keeps SQLite's planner off the cleanup index, whose NULL range holds every
# active row, so that it takes the partial index, which holds none.
QUIET_ROW_KINDS = {
    "idx_task_runs_undelivered": "delivery_status = 'failed' AND notify_policy <> 'silent'",
    "idx_task_runs_started_early": "started_at < created_at",
    "idx_task_runs_ended_early": "ended_at < started_at",
    "idx_task_runs_unstamped": "+cleanup_after IS NULL AND status NOT IN ('queued', 'running')",
}
