"""Health: what the ledger knows about itself.

Owns backing (is an active task's runtime still there? backing.py), the projection of lost work (projection.py,
cron_recovery.py), maintenance (the sweep: reconcile, retention, prune; maintenance.py), the audit and its typed
findings (audit.py, findings.py), the counts and boards that `status` shows (summary.py, board.py,
status_card.py) and the projected task listings (listing.py).
May import: tasks.core, tasks.runs (liveness), tasks.sessions.
"""
