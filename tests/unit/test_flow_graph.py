"""The step graph and `Readiness`: what may start, when, and what is left after a failure."""

from __future__ import annotations

import json
import random

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowledger.flows.definitions import FlowCycleError, FlowDefinition, StepDefinition, UnknownStepError
from flowledger.flows.graph import (
    InvalidSnapshot,
    Readiness,
    StepStatus,
    StepTransitionError,
    build_graph,
    find_cycle,
    topological_order,
)

S = StepStatus


def make_flow(needs: dict[str, list[str]], *, max_parallel: int = 4,
              retries: dict[str, int] | None = None) -> FlowDefinition:
    steps = [StepDefinition(step, run=("true",), needs=tuple(deps), retries=(retries or {}).get(step, 0))
             for step, deps in needs.items()]
    return FlowDefinition("test", max_parallel=max_parallel, steps=tuple(steps))


DIAMOND = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}


# --- graph --------------------------------------------------------------------------------------------


def test_build_graph_edges_point_from_need_to_step() -> None:
    graph = build_graph(make_flow(DIAMOND))
    assert list(graph) == ["a", "b", "c", "d"]
    assert set(graph.edges) == {("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")}
    assert find_cycle(graph) is None


def test_build_graph_rejects_unknown_need() -> None:
    with pytest.raises(UnknownStepError, match="Step 'b' needs unknown step 'z'"):
        build_graph(make_flow({"a": [], "b": ["z"]}))


def test_find_cycle_starts_at_earliest_step() -> None:
    graph = build_graph(make_flow({"x": [], "c": ["b"], "a": ["c"], "b": ["a", "x"]}))
    assert find_cycle(graph) == ["c", "a", "b", "c"]


def test_topological_order_prefers_file_order() -> None:
    graph = build_graph(make_flow({"z": [], "y": [], "x": ["z"], "w": []}))
    assert topological_order(graph) == ["z", "y", "x", "w"]


def test_readiness_rejects_a_cycle() -> None:
    with pytest.raises(FlowCycleError, match="a -> b -> a"):
        Readiness(make_flow({"a": ["b"], "b": ["a"]}))


# --- readiness, by hand -------------------------------------------------------------------------------


def test_diamond_runs_in_order() -> None:
    r = Readiness(make_flow(DIAMOND))
    assert r.ready() == ["a"] and r.next_to_start() == ["a"]
    r.mark_started("a")
    assert r.ready() == [] and r.running() == ["a"]
    assert r.mark_finished("a", S.SUCCEEDED) == ["b", "c"]
    assert r.next_to_start() == ["b", "c"]
    r.mark_started("b")
    r.mark_started("c")
    assert r.mark_finished("c", "succeeded") == []
    assert r.status("d") == S.PENDING
    assert r.mark_finished("b", S.SUCCEEDED) == ["d"]
    r.mark_started("d")
    assert not r.is_done() and r.outcome() is None
    r.mark_finished("d", S.SUCCEEDED)
    assert r.is_done() and r.outcome() == S.SUCCEEDED
    assert r.counts()["succeeded"] == 4


def test_failure_halts_and_reports_not_started() -> None:
    r = Readiness(make_flow(DIAMOND))
    r.mark_started("a")
    r.mark_finished("a", S.SUCCEEDED)
    r.mark_started("b")
    r.mark_started("c")
    assert r.mark_finished("b", S.FAILED) == []
    assert r.halted and r.next_to_start() == []
    assert r.steps_not_started() == ["d"]
    assert r.failed_steps() == ["b"]
    r.mark_finished("d", S.CANCELLED)
    r.mark_finished("c", S.CANCELLED)  # the controller cancels what still runs
    assert r.is_done() and r.outcome() == S.FAILED


def test_cancel_outcome() -> None:
    r = Readiness(make_flow({"a": [], "b": ["a"]}))
    r.mark_started("a")
    r.mark_finished("a", S.CANCELLED)
    r.mark_finished("b", S.SKIPPED)
    assert r.outcome() == S.CANCELLED


def test_max_parallel_and_explicit_running_count() -> None:
    r = Readiness(make_flow({f"s{i}": [] for i in range(6)}, max_parallel=2))
    assert r.next_to_start() == ["s0", "s1"]
    assert r.next_to_start() == ["s0", "s1"]  # asking does not change anything
    r.mark_started("s0")
    assert r.next_to_start() == ["s1"]
    assert r.next_to_start(running_count=0) == ["s1", "s2"]
    assert r.next_to_start(running_count=5) == []
    assert Readiness(make_flow({"a": []}), max_parallel=0).max_parallel == 1


def test_retry_returns_the_step_to_ready() -> None:
    r = Readiness(make_flow({"a": [], "b": ["a"]}, retries={"a": 1}))
    r.mark_started("a")
    assert r.retries_left("a") == 1
    assert r.can_retry("a", S.FAILED) and r.can_retry("a", S.TIMED_OUT)
    assert not r.can_retry("a", S.CANCELLED)
    r.mark_retry("a")
    assert r.status("a") == S.PENDING and r.next_to_start() == ["a"]
    r.mark_started("a")
    assert r.attempts("a") == 2 and r.retries_left("a") == 0 and not r.can_retry("a", S.FAILED)
    assert r.next_to_start() == []
    assert r.mark_finished("a", S.SUCCEEDED) == ["b"]
    assert r.next_to_start() == ["b"]


@pytest.mark.parametrize(
    ("setup", "step", "status"),
    [
        ([], "b", "running"),  # needs not succeeded
        ([("start", "a")], "a", "running"),  # already running
        ([], "a", S.SUCCEEDED),  # never started
        ([], "a", S.FAILED),
        ([("start", "a")], "a", S.PENDING),  # not a final status
        ([("start", "a"), ("finish", "a")], "a", S.FAILED),  # already succeeded
        ([], "zz", S.CANCELLED),  # no such step
        ([("start", "a")], "a", "exploded"),
    ],
)
def test_refused_transitions(setup: list[tuple[str, str]], step: str, status: str) -> None:
    r = Readiness(make_flow({"a": [], "b": ["a"]}))
    for action, target in setup:
        if action == "start":
            r.mark_started(target)
        else:
            r.mark_finished(target, S.SUCCEEDED)
    with pytest.raises(StepTransitionError):
        if status == "running":
            r.mark_started(step)
        else:
            r.mark_finished(step, status)


def test_repeating_a_final_status_is_a_no_op() -> None:
    r = Readiness(make_flow({"a": [], "b": ["a"]}))
    r.mark_started("a")
    assert r.mark_finished("a", S.SUCCEEDED) == ["b"]
    assert r.mark_finished("a", S.SUCCEEDED) == []
    with pytest.raises(StepTransitionError):
        r.mark_retry("a")


def test_snapshot_round_trip_through_json() -> None:
    r = Readiness(make_flow(DIAMOND, retries={"b": 2}))
    r.mark_started("a")
    r.mark_finished("a", S.SUCCEEDED)
    r.mark_started("b")
    r.mark_retry("b")
    r.mark_started("b")
    snap = json.loads(json.dumps(r.snapshot()))
    assert snap["steps"]["b"] == {"status": "running", "attempts": 2}
    back = Readiness.restore(make_flow(DIAMOND, retries={"b": 2}), snap)
    assert back.statuses() == r.statuses()
    assert back.ready() == r.ready() == ["c"]
    assert back.running() == ["b"] and back.attempts("b") == 2 and back.retries_left("b") == 1
    assert back.mark_finished("b", S.SUCCEEDED) == []
    back.mark_started("c")
    assert back.mark_finished("c", S.SUCCEEDED) == ["d"]


def test_restore_of_a_halted_flow() -> None:
    r = Readiness(make_flow(DIAMOND))
    r.mark_started("a")
    r.mark_finished("a", S.TIMED_OUT)
    back = Readiness.restore(make_flow(DIAMOND), r.snapshot())
    assert back.halted and back.next_to_start() == [] and back.steps_not_started() == ["b", "c", "d"]


@pytest.mark.parametrize(
    "snapshot",
    [
        {"steps": {}},
        {"version": 1, "steps": []},
        {"version": 1, "steps": {"ghost": {"status": "pending"}}},
        {"version": 1, "steps": {"a": "succeeded"}},
        {"version": 1, "steps": {"a": {"status": "weird"}}},
        {"version": 1, "steps": {"a": {"status": "running", "attempts": -1}}},
        {"version": 1, "steps": {"b": {"status": "succeeded", "attempts": 1}}},  # its need never succeeded
    ],
)
def test_restore_rejects_bad_snapshots(snapshot: dict[str, object]) -> None:
    with pytest.raises(InvalidSnapshot):
        Readiness.restore(make_flow(DIAMOND), snapshot)


def test_restore_treats_missing_steps_as_pending() -> None:
    back = Readiness.restore(make_flow(DIAMOND), {"version": 1, "steps": {"a": {"status": "succeeded"}}})
    assert back.ready() == ["b", "c"] and back.status("d") == S.PENDING


# --- properties over random DAGs ----------------------------------------------------------------------


@st.composite
def dags(draw: st.DrawFn, max_steps: int = 25) -> dict[str, list[str]]:
    """Edges only from a lower to a higher index, so the result is always acyclic."""
    size = draw(st.integers(min_value=1, max_value=max_steps))
    needs: dict[str, list[str]] = {}
    for j in range(size):
        deps = draw(st.sets(st.integers(min_value=0, max_value=j - 1), max_size=4)) if j else set()
        needs[f"s{j}"] = [f"s{i}" for i in sorted(deps)]
    return needs


def _check_ready_invariant(r: Readiness, needs: dict[str, list[str]]) -> None:
    for step in r.ready():
        assert r.status(step) == S.PENDING
        assert all(r.status(need) == S.SUCCEEDED for need in needs[step]), step


@settings(max_examples=150, deadline=None)
@given(needs=dags(), max_parallel=st.integers(min_value=1, max_value=5), data=st.data())
def test_random_outcomes(needs: dict[str, list[str]], max_parallel: int, data: st.DataObject) -> None:
    flow = make_flow(needs, max_parallel=max_parallel)
    graph = build_graph(flow)
    r = Readiness(flow)
    outcome_of = st.sampled_from([S.SUCCEEDED, S.SUCCEEDED, S.SUCCEEDED, S.FAILED, S.TIMED_OUT])
    while not r.is_done():
        for step in r.next_to_start():
            assert all(r.status(need) == S.SUCCEEDED for need in needs[step])
            r.mark_started(step)
        assert len(r.running()) <= max_parallel
        _check_ready_invariant(r, needs)
        if not r.running():
            # Halted with nothing running: the controller cancels whatever has not started.
            assert r.halted
            for step in r.steps_not_started():
                r.mark_finished(step, S.CANCELLED)
            break
        step = data.draw(st.sampled_from(r.running()))
        status = data.draw(outcome_of)
        newly = r.mark_finished(step, status)
        for ready in newly:
            assert all(r.status(need) == S.SUCCEEDED for need in needs[ready])
        if status != S.SUCCEEDED:
            assert newly == []
            not_started = set(r.steps_not_started())
            for later in nx.descendants(graph, step):
                assert r.status(later) == S.PENDING
                assert later in not_started
            assert r.next_to_start() == []
    assert r.is_done()
    if r.outcome() == S.SUCCEEDED:
        assert all(status == S.SUCCEEDED for status in r.statuses().values())


@settings(max_examples=150, deadline=None)
@given(needs=dags(), max_parallel=st.integers(min_value=1, max_value=5), data=st.data())
def test_all_successes_finish_every_step_in_topological_order(
    needs: dict[str, list[str]], max_parallel: int, data: st.DataObject
) -> None:
    r = Readiness(make_flow(needs, max_parallel=max_parallel))
    started: list[str] = []
    while not r.is_done():
        for step in r.next_to_start():
            r.mark_started(step)
            started.append(step)
        step = data.draw(st.sampled_from(r.running()))
        r.mark_finished(step, S.SUCCEEDED)
        _check_ready_invariant(r, needs)
    assert r.outcome() == S.SUCCEEDED
    assert sorted(started) == sorted(needs)
    position = {step: i for i, step in enumerate(started)}
    assert all(position[need] < position[step] for step, deps in needs.items() for need in deps)


@settings(max_examples=100, deadline=None)
@given(needs=dags(), data=st.data())
def test_snapshot_restore_mid_run_behaves_the_same(needs: dict[str, list[str]], data: st.DataObject) -> None:
    flow = make_flow(needs)
    r = Readiness(flow)
    for _ in range(data.draw(st.integers(min_value=0, max_value=len(needs)))):
        for step in r.next_to_start():
            r.mark_started(step)
        if not r.running():
            break
        r.mark_finished(data.draw(st.sampled_from(r.running())), S.SUCCEEDED)
    back = Readiness.restore(flow, json.loads(json.dumps(r.snapshot())))
    assert back.statuses() == r.statuses()
    assert back.ready() == r.ready()
    assert back.next_to_start() == r.next_to_start()
    assert back.is_done() == r.is_done()


def test_ten_thousand_step_dag_completes() -> None:
    rng = random.Random(1234)
    size = 10_000
    needs = {f"s{j}": sorted({f"s{rng.randrange(j)}" for _ in range(rng.randint(0, 3))}) if j else []
             for j in range(size)}
    r = Readiness(make_flow(needs, max_parallel=64))
    finished = 0
    while not r.is_done():
        for step in r.next_to_start():
            r.mark_started(step)
        running = r.running()
        for step in running[: max(1, len(running) // 2)]:
            r.mark_finished(step, S.SUCCEEDED)
            finished += 1
    assert finished == size
    assert r.outcome() == S.SUCCEEDED
