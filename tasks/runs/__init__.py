"""The run registry: the one door through which the gateway and its runtimes persist what they do.

`RunRegistry` (registry.py) owns gateway leases, run contexts and the session rows of the children runtimes
start, cancel checks, orphan bookkeeping and checkpoints; `RunQueue` (queue.py) the durable queue of work a
gateway claims; `CronRuns` (cron.py) cron jobs and the bookkeeping of their runs; `Leadership` (leader.py)
which gateway sweeps. The scheduler reaches the database only through these (as APScheduler 4's schedulers
reach theirs only through a `DataStore`): it holds no SQL and no dialect branch. Each method's docstring is its
contract: what it writes, in how many transactions, and what it guarantees when gateways race.

Also here: run liveness (liveness.py: gateway leases and the runs they own, which every process reads to decide
`lost` the same way) and the follow-up of isolated cron runs (cron_followup.py).
May import: tasks.core and tasks.sessions (a cron run's session sweep).
"""


from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowledger.tasks.runs.cron import CronJobRecord, CronRuns
    from flowledger.tasks.runs.queue import Payload, RunQueue
    from flowledger.tasks.runs.registry import Orphan, RunRegistry

__all__ = ["CronJobRecord", "CronRuns", "Orphan", "Payload", "RunQueue", "RunRegistry"]
# Resolved on first use: the lean SQLite door imports wakeup.py and payload_rows.py from this package, and these
# bring SQLAlchemy and the schema with them.
_HOME = {"CronJobRecord": "cron", "CronRuns": "cron", "Payload": "queue", "RunQueue": "queue",
         "Orphan": "registry", "RunRegistry": "registry"}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
