"""Timing knobs of the gateway and runtimes. Production values are the constants; the environment
variables exist so end-to-end tests can shrink them (documented in docs/gateway.md as testing knobs)."""

from __future__ import annotations

import os
from datetime import timedelta

from flowledger.tasks.runs.liveness import LEASE_RENEW_EVERY, LEASE_TTL

SWEEP_EVERY = timedelta(seconds=60)
SWEEP_FIRST_AFTER = timedelta(seconds=5)
CHECKPOINT_EVERY = timedelta(minutes=30)
SESSION_PRUNE_EVERY = timedelta(minutes=10)
QUEUE_POLL_EVERY = timedelta(seconds=1)
CRON_RELOAD_EVERY = timedelta(seconds=2)
MAX_PARALLEL_RUNS = 8
MAX_FLOWS = 8


def _ms(name: str, default: timedelta) -> timedelta:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        return default
    return timedelta(milliseconds=value) if value > 0 else default


def lease_ttl() -> timedelta:
    return _ms("FLOWLEDGER_LEASE_TTL_MS", LEASE_TTL)


def lease_renew_every() -> timedelta:
    # Renew well inside the TTL even when a test shrinks it.
    return min(_ms("FLOWLEDGER_LEASE_RENEW_MS", LEASE_RENEW_EVERY), lease_ttl() / 4)


def sweep_every() -> timedelta:
    return _ms("FLOWLEDGER_SWEEP_INTERVAL_MS", SWEEP_EVERY)


def sweep_first_after() -> timedelta:
    return _ms("FLOWLEDGER_SWEEP_FIRST_MS", SWEEP_FIRST_AFTER)


def max_parallel_runs() -> int:
    raw = os.environ.get("FLOWLEDGER_MAX_PARALLEL_RUNS", "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else MAX_PARALLEL_RUNS


def max_flows() -> int:
    """How many detached flows one gateway drives at once (`gateway --max-flows` wins over this)."""
    raw = os.environ.get("FLOWLEDGER_MAX_FLOWS", "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else MAX_FLOWS
