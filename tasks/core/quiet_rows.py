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

# The active rows `status`, `tasks list` and the sweep must look at (schema 8): past the lost grace (the shortest
# threshold measured from a task's last activity), cron (recovered from the run log without a grace) or already
# ended (an audit finding). One partial expression index over the active rows orders them by the time from
# which they need a look — their activity, or the earliest time a ledger holds for cron and ended rows — so
# "every such row" is one index range below `now − grace` instead of a walk of every active row (90,000 of them
# at a million records) testing `coalesce(...)` on each. The same SQL text is the index's and the queries', so
# both engines match the expression; `ACTIVE_DUE_WHERE` with the named parameter `b_stale_before` (epoch ms).
ACTIVE_DUE_INDEX = "idx_task_runs_active_due"
ACTIVE_ROWS = "status IN ('queued', 'running')"
EARLIEST_MS = -62_135_596_800_000  # 0001-01-01T00:00Z, the earliest datetime: below every cutoff
ACTIVE_DUE = (f"CASE WHEN runtime = 'cron' OR ended_at IS NOT NULL THEN {EARLIEST_MS} "
              "ELSE coalesce(last_event_at, started_at, created_at) END")
ACTIVE_DUE_WHERE = f"{ACTIVE_ROWS} AND ({ACTIVE_DUE}) <= :b_stale_before"
