"""Where the upper layers attach their TaskHooks to a ledger's TaskService. Each layer adds one line."""

from __future__ import annotations

from pathlib import Path

from flowledger.flows.mirror import FlowHooks
from flowledger.tasks.core.config import load_config
from flowledger.tasks.core.db import Database
from flowledger.tasks.core.service import TaskService
from flowledger.tasks.delivery.dispatch import DeliveryHooks
from flowledger.tasks.delivery.generation import GenerationHooks


def install(tasks: TaskService, db: Database, state_dir: Path) -> None:
    """Order matters: flow sync runs inside the task's transaction before delivery looks at the owner."""
    tasks.hooks.members.insert(0, FlowHooks())
    delivery = DeliveryHooks.from_config(tasks, load_config(state_dir))
    # What a short-lived notice sender needs to open this same ledger (tasks/delivery/outbox.py).
    delivery.state_dir = state_dir
    delivery.database_url = db.engine.url.render_as_string(hide_password=False)
    tasks.hooks.members.append(delivery)
    tasks.hooks.members.append(GenerationHooks(tasks, delivery))
