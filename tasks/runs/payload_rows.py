"""The `task_payloads` row of a queued command: what a gateway runs for it.

Shared by the run queue (tasks/runs/queue.py) and the lean SQLite door (flows/lean_writes.py), so a payload is
the same row whichever door wrote it. No SQLAlchemy here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta


def payload_values(task_id: str, argv: Sequence[str], *, shell: bool = False, timeout: timedelta | None = None,
                   cwd: str | None = None) -> dict[str, object]:
    """The column values of `task_id`'s payload (`claimed_by` starts empty: no gateway holds it yet)."""
    timeout_ms = int(timeout.total_seconds() * 1000) if timeout is not None else None
    return {"task_id": task_id, "argv_json": json.dumps(list(argv)), "shell": shell, "timeout_ms": timeout_ms,
            "cwd": cwd}
