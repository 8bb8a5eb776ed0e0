"""Whether a committed task write leaves a notice due (REFERENCE §4.2): the two predicates delivery decides on.

Apart from tasks/delivery/rules.py and notices.py (which read and write the database) so that the lean SQLite
door (flows/lean_writes.py) can ask, without SQLAlchemy, whether a write of its own would have anything to
deliver, and leave every such write to the full path.
"""

from __future__ import annotations

from flowledger.tasks.core.models import Task, TaskEvent
from flowledger.tasks.core.states import DeliveryStatus, NotifyPolicy, Runtime, TaskStatus, is_terminal

# The events a `state_changes` owner hears about while the task runs.
STATE_CHANGE_KINDS = frozenset({TaskStatus.RUNNING.value, "progress"})


def terminal_eligible(task: Task) -> bool:
    """REFERENCE §4.2: not silent; subagent only when cancelled; terminal; still pending."""
    return (
        task.notify_policy != NotifyPolicy.SILENT
        and (task.runtime != Runtime.SUBAGENT or task.status == TaskStatus.CANCELLED)
        and is_terminal(task.status)
        and task.delivery_status == DeliveryStatus.PENDING
    )


def state_change_due(task: Task, event: TaskEvent) -> bool:
    """A `running` or progress event of a `state_changes` task whose delivery is still pending."""
    return (task.notify_policy == NotifyPolicy.STATE_CHANGES and task.delivery_status == DeliveryStatus.PENDING
            and not is_terminal(task.status) and event.kind in STATE_CHANGE_KINDS)
