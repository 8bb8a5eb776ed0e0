"""What every runtime is to the gateway: one protocol that `cli`, `subagent`, `acp` and `cron` implement.

The gateway keeps its runtimes in a `dict[Runtime, RuntimeImpl]`; the queue and the flow driver hand work to the
runtime a task names, the registry's cancel path reaches the same object, and shutdown stops them all. mypy
--strict checks each implementation against this protocol (scheduler/runtimes/conformance.py), so a runtime that
drifts from the interface fails the type check rather than hanging a step at run time.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Protocol

from flowledger.tasks.core.models import Task

SHUTDOWN_REASON = "Cancelled: the gateway shut down."


class RuntimeImpl(Protocol):
    """A runtime: starts a task's work, supervises it to a terminal status recorded through `ledger.tasks`, and
    stops it on request.

    - `start(task, argv, *, shell, timeout, cwd, env, inherit_env, **options)`: begin the work and return at
      once. Raises `LaunchFailedError` (launch.py), having recorded nothing, when it cannot start here (no such
      program or directory); the caller records the failure. `options` carry what one runtime alone takes
      (an acp step's `mode`); a runtime ignores none silently that changes what runs.
    - `cancel(task, reason)`: stop the task's work if this runtime runs it; None when stopped (or nothing ran
      here, so the registry may record the cancel), else the refusal reason (REFERENCE §3.6).
    - `running_count()`: how many tasks this runtime is running now.
    - `wait(task_id, timeout)`: the task as stored once its run here ended (None on timeout); a task this
      runtime never ran is returned as stored at once.
    - `shutdown(reason)`: stop everything it runs (recorded `cancelled` with `reason`) and wait for the records.
    - `stop_orphan(run_id)`: stop the process of a run whose supervisor died, when this host can prove which it
      is (orphans.py); True when one was stopped. The flow controller uses it when it adopts a flow.
    """

    gateway_id: str

    def start(self, task: Task, argv: list[str], *, shell: bool = False, timeout: timedelta | None = None,
              cwd: str | None = None, env: dict[str, str] | None = None, inherit_env: bool = True,
              **options: Any) -> None: ...

    def cancel(self, task: Task, reason: str | None) -> str | None: ...

    def running_count(self) -> int: ...

    def wait(self, task_id: str, timeout: float | None = None) -> Task | None: ...

    def shutdown(self, reason: str = SHUTDOWN_REASON) -> None: ...

    def stop_orphan(self, run_id: str) -> bool: ...
