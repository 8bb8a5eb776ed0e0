"""A graph flow's definition for the board's drawing: the flow file stored in the flow's state.

The per-step view itself (status, attempts, times) is `tasks flow show --json`'s `steps` (flows/steps.py via
flows/documents.py); the board only adds where each step sits, from the definition's `needs`.
"""

from __future__ import annotations

from collections.abc import Mapping

from flowledger.flows.definitions import FlowDefinition, flow_from_document
from flowledger.flows.models import Flow
from flowledger.tasks.core.errors import FlowledgerError


def definition_of(flow: Flow) -> FlowDefinition | None:
    """The flow file a graph flow was made from, or None for flows that are not graph flows."""
    state = flow.state if isinstance(flow.state, dict) else None
    document = state.get("definition") if state else None
    if not isinstance(document, Mapping):
        return None
    try:
        return flow_from_document(document, source=f"flow {flow.flow_id}")
    except FlowledgerError:  # a definition this version cannot read: show the flow without its graph
        return None
