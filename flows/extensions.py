"""Where the upper layers attach their TaskHooks to a ledger's TaskService. Each layer adds one line."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowledger.flows.ledger import Ledger


def install(ledger: Ledger) -> None:
    # Order matters: flow sync runs inside the task's transaction before delivery looks at the owner.
    _ = ledger
    from flowledger.flows.mirror import FlowHooks

    ledger.tasks.hooks.members.insert(0, FlowHooks())
    from flowledger.tasks.core.config import load_config
    from flowledger.tasks.delivery.dispatch import DeliveryHooks

    delivery = DeliveryHooks.from_config(ledger.tasks, load_config(ledger.state_dir))
    # What a short-lived notice sender needs to open this same ledger (tasks/delivery/outbox.py).
    delivery.state_dir = ledger.state_dir
    delivery.database_url = ledger.db.engine.url.render_as_string(hide_password=False)
    ledger.tasks.hooks.members.append(delivery)
    from flowledger.tasks.delivery.generation import GenerationHooks

    ledger.tasks.hooks.members.append(GenerationHooks(ledger.tasks, delivery))
