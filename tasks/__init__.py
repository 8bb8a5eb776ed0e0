"""The ledger of tasks, in five rooms; every arrow points down (delivery → sessions → core, health → core):

    core/      the records and their lifecycle: schema, database, states, store, task service
    runs/      the run registry the gateway works through: leases, run contexts, the queue, cron runs, liveness
    sessions/  the session registry: routes, system events, resources, the sweep of ended sessions
    health/    backing, the projection of lost work, maintenance, audit, status counts and listings
    delivery/  telling the requester: rules, messages, channels, notices, wakes, the notice outbox

Each room's __init__ says what it owns and what it may import; CI checks it (pyproject.toml [tool.importlinter]).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

# The flat module paths of before the rooms (`flowledger.tasks.states`, `flowledger.tasks.errors`, …) were shown in
# docs and used by callers: they stay importable, as the very module objects of their new homes. A meta-path
# finder is the one way to alias a submodule path without keeping a shim file per module; it costs a dict lookup
# per import and only answers for these names.
_MOVED: dict[str, str] = {
    **{name: f"core.{name}" for name in (
        "errors", "ids", "clock", "states", "durations", "limits", "dburl", "prefixes", "sessionkeys", "tables",
        "filemodes", "db", "models", "rules", "store", "flowlinks", "service", "bulk", "generation", "config",
        "childenv")},
    "liveness": "runs.liveness", "cron_followup": "runs.cron_followup",
    "session_events": "sessions.events", "session_routes": "sessions.routes", "session_sweep": "sessions.sweep",
    "session_resources": "sessions.resources",
    **{name: f"health.{name}" for name in (
        "findings", "audit", "backing", "board", "cron_recovery", "maintenance", "projection", "summary",
        "listing", "status_card")},
    "channels": "delivery.channels", "messages": "delivery.messages", "delivery_notices": "delivery.notices",
    "delivery_rules": "delivery.rules", "delivery_wakes": "delivery.wakes", "outbox": "delivery.outbox",
    "delivery_outbox": "delivery.sender", "generation_delivery": "delivery.generation",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        prefix, _, name = fullname.rpartition(".")
        if prefix != __name__ or name not in _MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(f"{__name__}.{_MOVED[spec.name.rpartition('.')[2]]}")

    def exec_module(self, module: ModuleType) -> None:
        """The module is its new home's, already executed."""


sys.meta_path.append(_MovedModuleFinder())
