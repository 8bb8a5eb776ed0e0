"""flowledger: a durable ledger of background work, and Task Flow on top of it.

    from flowledger import Ledger, FrozenClock
    with Ledger.open() as ledger:
        ledger.tasks.create(runtime="cli", task="nightly export", owner_key="agent:main:main")
"""

from flowledger.flows.health import AuditReport, MaintenanceReport
from flowledger.flows.ledger import Ledger
from flowledger.flows.models import Flow, FlowCancelResult, FlowStatus, FlowUpdate, RunTaskResult, SyncMode
from flowledger.tasks.clock import Clock, FrozenClock, SystemClock
from flowledger.tasks.errors import (
    FlowledgerError,
    FlowNotFound,
    InvalidInput,
    OperationRefused,
    ParentFlowLinkError,
    StorageUnavailable,
    TaskNotFound,
)
from flowledger.tasks.models import DeliveryOrigin, Task, TaskEvent
from flowledger.tasks.service import CancelResult
from flowledger.tasks.states import (
    DeliveryStatus,
    NotifyPolicy,
    Runtime,
    ScopeKind,
    TaskStatus,
    TerminalOutcome,
)
from flowledger.tasks.summary import Summary

__all__ = [
    "AuditReport",
    "CancelResult",
    "Clock",
    "DeliveryOrigin",
    "DeliveryStatus",
    "Flow",
    "FlowCancelResult",
    "FlowNotFound",
    "FlowStatus",
    "FlowUpdate",
    "FlowledgerError",
    "FrozenClock",
    "InvalidInput",
    "Ledger",
    "MaintenanceReport",
    "NotifyPolicy",
    "OperationRefused",
    "ParentFlowLinkError",
    "RunTaskResult",
    "Runtime",
    "ScopeKind",
    "StorageUnavailable",
    "Summary",
    "SyncMode",
    "SystemClock",
    "Task",
    "TaskEvent",
    "TaskNotFound",
    "TaskStatus",
    "TerminalOutcome",
]
__version__ = "0.1.0"
