"""`models.flow_from_values` builds the Flow the dataclass constructor builds (same fields, equal, hashable alike,
still frozen), and the shared row mapping (flows/flow_rows.py) gives the Flow it gave through the constructor,
enum values and bad stored values included."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from flowledger.flows import flow_rows
from flowledger.flows.models import FLOW_FIELDS, LEGACY_CONTROLLER, Flow, FlowStatus, SyncMode, flow_from_values
from flowledger.tasks.core.errors import InvalidPersistedValueError
from flowledger.tasks.core.models import DeliveryOrigin
from flowledger.tasks.core.states import NotifyPolicy

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def _full() -> Flow:
    """A flow whose every field holds a value distinct from every other field's."""
    return Flow(flow_id="f-1", sync_mode=SyncMode.MANAGED, owner_key="owner", status=FlowStatus.BLOCKED,
                notify_policy=NotifyPolicy.DONE_ONLY, goal="goal", created_at=T0, updated_at=T0 + timedelta(seconds=1),
                revision=3, controller_id="ctl", current_step="step", blocked_task_id="t-9", blocked_summary="why",
                state={"n": 1}, wait={"kind": "task"}, cancel_requested_at=T0 + timedelta(seconds=2),
                ended_at=T0 + timedelta(seconds=3), requester_origin=DeliveryOrigin(channel="c", to="x"))


def _row(flow: Flow, **changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "flow_id": flow.flow_id, "sync_mode": "managed", "owner_key": "owner", "requester_origin_json":
        '{"channel": "c", "to": "x"}', "controller_id": "ctl", "revision": 3, "status": "blocked",
        "notify_policy": "done_only", "goal": "goal", "current_step": "step", "blocked_task_id": "t-9",
        "blocked_summary": "why", "state_json": '{"n": 1}', "wait_json": '{"kind": "task"}',
        "cancel_requested_at": flow.cancel_requested_at, "created_at": flow.created_at,
        "updated_at": flow.updated_at, "ended_at": flow.ended_at}
    return {**row, **changes}


def test_flow_from_values_equals_the_constructor() -> None:
    flow = _full()
    built = flow_from_values(getattr(flow, name) for name in FLOW_FIELDS)
    assert built == flow and hash(built.flow_id) == hash(flow.flow_id)
    assert dataclasses.asdict(built) == dataclasses.asdict(flow)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.status = FlowStatus.RUNNING  # type: ignore[misc]
    with pytest.raises(ValueError):  # every field, always: a short tuple is refused, never half a Flow
        flow_from_values(getattr(flow, name) for name in FLOW_FIELDS[:-1])


def test_the_row_mapping_fills_every_field_in_order() -> None:
    flow = _full()
    assert flow_rows.mapping_to_flow(_row(flow)) == flow
    # the restore rules: no controller on a managed flow, no updated_at, a negative revision, absent JSON
    legacy = flow_rows.mapping_to_flow(_row(flow, controller_id=" ", updated_at=None, revision=-2, state_json=None,
                                            wait_json=None, requester_origin_json=None))
    assert legacy == dataclasses.replace(flow, controller_id=LEGACY_CONTROLLER, updated_at=flow.created_at,
                                         revision=0, state=flow_rows.ABSENT, wait=flow_rows.ABSENT,
                                         requester_origin=None)


@pytest.mark.parametrize("column", ["status", "notify_policy"])
def test_a_bad_stored_enum_names_its_column(column: str) -> None:
    with pytest.raises(InvalidPersistedValueError) as err:
        flow_rows.mapping_to_flow(_row(_full(), **{column: "bogus"}))
    assert column in str(err.value.message)
