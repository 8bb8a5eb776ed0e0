"""The step graph of a flow (networkx) and `Readiness`, the pure bookkeeping a flow controller runs on.

Edges point from a need to the step that needs it. `Readiness` keeps one status per step and, per step, how many
of its needs have not succeeded yet; finishing a step touches only its out-edges, so driving a flow of n steps
and e edges costs O((n + e) log n) in total. It starts nothing and knows no clock: the controller asks what may
start, starts it, and reports back. `snapshot()` is plain JSON for the flow's `state`; `Readiness.restore`
rebuilds the tracker from it after a restart.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, Protocol

import networkx as nx

from flowledger.flows.errors import (
    FlowCycleError,
    InvalidSnapshot,
    InvalidSnapshotError,
    StepTransitionError,
    UnknownStepError,
)

# The tracker's errors live in flows/errors.py and are exported from here too, where they were defined before.
__all__ = [
    "FINISHED", "NOT_STARTED_ENDINGS", "RETRYABLE", "SNAPSHOT_VERSION", "STEP_FAILURES", "FlowShape",
    "InvalidSnapshot", "InvalidSnapshotError", "Readiness", "StepShape", "StepStatus", "StepTransitionError",
    "build_graph", "find_cycle", "topological_order",
]

SNAPSHOT_VERSION = 1


class StepShape(Protocol):
    """What the graph reads of a step: a `definitions.StepDefinition` is one."""

    @property
    def id(self) -> str: ...
    @property
    def needs(self) -> tuple[str, ...]: ...
    @property
    def retries(self) -> int: ...


class FlowShape(Protocol):
    """What the graph reads of a flow: a `definitions.FlowDefinition` is one. A protocol rather than an import, so
    that the flow-file parser can check a file's `needs` with this module's graph (definitions → graph only)."""

    @property
    def steps(self) -> Sequence[StepShape]: ...
    @property
    def step_ids(self) -> tuple[str, ...]: ...
    @property
    def max_parallel(self) -> int: ...


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"  # never started because the flow stopped first (the controller's choice over cancelled)


FINISHED: frozenset[StepStatus] = frozenset(set(StepStatus) - {StepStatus.PENDING, StepStatus.RUNNING})
STEP_FAILURES: frozenset[StepStatus] = frozenset({StepStatus.FAILED, StepStatus.TIMED_OUT})
# A step that never started may only end one of these ways.
NOT_STARTED_ENDINGS: frozenset[StepStatus] = frozenset({StepStatus.CANCELLED, StepStatus.SKIPPED})
# Which outcomes a retry may follow (a cancel is an operator's decision, never retried).
RETRYABLE: frozenset[StepStatus] = STEP_FAILURES


# --- graph --------------------------------------------------------------------------------------------


def build_graph(flow: FlowShape) -> nx.DiGraph[str]:
    """Nodes in file order, one edge need → step. Raises UnknownStepError for a need that names no step."""
    graph: nx.DiGraph[str] = nx.DiGraph()
    graph.add_nodes_from(flow.step_ids)
    for step in flow.steps:
        for need in step.needs:
            if need not in graph:
                raise UnknownStepError(step.id, need, flow.step_ids)
            graph.add_edge(need, step.id)
    return graph


def find_cycle(graph: nx.DiGraph[str]) -> list[str] | None:
    """One cycle as `[a, b, c, a]` (edge direction, starting at its earliest node), or None for a DAG."""
    try:
        edges = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return None
    nodes: list[str] = [edge[0] for edge in edges]
    position = {node: index for index, node in enumerate(graph)}
    start = min(range(len(nodes)), key=lambda i: position[nodes[i]])
    nodes = nodes[start:] + nodes[:start]
    return [*nodes, nodes[0]]


def topological_order(graph: nx.DiGraph[str]) -> list[str]:
    """A topological order that prefers file order among steps free at the same time. Raises on a cycle."""
    position = {node: index for index, node in enumerate(graph)}
    try:
        return list(nx.lexicographical_topological_sort(graph, key=position.__getitem__))
    except nx.NetworkXUnfeasible:
        cycle = find_cycle(graph)
        raise FlowCycleError(cycle or []) from None


# --- readiness ----------------------------------------------------------------------------------------


class Readiness:
    """Per-step status and remaining-needs counters for one run of a flow."""

    def __init__(self, flow: FlowShape, *, max_parallel: int | None = None) -> None:
        graph = build_graph(flow)
        order = topological_order(graph)
        self._flow = flow
        self._max_parallel = max(1, max_parallel if max_parallel is not None else flow.max_parallel)
        self._rank: dict[str, int] = {step: rank for rank, step in enumerate(order)}
        self._order: tuple[str, ...] = tuple(order)
        self._needs: dict[str, tuple[str, ...]] = {s.id: s.needs for s in flow.steps}
        self._children: dict[str, tuple[str, ...]] = {
            step: tuple(sorted(graph.successors(step), key=self._rank.__getitem__)) for step in order
        }
        self._retries: dict[str, int] = {s.id: s.retries for s in flow.steps}
        self._status: dict[str, StepStatus] = dict.fromkeys(order, StepStatus.PENDING)
        self._attempts: dict[str, int] = dict.fromkeys(order, 0)
        self._remaining: dict[str, int] = {step: len(self._needs[step]) for step in order}
        self._running: set[str] = set()
        self._finished = 0
        self._halted = False
        # Ready steps: a set for membership, a heap of (rank, id) for order; stale heap entries are skipped.
        self._ready: set[str] = set()
        self._heap: list[tuple[int, str]] = []
        for step in order:
            if self._remaining[step] == 0:
                self._push_ready(step)

    # queries -------------------------------------------------------------------------------------------

    @property
    def flow(self) -> FlowShape:
        return self._flow

    @property
    def max_parallel(self) -> int:
        return self._max_parallel

    @property
    def order(self) -> tuple[str, ...]:
        """Every step id in topological order (file order among equals)."""
        return self._order

    def status(self, step_id: str) -> StepStatus:
        self._require(step_id, "read")
        return self._status[step_id]

    def statuses(self) -> dict[str, StepStatus]:
        return {step: self._status[step] for step in self._order}

    def attempts(self, step_id: str) -> int:
        """How many times the step was started (retries included)."""
        self._require(step_id, "read")
        return self._attempts[step_id]

    def running(self) -> list[str]:
        return sorted(self._running, key=self._rank.__getitem__)

    def ready(self) -> list[str]:
        """Pending steps whose needs all succeeded, in topological order (ignores max_parallel and halting)."""
        return sorted(self._ready, key=self._rank.__getitem__)

    def next_to_start(self, running_count: int | None = None) -> list[str]:
        """The ready steps to start now: at most `max_parallel - running_count`, none once the flow halted.

        `running_count` defaults to the steps this tracker has marked running. Does not change any state.
        """
        if self._halted:
            return []
        running = len(self._running) if running_count is None else running_count
        slots = self._max_parallel - running
        picked: list[tuple[int, str]] = []
        while slots > 0 and self._heap:
            entry = heapq.heappop(self._heap)
            if entry[1] not in self._ready or (picked and picked[-1] == entry):
                continue  # started, cancelled, or a duplicate entry from a retry
            picked.append(entry)
            slots -= 1
        for entry in picked:
            heapq.heappush(self._heap, entry)
        return [step for _, step in picked]

    def steps_not_started(self) -> list[str]:
        """Every pending step, in topological order: what the controller cancels after a failure."""
        return [step for step in self._order if self._status[step] == StepStatus.PENDING]

    def failed_steps(self) -> list[str]:
        return [step for step in self._order if self._status[step] in STEP_FAILURES]

    @property
    def halted(self) -> bool:
        """True once any step finished without succeeding: nothing new should start."""
        return self._halted

    def is_done(self) -> bool:
        """Every step has finished (succeeded, failed, timed out, cancelled or skipped)."""
        return self._finished == len(self._order)

    def outcome(self) -> StepStatus | None:
        """None while not done; else SUCCEEDED, FAILED (a step failed or timed out) or CANCELLED."""
        if not self.is_done():
            return None
        statuses = self._status.values()
        if any(s in STEP_FAILURES for s in statuses):
            return StepStatus.FAILED
        if all(s == StepStatus.SUCCEEDED for s in statuses):
            return StepStatus.SUCCEEDED
        return StepStatus.CANCELLED

    def retries_left(self, step_id: str) -> int:
        self._require(step_id, "read")
        return max(0, self._retries[step_id] + 1 - self._attempts[step_id])

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys((s.value for s in StepStatus), 0)
        for status in self._status.values():
            counts[status.value] += 1
        return counts

    # changes -------------------------------------------------------------------------------------------

    def mark_started(self, step_id: str) -> None:
        """A ready step starts (one more attempt)."""
        self._require(step_id, StepStatus.RUNNING.value)
        if step_id not in self._ready:
            raise StepTransitionError(step_id, self._status[step_id], "running (its needs have not all succeeded)")
        self._ready.discard(step_id)
        self._status[step_id] = StepStatus.RUNNING
        self._attempts[step_id] += 1
        self._running.add(step_id)

    def can_retry(self, step_id: str, status: StepStatus) -> bool:
        """Should this running step's attempt that ended `status` be retried rather than finished?"""
        return (status in RETRYABLE and self._status.get(step_id) == StepStatus.RUNNING
                and not self._halted and self.retries_left(step_id) > 0)

    def mark_retry(self, step_id: str) -> None:
        """A running step's attempt failed and it will run again: back to pending and ready."""
        self._require(step_id, "pending (retry)")
        if self._status[step_id] != StepStatus.RUNNING:
            raise StepTransitionError(step_id, self._status[step_id], "pending (retry)")
        self._running.discard(step_id)
        self._status[step_id] = StepStatus.PENDING
        self._push_ready(step_id)

    def mark_finished(self, step_id: str, status: StepStatus | str) -> list[str]:
        """Record a step's final status; return the steps that became ready, in topological order.

        A running step may end any finished way; a pending one only cancelled or skipped. Repeating the
        same final status is a no-op. Cost: O(out-edges of the step · log n).
        """
        self._require(step_id, str(status))
        current = self._status[step_id]
        try:
            final = StepStatus(status)
        except ValueError:
            raise StepTransitionError(step_id, current, str(status)) from None
        if final not in FINISHED:
            raise StepTransitionError(step_id, current, final.value)
        if current == final:
            return []
        allowed = current == StepStatus.RUNNING or (current == StepStatus.PENDING and final in NOT_STARTED_ENDINGS)
        if not allowed:
            raise StepTransitionError(step_id, current, final.value)
        self._running.discard(step_id)
        self._ready.discard(step_id)
        self._status[step_id] = final
        self._finished += 1
        if final != StepStatus.SUCCEEDED:
            self._halted = True
            return []
        newly: list[str] = []
        for child in self._children[step_id]:
            self._remaining[child] -= 1
            if self._remaining[child] == 0 and self._status[child] == StepStatus.PENDING:
                self._push_ready(child)
                newly.append(child)
        return newly

    # persistence ---------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON: `{"version": 1, "steps": {id: {"status": s, "attempts": n}}}` in topological order."""
        return {
            "version": SNAPSHOT_VERSION,
            "steps": {step: {"status": self._status[step].value, "attempts": self._attempts[step]}
                      for step in self._order},
        }

    @classmethod
    def restore(cls, flow: FlowShape, snapshot: Mapping[str, Any], *,
                max_parallel: int | None = None) -> Readiness:
        """Rebuild a tracker from `snapshot()`; steps the snapshot omits are pending. Running steps stay running."""
        tracker = cls(flow, max_parallel=max_parallel)
        if not isinstance(snapshot, Mapping) or snapshot.get("version") != SNAPSHOT_VERSION:
            raise InvalidSnapshotError(f"expected a mapping with version {SNAPSHOT_VERSION}")
        steps = snapshot.get("steps")
        if not isinstance(steps, Mapping):
            raise InvalidSnapshotError("'steps' must be a mapping of step id to status")
        for step_id, entry in steps.items():
            if step_id not in tracker._status:
                raise InvalidSnapshotError(f"unknown step {step_id!r}")
            if not isinstance(entry, Mapping):
                raise InvalidSnapshotError(f"step {step_id!r} must map to {{status, attempts}}")
            try:
                status = StepStatus(str(entry.get("status")))
            except ValueError:
                raise InvalidSnapshotError(f"step {step_id!r} has unknown status {entry.get('status')!r}") from None
            attempts = entry.get("attempts", 0)
            if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 0:
                raise InvalidSnapshotError(f"step {step_id!r} has invalid attempts {attempts!r}")
            tracker._status[step_id] = status
            tracker._attempts[step_id] = attempts
        tracker._rebuild()
        return tracker

    # internals -----------------------------------------------------------------------------------------

    def _require(self, step_id: str, requested: str) -> None:
        if step_id not in self._status:
            raise StepTransitionError(step_id, None, requested)

    def _push_ready(self, step_id: str) -> None:
        self._ready.add(step_id)
        heapq.heappush(self._heap, (self._rank[step_id], step_id))

    def _rebuild(self) -> None:
        """Recompute counters, the ready set and the halted flag from `_status` (after a restore)."""
        succeeded = {step for step, status in self._status.items() if status == StepStatus.SUCCEEDED}
        self._ready.clear()
        self._heap.clear()
        self._running = {step for step, status in self._status.items() if status == StepStatus.RUNNING}
        self._finished = sum(1 for status in self._status.values() if status in FINISHED)
        self._halted = any(s in FINISHED and s != StepStatus.SUCCEEDED for s in self._status.values())
        for step in self._order:
            status = self._status[step]
            self._remaining[step] = sum(1 for need in self._needs[step] if need not in succeeded)
            started = status not in NOT_STARTED_ENDINGS and status != StepStatus.PENDING
            if started and self._remaining[step]:
                raise InvalidSnapshotError(f"step {step!r} is {status.value} but not all its needs succeeded")
            if status == StepStatus.PENDING and self._remaining[step] == 0:
                self._push_ready(step)
