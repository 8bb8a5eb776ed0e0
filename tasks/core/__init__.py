"""The task core: the records and their lifecycle.

Owns the schema (tables.py) and the database handle (db.py: engines, `transact`, migrations), the states and the
transition guard derived from them (states.py), the store's compare-and-set plus event row (store.py), the task
service (service.py, bulk.py), parent-flow links, ids, clocks, limits and errors, and the config file.
May import: nothing of flowledger outside this room. Every other room builds on it.
"""
