"""The graph controller: steps start only when their needs succeeded, max_parallel, retries, timeouts, failure and
cancel — with a scripted in-process launcher (a fake runtime, never a fake store), a real-subprocess launcher,
and hypothesis over random DAGs and random step outcomes."""

from __future__ import annotations

import subprocess
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowledger import FrozenClock, Ledger, Task, TaskStatus
from flowledger.flows.controller import GraphController, define_flow, resume_graph_flows, run_flow
from flowledger.flows.definitions import FlowDefinition, StepDefinition, parse_flow
from flowledger.flows.models import GRAPH_CONTROLLER, FlowStatus, SyncMode
from flowledger.tasks.core.states import ACTIVE
from flowledger.tasks.runs import liveness

OWNER = "agent:main:main"
POLL = 0.001


def step_of(task: Task) -> str:
    """The step id of a step task, from its run id `flow:<flow_id>:<step_id>:<attempt>`."""
    return (task.run_id or "").split(":")[-2]


class ScriptedLauncher:
    """Ends each attempt at once with a scripted status ("hang" leaves it running), after checking in the ledger
    that every step it needs has succeeded."""

    def __init__(self, ledger: Ledger, definition: FlowDefinition, script: dict[str, list[str]] | None = None,
                 *, cancel_on_start: int | None = None) -> None:
        self.ledger = ledger
        self.definition = definition
        self.script = script or {}
        self.started: list[str] = []
        self.running_peak = 0
        self.cancel_on_start = cancel_on_start
        self.violations: list[str] = []

    def start(self, task: Task, argv: list[str], *, shell: bool, timeout: timedelta | None, cwd: str | None,
              env: dict[str, str] | None) -> None:
        step = step_of(task)  # by run id: a step's `label` is its tasks' label, not its id
        assert task.parent_flow_id and task.run_id
        siblings = self.ledger.flows.linked_tasks(task.parent_flow_id)
        succeeded = {step_of(t) for t in siblings if t.status == TaskStatus.SUCCEEDED}
        for need in self.definition.step(step).needs:
            if need not in succeeded:
                self.violations.append(f"{step} started before {need} succeeded")
        attempt = sum(1 for s in self.started if s == step)
        self.started.append(step)
        active = sum(t.status in ACTIVE for t in siblings)
        self.running_peak = max(self.running_peak, active)
        outcomes = self.script.get(step, ["succeeded"])
        outcome = outcomes[min(attempt, len(outcomes) - 1)]
        self.ledger.tasks.start(task.run_id)
        if self.cancel_on_start is not None and len(self.started) == self.cancel_on_start:
            self.ledger.flows.cancel(task.parent_flow_id)
            return
        if outcome == "hang":
            return
        if outcome == "succeeded":
            self.ledger.tasks.complete(task.run_id)
        else:
            self.ledger.tasks.fail(task.run_id, error=f"{step} {outcome}", status=outcome)


def definition(steps: list[tuple[str, list[str]]], *, max_parallel: int = 4, retries: int = 0,
               timeout: timedelta | None = None) -> FlowDefinition:
    return FlowDefinition("Graph", owner=OWNER, max_parallel=max_parallel,
                          steps=tuple(StepDefinition(s, run=("true",), needs=tuple(n), retries=retries,
                                                     timeout=timeout) for s, n in steps))


DIAMOND = [("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"])]


def test_all_steps_succeed_in_dependency_order(ledger: Ledger) -> None:
    spec = definition(DIAMOND)
    launcher = ScriptedLauncher(ledger, spec)
    events: list[tuple[str, str | None]] = []
    flow = run_flow(ledger, spec, launcher, on_progress=lambda e: events.append((e.kind, e.step_id)),
                    poll_interval=POLL)
    assert flow.status == FlowStatus.SUCCEEDED and flow.sync_mode == SyncMode.MANAGED
    assert flow.controller_id == GRAPH_CONTROLLER and flow.current_step is None and flow.ended_at is not None
    assert launcher.violations == [] and launcher.started[0] == "a" and launcher.started[-1] == "d"
    assert {k: v["status"] for k, v in flow.state["steps"].items()} == dict.fromkeys("abcd", "succeeded")
    tasks = ledger.flows.linked_tasks(flow.flow_id)
    assert sorted(t.label or "" for t in tasks) == ["a", "b", "c", "d"]
    assert all(t.run_id == f"flow:{flow.flow_id}:{t.label}:1" for t in tasks)
    assert all(t.notify_policy.value == "silent" and t.owner_key == OWNER for t in tasks)
    assert events[0] == ("flow_started", None) and events[-1] == ("flow_finished", None)


class RecordingAgentLauncher(ScriptedLauncher):
    """An agent runtime's launcher: takes `mode` as the acp runtime does, and records what each step got."""

    def __init__(self, ledger: Ledger, definition: FlowDefinition) -> None:
        super().__init__(ledger, definition)
        self.seen: dict[str, tuple[str, list[str], str | None, str | None]] = {}

    def start(self, task: Task, argv: list[str], *, shell: bool, timeout: timedelta | None, cwd: str | None,
              env: dict[str, str] | None, mode: str | None = None) -> None:
        self.seen[step_of(task)] = (task.task, argv, task.child_session_key, mode)
        super().start(task, argv, shell=shell, timeout=timeout, cwd=cwd, env=env)


AGENT_STEPS = """
[flow]
goal = "Agents"
[[step]]
id = "build"
run = ["make"]
[[step]]
id = "ask"
runtime = "acp"
needs = ["build"]
run = ["agent", "--stdio"]
prompt = "Summarise the build"
mode = "persistent"
[[step]]
id = "check"
runtime = "subagent"
needs = ["build"]
label = "Check the tests"
run = ["checker"]
"""


def test_each_step_is_launched_by_its_runtime_with_its_prompt(ledger: Ledger) -> None:
    from flowledger.tasks.core.states import Runtime

    spec = parse_flow(AGENT_STEPS)
    cli, subagent, acp = (ScriptedLauncher(ledger, spec), RecordingAgentLauncher(ledger, spec),
                          RecordingAgentLauncher(ledger, spec))
    flow = run_flow(ledger, spec, {Runtime.CLI: cli, Runtime.SUBAGENT: subagent, Runtime.ACP: acp},
                    poll_interval=POLL)
    assert flow.status == FlowStatus.SUCCEEDED
    assert (cli.started, subagent.started, acp.started) == (["build"], ["check"], ["ask"])
    tasks = {step_of(t): t for t in ledger.flows.linked_tasks(flow.flow_id)}
    # The prompt is the agent step's task text; `run` stays the agent's argv; each attempt has its own session.
    assert acp.seen["ask"] == ("Summarise the build", ["agent", "--stdio"],
                               f"agent:main:acp:{tasks['ask'].task_id}", "persistent")
    assert subagent.seen["check"] == ("Check the tests", ["checker"],
                                      f"agent:main:subagent:{tasks['check'].task_id}", None)
    assert tasks["build"].task == "make" and tasks["build"].child_session_key is None
    assert tasks["ask"].runtime == Runtime.ACP and tasks["check"].runtime == Runtime.SUBAGENT


def test_a_step_whose_runtime_has_no_launcher_fails_at_once(ledger: Ledger) -> None:
    from flowledger.tasks.core.states import Runtime

    spec = parse_flow(AGENT_STEPS)
    flow = run_flow(ledger, spec, {Runtime.CLI: ScriptedLauncher(ledger, spec)}, poll_interval=POLL)
    assert flow.status == FlowStatus.FAILED
    tasks = {t.label: t for t in ledger.flows.linked_tasks(flow.flow_id)}
    failed = [t for t in tasks.values() if t.status == TaskStatus.FAILED]
    assert failed and all(t.error in ("Step 'ask' could not start: no acp runtime here to run it",
                                      "Step 'check' could not start: no subagent runtime here to run it")
                          for t in failed)
    assert flow.blocked_summary is not None and "could not start: no" in flow.blocked_summary
    assert not any(t.status in ACTIVE for t in tasks.values())


def test_failure_cancels_unstarted_steps_and_fails_flow(ledger: Ledger) -> None:
    spec = definition(DIAMOND, max_parallel=1)
    launcher = ScriptedLauncher(ledger, spec, {"b": ["failed"]})
    flow = run_flow(ledger, spec, launcher, poll_interval=POLL)
    statuses = {k: v["status"] for k, v in flow.state["steps"].items()}
    assert flow.status == FlowStatus.FAILED
    assert statuses == {"a": "succeeded", "b": "failed", "c": "cancelled", "d": "cancelled"}
    b_task = ledger.tasks.get(flow.state["steps"]["b"]["task_id"])
    assert b_task is not None and flow.blocked_task_id == b_task.task_id
    assert flow.blocked_summary == "Step b failed: b failed"
    assert "c" not in launcher.started


def test_retries_then_success(ledger: Ledger) -> None:
    spec = definition([("a", []), ("b", ["a"])], retries=2)
    launcher = ScriptedLauncher(ledger, spec, {"a": ["failed", "timed_out", "succeeded"]})
    flow = run_flow(ledger, spec, launcher, poll_interval=POLL)
    assert flow.status == FlowStatus.SUCCEEDED
    assert launcher.started == ["a", "a", "a", "b"]
    assert flow.state["steps"]["a"]["attempts"] == 3
    runs = sorted(t.run_id or "" for t in ledger.flows.linked_tasks(flow.flow_id))
    assert runs == sorted(f"flow:{flow.flow_id}:{s}" for s in ("a:1", "a:2", "a:3", "b:1"))


def test_max_parallel_is_honoured(ledger: Ledger) -> None:
    spec = definition([(f"s{i}", []) for i in range(6)], max_parallel=2)
    launcher = ScriptedLauncher(ledger, spec, {f"s{i}": ["hang"] for i in range(6)})
    flow = define_flow(ledger, spec)
    controller = GraphController(ledger, flow, launcher, poll_interval=POLL)
    assert controller.claim()
    controller._start_ready()
    controller._save(force=True)
    assert launcher.started == ["s0", "s1"]
    current = ledger.flows.get(flow.flow_id)
    assert current is not None and current.current_step == "s0, s1" and current.status == FlowStatus.RUNNING
    ledger.tasks.complete(f"flow:{flow.flow_id}:s0:1")
    controller._collect()
    controller._start_ready()
    assert launcher.started == ["s0", "s1", "s2"]


def test_step_timeout_backstop_at_exact_boundary(ledger: Ledger, clock: FrozenClock) -> None:
    spec = definition([("slow", [])], timeout=timedelta(minutes=10))
    launcher = ScriptedLauncher(ledger, spec, {"slow": ["hang"]})
    flow = define_flow(ledger, spec)
    controller = GraphController(ledger, flow, launcher, poll_interval=POLL)
    controller.claim()
    controller._start_ready()
    run_id = f"flow:{flow.flow_id}:slow:1"
    clock.advance(timedelta(minutes=10) - timedelta(milliseconds=1))
    controller._collect()
    assert ledger.tasks.get(run_id).status == TaskStatus.RUNNING  # type: ignore[union-attr]
    clock.advance(timedelta(milliseconds=1))
    controller._collect()
    assert ledger.tasks.get(run_id).status == TaskStatus.TIMED_OUT  # type: ignore[union-attr]
    final = controller.run()
    assert final.status == FlowStatus.FAILED and final.blocked_summary is not None
    assert final.blocked_summary.startswith("Step slow timed out")


def test_cancel_request_stops_the_flow(ledger: Ledger) -> None:
    spec = definition([("a", []), ("b", []), ("c", ["a"])], max_parallel=2)
    launcher = ScriptedLauncher(ledger, spec, {"a": ["hang"], "b": ["hang"]}, cancel_on_start=2)
    flow = run_flow(ledger, spec, launcher, poll_interval=POLL)
    assert flow.status == FlowStatus.CANCELLED and flow.cancel_requested_at is not None
    tasks = ledger.flows.linked_tasks(flow.flow_id)
    assert {t.status for t in tasks} == {TaskStatus.CANCELLED}
    assert launcher.started == ["a", "b"]
    assert flow.state["steps"]["c"]["status"] == "cancelled"


def test_detached_flow_is_resumed_once(ledger: Ledger) -> None:
    spec = definition(DIAMOND)
    queued = define_flow(ledger, spec)
    assert queued.status == FlowStatus.QUEUED and queued.state["steps"]["a"]["status"] == "pending"
    launcher = ScriptedLauncher(ledger, spec)
    [done] = resume_graph_flows(ledger, launcher, poll_interval=POLL)
    assert done.flow_id == queued.flow_id and done.status == FlowStatus.SUCCEEDED
    assert resume_graph_flows(ledger, launcher, poll_interval=POLL) == []
    stale = GraphController(ledger, queued, launcher, poll_interval=POLL)
    assert not stale.claim()  # another controller already moved it on


# --- a real runtime: subprocesses in threads ----------------------------------------------------------------


class ThreadLauncher:
    """Runs each step's argv in a thread and reports through ledger.tasks (a test runtime, not CliRuntime)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.threads: list[threading.Thread] = []

    def start(self, task: Task, argv: list[str], *, shell: bool, timeout: timedelta | None, cwd: str | None,
              env: dict[str, str] | None) -> None:
        assert task.run_id
        run_id = task.run_id
        self.ledger.tasks.start(run_id)

        def work() -> None:
            try:
                proc = subprocess.run(argv[0] if shell else argv, shell=shell, cwd=cwd, capture_output=True,
                                      timeout=timeout.total_seconds() if timeout else None, check=False)
            except subprocess.TimeoutExpired:
                self.ledger.tasks.fail(run_id, error="timed out", status="timed_out")
                return
            if proc.returncode == 0:
                self.ledger.tasks.complete(run_id, summary=proc.stdout.decode().strip() or None)
            else:
                self.ledger.tasks.fail(run_id, error=f"exit code {proc.returncode}")

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        self.threads.append(thread)


@pytest.fixture
def real_ledger(sqlite_ledger: Ledger) -> Iterator[Ledger]:
    yield sqlite_ledger


def test_real_processes_with_retry_and_timeout(real_ledger: Ledger, tmp_path: Path) -> None:
    marker = tmp_path / "attempted"
    text = f"""
[flow]
goal = "Real processes"
[[step]]
id = "flaky"
run = "test -e {marker} || {{ touch {marker}; exit 1; }}"
shell = true
retries = 1
[[step]]
id = "slow"
needs = ["flaky"]
run = ["sleep", "5"]
timeout = "200ms"
"""
    launcher = ThreadLauncher(real_ledger)
    flow = run_flow(real_ledger, parse_flow(text), launcher, poll_interval=0.01)
    for thread in launcher.threads:
        thread.join(5)
    steps = flow.state["steps"]
    assert (steps["flaky"]["status"], steps["flaky"]["attempts"]) == ("succeeded", 2)
    assert steps["slow"]["status"] == "timed_out" and flow.status == FlowStatus.FAILED


# --- hypothesis: random DAGs, random outcomes ---------------------------------------------------------------

OUTCOMES = st.sampled_from(["succeeded", "succeeded", "succeeded", "failed", "timed_out"])


@st.composite
def graphs(draw: st.DrawFn) -> tuple[FlowDefinition, dict[str, list[str]]]:
    n = draw(st.integers(1, 7))
    names = [f"s{i}" for i in range(n)]
    steps = []
    for i, name in enumerate(names):
        needs = draw(st.lists(st.sampled_from(names[:i]), unique=True, max_size=3)) if i else []
        steps.append((name, needs))
    retries = draw(st.integers(0, 2))
    spec = definition(steps, max_parallel=draw(st.integers(1, 3)), retries=retries)
    script = {name: draw(st.lists(OUTCOMES, min_size=1, max_size=retries + 1)) for name in names}
    return spec, script


def _fresh(tmp_path: Path, clock: FrozenClock) -> Ledger:
    state = tmp_path / uuid.uuid4().hex
    return Ledger.open(state_dir=state, database_url=f"sqlite:///{state / 'runs.sqlite'}", clock=clock)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=graphs())
def test_random_dags_end_as_the_rules_say(tmp_path: Path, clock: FrozenClock,
                                          case: tuple[FlowDefinition, dict[str, list[str]]]) -> None:
    spec, script = case
    with _fresh(tmp_path, clock) as ledger:
        launcher = ScriptedLauncher(ledger, spec, script)
        flow = run_flow(ledger, spec, launcher, poll_interval=POLL)
        # A step succeeds iff "succeeded" comes up within its attempts (the last scripted outcome repeats).
        def succeeds(step: StepDefinition) -> bool:
            outcomes = script[step.id]
            attempts = [outcomes[min(i, len(outcomes) - 1)] for i in range(step.retries + 1)]
            return "succeeded" in attempts

        expected = FlowStatus.SUCCEEDED if all(succeeds(s) for s in spec.steps) else FlowStatus.FAILED
        assert flow.status == expected
        assert launcher.violations == []
        assert launcher.running_peak <= spec.max_parallel
        tasks = ledger.flows.linked_tasks(flow.flow_id)
        assert not [t for t in tasks if t.status in ACTIVE]
        if expected == FlowStatus.FAILED:
            assert flow.blocked_task_id in {t.task_id for t in tasks}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=graphs(), data=st.data())
def test_random_cancel_leaves_no_active_child(tmp_path: Path, clock: FrozenClock,
                                              case: tuple[FlowDefinition, dict[str, list[str]]],
                                              data: st.DataObject) -> None:
    spec, _ = case
    # Every step hangs, so only the roots (up to max_parallel) ever start; the cancel comes at one of them.
    roots = sum(1 for s in spec.steps if not s.needs)
    cancel_at = data.draw(st.integers(1, min(roots, spec.max_parallel)))
    hanging = {s.id: ["hang"] for s in spec.steps}
    with _fresh(tmp_path, clock) as ledger:
        launcher = ScriptedLauncher(ledger, spec, hanging, cancel_on_start=cancel_at)
        flow = run_flow(ledger, spec, launcher, poll_interval=POLL)
        tasks = ledger.flows.linked_tasks(flow.flow_id)
        assert not [t for t in tasks if t.status in ACTIVE]
        assert flow.status == FlowStatus.CANCELLED
        assert len(launcher.started) == cancel_at  # nothing starts after the request
        assert all(v["status"] == "cancelled" for v in flow.state["steps"].values())
        assert launcher.violations == []


# --- a driver that dies mid-run -----------------------------------------------------------------------------


class LeasedLauncher(ScriptedLauncher):
    """A scripted launcher that vouches for its steps the way the cli runtime does: a gateway lease it renews
    (on the ledger clock, so a test expires it by advancing the clock) and a run context per step."""

    def __init__(self, ledger: Ledger, definition: FlowDefinition, script: dict[str, list[str]] | None = None,
                 *, gateway_id: str) -> None:
        super().__init__(ledger, definition, script)
        self.gateway_id = gateway_id

    def ensure_backing(self) -> None:
        now = self.ledger.clock.now()
        self.ledger.db.transact(lambda conn: liveness.renew_lease(conn, self.gateway_id, now))

    def start(self, task: Task, argv: list[str], *, shell: bool, timeout: timedelta | None, cwd: str | None,
              env: dict[str, str] | None) -> None:
        now = self.ledger.clock.now()
        assert task.run_id
        run_id = task.run_id
        self.ledger.db.transact(lambda conn: liveness.register_run(conn, run_id, self.gateway_id, now,
                                                                   task_id=task.task_id))
        super().start(task, argv, shell=shell, timeout=timeout, cwd=cwd, env=env)


def _die_mid_run(ledger: Ledger, spec: FlowDefinition, script: dict[str, list[str]]) -> str:
    """Drive the flow's first wave with a driver that then vanishes (no more loop, no more lease renewals)."""
    dead = LeasedLauncher(ledger, spec, script, gateway_id="gw-dead")
    controller = GraphController(ledger, define_flow(ledger, spec), dead, poll_interval=POLL)
    assert controller.claim()
    controller._start_ready()
    controller._save(force=True)  # the steps are saved as running, whatever their tasks did since
    flow = ledger.flows.get_by_id(controller.flow.flow_id)
    assert flow is not None and flow.status == FlowStatus.RUNNING and flow.state["driver"] == "gw-dead"
    return flow.flow_id


def test_flow_whose_driver_died_is_adopted_once_and_runs_to_the_end(ledger: Ledger, clock: FrozenClock) -> None:
    spec = definition([("a", []), ("b", []), ("c", ["a", "b"])], retries=1)
    flow_id = _die_mid_run(ledger, spec, {"a": ["succeeded"], "b": ["hang"]})
    adopter = LeasedLauncher(ledger, spec, gateway_id="gw-b")
    clock.advance(liveness.LEASE_TTL - timedelta(milliseconds=1))
    assert resume_graph_flows(ledger, adopter, poll_interval=POLL) == []  # the driver's lease is still fresh
    assert adopter.started == []
    clock.advance(timedelta(milliseconds=1))  # the lease expires exactly now
    [done] = resume_graph_flows(ledger, adopter, poll_interval=POLL)
    assert done.flow_id == flow_id and done.status == FlowStatus.SUCCEEDED
    assert done.state["driver"] == "gw-b"
    # a ended while nobody watched: folded in as succeeded; b died with its driver: failed, then retried.
    assert adopter.started == ["b", "c"] and adopter.violations == []
    tasks = {(t.label, t.run_id): t.status for t in ledger.flows.linked_tasks(flow_id)}
    assert tasks == {("a", f"flow:{flow_id}:a:1"): TaskStatus.SUCCEEDED,
                     ("b", f"flow:{flow_id}:b:1"): TaskStatus.FAILED,
                     ("b", f"flow:{flow_id}:b:2"): TaskStatus.SUCCEEDED,
                     ("c", f"flow:{flow_id}:c:1"): TaskStatus.SUCCEEDED}
    lost = ledger.tasks.get(f"flow:{flow_id}:b:1")
    assert lost is not None and lost.error is not None and "driver" in lost.error
    assert resume_graph_flows(ledger, adopter, poll_interval=POLL) == []  # adopted exactly once


def test_adopted_step_still_backed_is_watched_not_failed(ledger: Ledger, clock: FrozenClock) -> None:
    spec = definition([("a", []), ("b", ["a"])])
    flow_id = _die_mid_run(ledger, spec, {"a": ["hang"]})
    run_id = f"flow:{flow_id}:a:1"
    # The step's process is backed by a live lease of its own (e.g. a gateway that supervises it).
    ledger.db.transact(lambda conn: liveness.register_run(conn, run_id, "gw-keeper", clock.now()))
    clock.advance(liveness.LEASE_TTL)
    ledger.db.transact(lambda conn: liveness.renew_lease(conn, "gw-keeper", clock.now()))
    adopter = LeasedLauncher(ledger, spec, gateway_id="gw-b")
    [stale] = ledger.flows.list(FlowStatus.RUNNING, controller_id=GRAPH_CONTROLLER)
    controller = GraphController(ledger, stale, adopter, poll_interval=POLL)
    assert controller.adopt()
    assert ledger.tasks.get(run_id).status == TaskStatus.RUNNING  # type: ignore[union-attr]
    ledger.tasks.complete(run_id)
    final = controller.run()
    assert final.status == FlowStatus.SUCCEEDED and adopter.started == ["b"]


def test_flow_with_fresh_driver_or_no_driver_is_left_alone(ledger: Ledger, clock: FrozenClock) -> None:
    spec = definition([("a", [])])
    flow_id = _die_mid_run(ledger, spec, {"a": ["hang"]})
    clock.advance(liveness.LEASE_TTL - timedelta(seconds=1))
    ledger.db.transact(lambda conn: liveness.renew_lease(conn, "gw-dead", clock.now()))  # still alive
    clock.advance(liveness.LEASE_TTL - timedelta(milliseconds=1))
    adopter = LeasedLauncher(ledger, spec, gateway_id="gw-b")
    assert resume_graph_flows(ledger, adopter, poll_interval=POLL) == []
    flow = ledger.flows.get_by_id(flow_id)
    assert flow is not None and flow.status == FlowStatus.RUNNING and flow.state["driver"] == "gw-dead"
    assert ledger.tasks.get(f"flow:{flow_id}:a:1").status == TaskStatus.RUNNING  # type: ignore[union-attr]
    # A flow whose driver left no lease id (a launcher without one) is never taken over.
    plain = GraphController(ledger, define_flow(ledger, spec), ScriptedLauncher(ledger, spec, {"a": ["hang"]}),
                            poll_interval=POLL)
    assert plain.claim() and "driver" not in plain._reload().state
    clock.advance(timedelta(hours=1))
    assert [f.flow_id for f in resume_graph_flows(ledger, adopter, poll_interval=POLL)] == [flow_id]
    assert plain._reload().status == FlowStatus.RUNNING


@pytest.mark.parametrize("racers", [2, 4])
def test_racing_adopters_exactly_one_wins(ledger: Ledger, clock: FrozenClock, racers: int) -> None:
    spec = definition([("a", [])])
    _die_mid_run(ledger, spec, {"a": ["hang"]})
    clock.advance(liveness.LEASE_TTL)
    [stale] = ledger.flows.list(FlowStatus.RUNNING, controller_id=GRAPH_CONTROLLER)
    controllers = [GraphController(ledger, stale, LeasedLauncher(ledger, spec, gateway_id=f"gw-{i}"),
                                   poll_interval=POLL) for i in range(racers)]
    barrier = threading.Barrier(racers)
    won: list[str] = []

    def race(controller: GraphController) -> None:
        barrier.wait()
        if controller.adopt():
            won.append(controller.driver or "")

    threads = [threading.Thread(target=race, args=(c,)) for c in controllers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(won) == 1
    flow = ledger.flows.get_by_id(stale.flow_id)
    assert flow is not None and flow.state["driver"] == won[0]


def test_displaced_driver_stops_without_ending_the_flow(ledger: Ledger, clock: FrozenClock) -> None:
    spec = definition([("a", [])])
    dead = LeasedLauncher(ledger, spec, {"a": ["hang"]}, gateway_id="gw-slow")
    old = GraphController(ledger, define_flow(ledger, spec), dead, poll_interval=POLL)
    assert old.claim()
    old._start_ready()
    old._save(force=True)
    clock.advance(liveness.LEASE_TTL)  # its lease lapsed, but the process is only slow, not gone
    [stale] = ledger.flows.list(FlowStatus.RUNNING, controller_id=GRAPH_CONTROLLER)
    adopter = GraphController(ledger, stale, LeasedLauncher(ledger, spec, gateway_id="gw-b"), poll_interval=POLL)
    assert adopter.adopt()
    left = old.run()  # sees the step fail, tries to conclude, finds it was adopted: stops, ends nothing
    assert left.status == FlowStatus.RUNNING and left.state["driver"] == "gw-b"
    final = adopter.run()
    assert final.status == FlowStatus.FAILED and final.blocked_summary is not None
