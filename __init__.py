"""flowledger: a durable ledger of background work, and Task Flow on top of it.

    from flowledger import Ledger, FrozenClock
    with Ledger.open() as ledger:
        ledger.tasks.create(runtime="cli", task="nightly export", owner_key="agent:main:main")
"""

from __future__ import annotations

import importlib  # the PEP 562 hook below imports each name's module on first use (keeps `--help` fast)
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names, eagerly, for type checkers and IDEs; at run time __getattr__ loads them
    from flowledger.flows.health import AuditReport, MaintenanceReport
    from flowledger.flows.ledger import Ledger
    from flowledger.flows.models import Flow, FlowCancelResult, FlowStatus, FlowUpdate, RunTaskResult, SyncMode
    from flowledger.tasks.core.clock import Clock, FrozenClock, SystemClock
    from flowledger.tasks.core.errors import (
        FlowledgerError,
        FlowNotFoundError,
        InvalidInputError,
        OperationRefusedError,
        ParentFlowLinkError,
        StorageUnavailableError,
        TaskNotFoundError,
    )

    # The names of before the `Error` rule (issue 13), re-exported explicitly: the same classes.
    from flowledger.tasks.core.errors import FlowNotFound as FlowNotFound
    from flowledger.tasks.core.errors import InvalidInput as InvalidInput
    from flowledger.tasks.core.errors import OperationRefused as OperationRefused
    from flowledger.tasks.core.errors import StorageUnavailable as StorageUnavailable
    from flowledger.tasks.core.errors import TaskNotFound as TaskNotFound
    from flowledger.tasks.core.models import DeliveryOrigin, Task, TaskEvent
    from flowledger.tasks.core.service import CancelResult
    from flowledger.tasks.core.states import (
        DeliveryStatus,
        NotifyPolicy,
        Runtime,
        ScopeKind,
        TaskStatus,
        TerminalOutcome,
    )
    from flowledger.tasks.health.summary import Summary

# Each façade name and the module that defines it. Loaded on first access (PEP 562) so that importing any
# flowledger submodule -- the CLI's `--help` above all -- does not pay for SQLAlchemy, sqlmodel and the
# health stack before it needs them.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["AuditReport", "MaintenanceReport"], "flowledger.flows.health"),
    "Ledger": "flowledger.flows.ledger",
    **dict.fromkeys(["Flow", "FlowCancelResult", "FlowStatus", "FlowUpdate", "RunTaskResult", "SyncMode"],
                    "flowledger.flows.models"),
    **dict.fromkeys(["Clock", "FrozenClock", "SystemClock"], "flowledger.tasks.core.clock"),
    # Every exception ends in `Error`; the names of before that rule (issue 13) stay exported, the same classes.
    **dict.fromkeys(["FlowledgerError", "FlowNotFoundError", "InvalidInputError", "OperationRefusedError",
                     "ParentFlowLinkError", "StorageUnavailableError", "TaskNotFoundError",
                     "FlowNotFound", "InvalidInput", "OperationRefused", "StorageUnavailable", "TaskNotFound"],
                    "flowledger.tasks.core.errors"),
    **dict.fromkeys(["DeliveryOrigin", "Task", "TaskEvent"], "flowledger.tasks.core.models"),
    "CancelResult": "flowledger.tasks.core.service",
    **dict.fromkeys(["DeliveryStatus", "NotifyPolicy", "Runtime", "ScopeKind", "TaskStatus", "TerminalOutcome"],
                    "flowledger.tasks.core.states"),
    "Summary": "flowledger.tasks.health.summary",
}

# Hidden from type checkers, which see the imports above instead: a visible module `__getattr__` would type
# every misspelt `flowledger.<name>` as Any.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        module = _EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later lookups skip this hook
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *_EXPORTS})


__all__ = [
    "AuditReport",
    "CancelResult",
    "Clock",
    "DeliveryOrigin",
    "DeliveryStatus",
    "Flow",
    "FlowCancelResult",
    "FlowNotFoundError",
    "FlowStatus",
    "FlowUpdate",
    "FlowledgerError",
    "FrozenClock",
    "InvalidInputError",
    "Ledger",
    "MaintenanceReport",
    "NotifyPolicy",
    "OperationRefusedError",
    "ParentFlowLinkError",
    "RunTaskResult",
    "Runtime",
    "ScopeKind",
    "StorageUnavailableError",
    "Summary",
    "SyncMode",
    "SystemClock",
    "Task",
    "TaskEvent",
    "TaskNotFoundError",
    "TaskStatus",
    "TerminalOutcome",
]
__version__ = "0.1.0"
