"""Delivery: telling the requester that work ended.

Owns the notify rules (rules.py), the messages (messages.py), the channels that send them (channels.py), the
terminal delivery of a task (dispatch.py), state-change and flow notices (notices.py), session wakes (wakes.py),
the notice outbox and its sender (outbox.py, sender.py) and the delivery of generated media (generation.py).
May import: tasks.core, tasks.sessions, tasks.runs (liveness).
"""
