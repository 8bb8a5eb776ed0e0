"""Operator controls of cron jobs: pause, resume, and trigger (run once now, recorded like any run).

The controls are stored by the run registry (tasks/runs/cron_controls.py; schema version 6). A running
gateway reads them on its 2-second cron reload: a paused job is unloaded (its schedule keeps, nothing fires),
a resumed one is loaded again, and a trigger request is taken (compare-and-set, so exactly one gateway runs
it) and fired at once on the cron executor. With no gateway running, `cron trigger` runs the job in its own
process under a short-lived lease, exactly as the gateway would.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the façade is only a parameter type here
    from flowledger.flows.ledger import Ledger


def set_paused(ledger: Ledger, job_id: str, paused: bool) -> bool:
    """Pause or resume; False when the job already was in that state."""
    return ledger.runs.cron.controls.set_paused(job_id, paused)


def paused_at(ledger: Ledger) -> dict[str, datetime]:
    """job id -> when it was paused, for every paused job."""
    return ledger.runs.cron.controls.paused_at()


def request_trigger(ledger: Ledger, job_id: str) -> None:
    ledger.runs.cron.controls.request_trigger(job_id)


def take_triggers(ledger: Ledger) -> list[str]:
    """The jobs whose trigger was requested, each taken by exactly one caller."""
    return ledger.runs.cron.controls.take_triggers()


def forget(ledger: Ledger, job_id: str) -> None:
    """A removed job's controls go with it."""
    ledger.runs.cron.controls.forget(job_id)
