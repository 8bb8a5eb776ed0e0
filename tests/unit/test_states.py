"""The pure state machine: every (status, next status) pair, the predecessor sets and the event mapping."""

from __future__ import annotations

import itertools

import pytest

from flowledger.tasks.core.errors import InvalidInput
from flowledger.tasks.core.states import (
    ACTIVE,
    FAILURES,
    TERMINAL,
    NotifyPolicy,
    Runtime,
    TaskStatus,
    allowed_predecessors,
    can_cancel,
    can_mark_lost,
    is_active,
    is_terminal,
    lifecycle_outcome,
    parse_enum,
    should_apply,
)

Q, R, S, F, T, C, L = (TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.SUCCEEDED, TaskStatus.FAILED,
                       TaskStatus.TIMED_OUT, TaskStatus.CANCELLED, TaskStatus.LOST)

# REFERENCE §3.3 written out by hand, row = current, column = next; True means the update applies.
EXPECTED: dict[TaskStatus, dict[TaskStatus, bool]] = {
    Q: {Q: True, R: True, S: True, F: True, T: True, C: True, L: True},
    R: {Q: True, R: True, S: True, F: True, T: True, C: True, L: True},
    S: {Q: False, R: False, S: True, F: True, T: True, C: True, L: False},
    F: {Q: False, R: False, S: False, F: True, T: False, C: False, L: False},
    T: {Q: False, R: False, S: False, F: False, T: True, C: False, L: False},
    C: {Q: False, R: False, S: False, F: False, T: False, C: True, L: False},
    L: {Q: False, R: False, S: False, F: False, T: False, C: False, L: True},
}


def test_status_sets() -> None:
    assert {Q, R} == ACTIVE
    assert {S, F, T, C, L} == TERMINAL
    assert {F, T, L} == FAILURES
    assert set(TaskStatus) == ACTIVE | TERMINAL
    for status in TaskStatus:
        assert is_active(status) != is_terminal(status)


@pytest.mark.parametrize(("current", "nxt"), list(itertools.product(TaskStatus, TaskStatus)))
def test_should_apply_every_pair(current: TaskStatus, nxt: TaskStatus) -> None:
    assert should_apply(current, nxt) is EXPECTED[current][nxt]


@pytest.mark.parametrize("nxt", list(TaskStatus))
def test_allowed_predecessors_match_table(nxt: TaskStatus) -> None:
    assert allowed_predecessors(nxt) == {cur for cur in TaskStatus if EXPECTED[cur][nxt]}


def test_allowed_predecessors_spelled_out() -> None:
    assert allowed_predecessors(Q) == {Q, R}
    assert allowed_predecessors(R) == {Q, R}
    assert allowed_predecessors(S) == {Q, R, S}
    assert allowed_predecessors(F) == {Q, R, S, F}
    assert allowed_predecessors(T) == {Q, R, S, T}
    assert allowed_predecessors(C) == {Q, R, S, C}
    assert allowed_predecessors(L) == {Q, R, L}


@pytest.mark.parametrize("status", list(TaskStatus))
def test_lost_and_cancel_only_from_active(status: TaskStatus) -> None:
    assert can_mark_lost(status) is (status in ACTIVE)
    assert can_cancel(status) is (status in ACTIVE)


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_terminal_never_goes_back_to_active(terminal: TaskStatus) -> None:
    assert not should_apply(terminal, Q)
    assert not should_apply(terminal, R)


@pytest.mark.parametrize("sticky", [F, T, C, L])
def test_success_never_downgrades_stronger_terminal(sticky: TaskStatus) -> None:
    assert not should_apply(sticky, S)


# --- lifecycle_outcome (REFERENCE §3.2 with CONTRACT §6.3) --------------------------------------------

OUTCOMES: list[tuple[str, dict[str, object], str, TaskStatus, str | None]] = [
    ("end", {}, "completed", S, None),
    ("error", {}, "failed", F, None),
    ("end", {"aborted": True}, "timed_out", T, None),
    ("end", {"aborted": False}, "completed", S, None),
    # hard timeouts win over everything
    ("end", {"timeoutPhase": "preflight"}, "hard_timeout", T, None),
    ("end", {"timeoutPhase": "provider"}, "hard_timeout", T, None),
    ("error", {"timeout_phase": "post_turn"}, "hard_timeout", T, None),
    ("end", {"timeoutPhase": "other"}, "completed", S, None),
    ("end", {"aborted": True, "providerStarted": True}, "hard_timeout", T, None),
    ("end", {"aborted": True, "providerStarted": True, "stopReason": "restart"}, "cancelled", C, None),
    ("end", {"providerStarted": True}, "completed", S, None),
    ("end", {"timeoutPhase": "provider", "livenessState": "blocked"}, "hard_timeout", T, None),
    # blocked liveness
    ("end", {"livenessState": " Blocked "}, "blocked", F, "agent run blocked"),
    ("error", {"liveness_state": "blocked", "stopReason": "aborted"}, "blocked", F, "agent run blocked"),
    # CONTRACT §6.3: abort ends timed_out, not cancelled
    ("end", {"stopReason": "aborted"}, "aborted", T, "agent run aborted"),
    ("error", {"stop_reason": "aborted"}, "aborted", T, "agent run aborted"),
    # operator / restart stops
    ("end", {"stopReason": "restart"}, "cancelled", C, None),
    ("error", {"stopReason": "rpc"}, "cancelled", C, None),
    ("error", {"stopReason": "stop"}, "cancelled", C, None),
    ("end", {"aborted": True, "stopReason": "stop"}, "cancelled", C, None),
    ("end", {"stopReason": "rpc"}, "completed", S, None),
    ("end", {"stopReason": "stop"}, "completed", S, None),
    ("error", {"stopReason": "other"}, "failed", F, None),
]


@pytest.mark.parametrize(("phase", "data", "reason", "status", "default_error"), OUTCOMES)
def test_lifecycle_outcome_table(phase: str, data: dict[str, object], reason: str, status: TaskStatus,
                                 default_error: str | None) -> None:
    outcome = lifecycle_outcome(phase, data)
    assert (outcome.reason, outcome.status, outcome.default_error) == (reason, status, default_error)


def test_parse_enum_strict() -> None:
    assert parse_enum(Runtime, " acp ", "runtime") == Runtime.ACP
    assert parse_enum(NotifyPolicy, NotifyPolicy.SILENT, "policy") is NotifyPolicy.SILENT
    with pytest.raises(InvalidInput, match=r"Invalid status 'bogus': expected one of queued\|running"):
        parse_enum(TaskStatus, "bogus", "status")
    with pytest.raises(InvalidInput):
        parse_enum(Runtime, "ACP", "runtime")
