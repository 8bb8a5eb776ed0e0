"""What `flowledger run` answers for a finished task (CONTRACT §7): its exit status, as a shell expects.

The cli runtime records how a command ended in the task's status and error (`exit code 3: …`, `killed by
SIGKILL`, `cannot start 'x': …`); this reads that record back. 0 when the task succeeded; the command's own
code when it failed; 124 when it timed out and 130 when it was cancelled (the codes `timeout(1)` and a shell
use); 128 + N when a signal N killed it; 127 when it could not start; 1 for anything else that did not
succeed (a failed agent run, a lost task).
"""

from __future__ import annotations

import re
import signal

from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import TaskStatus, is_terminal

EXIT_TIMED_OUT = 124
EXIT_CANCELLED = 130
EXIT_CANNOT_START = 127
_EXIT_CODE = re.compile(r"^exit code (\d+)\b")
_KILLED = re.compile(r"^killed by (SIG[A-Z0-9]+)\b")


def exit_code_of(task: Task) -> int | None:
    """The exit status `run` ends with for `task`; None while it has not ended."""
    if not is_terminal(task.status):
        return None
    if task.status == TaskStatus.SUCCEEDED:
        return 0
    if task.status == TaskStatus.TIMED_OUT:
        return EXIT_TIMED_OUT
    if task.status == TaskStatus.CANCELLED:
        return EXIT_CANCELLED
    error = task.error or ""
    if task.status == TaskStatus.FAILED:
        if (found := _EXIT_CODE.match(error)) is not None:
            return min(255, int(found.group(1))) or 1
        if (killed := _KILLED.match(error)) is not None:
            try:
                return 128 + int(signal.Signals[killed.group(1)])
            except KeyError:
                return 1
        if error.startswith("cannot start"):
            return EXIT_CANNOT_START
    return 1
