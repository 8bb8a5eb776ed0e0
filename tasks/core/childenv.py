"""The environment a child process (a task's command, an agent, a heartbeat hook) starts with.

The parent's environment minus every `FLOWLEDGER_*` variable, plus what flowledger hands the child on purpose.
`FLOWLEDGER_DATABASE_URL` may carry a database password, and no child needs the ledger's own settings: a child
that should report back is given its task id (`FLOWLEDGER_TASK_ID`) explicitly (CONTRACT §7: never `FLOWLEDGER_*`
variables from the submitter).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

PREFIX = "FLOWLEDGER_"


def child_environment(extra: Mapping[str, str] | None = None,
                      base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) without FLOWLEDGER_* variables, then `extra` on top."""
    source = os.environ if base is None else base
    env = {name: value for name, value in source.items() if not name.upper().startswith(PREFIX)}
    env.update(extra or {})
    return env
