"""Sessions: the conversations work is asked from and reported to.

Owns the session registry's rows: stored delivery routes and a session's end (routes.py, the `ledger.sessions`
door), queued system events and wakes (events.py), the resources a session's run holds until it ends
(resources.py) and the sweep of ended sessions (sweep.py).
May import: tasks.core.
"""
