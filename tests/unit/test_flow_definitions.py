"""The flow-file format: what parses, and the one-line message for everything that does not."""

from __future__ import annotations

import itertools
import json
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowledger.flows.definitions import (
    DEFAULT_MAX_PARALLEL,
    DEFAULT_OWNER,
    FlowCycleError,
    FlowDefinition,
    FlowFileError,
    StepDefinition,
    UnknownStepError,
    flow_from_document,
    load_flow_file,
    parse_flow,
)
from flowledger.tasks.core.errors import EXIT_USAGE, InvalidInput
from flowledger.tasks.core.states import NotifyPolicy, Runtime

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

HEAD = '[flow]\ngoal = "Nightly release"\n'


def flow(body: str, head: str = HEAD) -> str:
    return head + textwrap.dedent(body)


def rejected(text: str) -> FlowFileError:
    with pytest.raises(FlowFileError) as info:
        parse_flow(text, source="nightly.toml")
    err = info.value
    assert "\n" not in err.message
    assert err.message.startswith("nightly.toml: ")
    assert err.exit_code == EXIT_USAGE
    assert isinstance(err, InvalidInput)
    return err


# --- what parses ---------------------------------------------------------------------------------------


def test_contract_example_parses_with_defaults() -> None:
    parsed = parse_flow(flow("""
        [[step]]
        id = "build"
        runtime = "cli"
        run = ["make", "build"]
        [[step]]
        id = "test"
        needs = ["build"]
        run = ["make", "test"]
        timeout = "10m"
    """))
    assert parsed.goal == "Nightly release"
    assert parsed.owner == DEFAULT_OWNER == "agent:main:main"
    assert parsed.notify == NotifyPolicy.DONE_ONLY
    assert parsed.max_parallel == DEFAULT_MAX_PARALLEL
    build, test = parsed.steps
    assert build == StepDefinition("build", run=("make", "build"))
    assert build.runtime == Runtime.CLI and build.needs == () and build.timeout is None and build.retries == 0
    assert test.needs == ("build",)
    assert test.timeout == timedelta(minutes=10)
    assert parsed.step("test") is test
    assert parsed.step_ids == ("build", "test")


def test_every_key() -> None:
    parsed = parse_flow(flow("""
        [[step]]
        id = "a"
        runtime = "acp"
        run = ["agent", "--stdio"]
        prompt = "Summarise the build"
        mode = "persistent"
        label = "Ask the agent"
        cwd = "/tmp"
        retries = 2
        timeout = "1h30m"
        env = { MODE = "fast", EMPTY = "" }
        [[step]]
        id = "b"
        runtime = "subagent"
        needs = ["a"]
        shell = true
        run = "echo $MODE | tr a-z A-Z"
    """, head='[flow]\ngoal = "g"\nowner = "agent:ops:main"\nnotify = "state_changes"\nmax_parallel = 2\n'))
    assert (parsed.owner, parsed.notify, parsed.max_parallel) == ("agent:ops:main", NotifyPolicy.STATE_CHANGES, 2)
    a, b = parsed.steps
    assert a.runtime == Runtime.ACP and a.label == "Ask the agent" and a.cwd == "/tmp" and a.retries == 2
    assert a.timeout == timedelta(hours=1, minutes=30)
    assert dict(a.env) == {"MODE": "fast", "EMPTY": ""}
    assert a.argv == ("agent", "--stdio") and a.command == "agent --stdio" and a.display_label == "Ask the agent"
    assert b.shell and b.run == ("echo $MODE | tr a-z A-Z",)
    assert b.argv == ("/bin/sh", "-c", "echo $MODE | tr a-z A-Z")
    assert b.command == "echo $MODE | tr a-z A-Z" and b.display_label == "b"
    assert (a.prompt, a.agent_prompt, a.mode, a.session_mode) == ("Summarise the build",) * 2 + ("persistent",) * 2
    assert (b.prompt, b.agent_prompt, b.mode, b.session_mode) == (None, "b", None, None)


def test_agent_step_defaults() -> None:
    parsed = parse_flow(flow("""
        [[step]]
        id = "build"
        run = ["make"]
        [[step]]
        id = "ask"
        runtime = "acp"
        run = ["agent"]
        prompt = "hello"
        [[step]]
        id = "review"
        runtime = "subagent"
        run = ["reviewer"]
        label = "Review the diff"
        [[step]]
        id = "told"
        runtime = "subagent"
        run = ["reviewer"]
        label = "ignored"
        prompt = "Check the tests"
    """))
    build, ask, review, told = parsed.steps
    assert (build.agent_prompt, build.session_mode) == (None, None)
    assert (ask.agent_prompt, ask.mode, ask.session_mode) == ("hello", None, "oneshot")
    assert (review.prompt, review.agent_prompt, review.session_mode) == (None, "Review the diff", None)
    assert told.agent_prompt == "Check the tests"
    doc = json.loads(json.dumps(parsed.to_document()))
    assert doc["step"][1] == {"id": "ask", "runtime": "acp", "run": ["agent"], "prompt": "hello"}
    assert flow_from_document(doc) == parsed


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ('id = "a"\nrun = ["make"]\nprompt = "hi"\n',
         "Step 'a' has a prompt but runtime 'cli' runs its command: prompt is for acp and subagent steps"),
        ('id = "a"\nruntime = "acp"\nrun = ["agent"]\n',
         "Missing key 'prompt' in step 'a' (an acp step sends it to the agent)"),
        ('id = "a"\nruntime = "acp"\nrun = ["agent"]\nprompt = ""\n', "Step 'a': prompt must not be empty"),
        ('id = "a"\nruntime = "acp"\nrun = ["agent"]\nprompt = ["hi"]\n',
         "Step 'a': prompt must be a string, got array"),
        ('id = "a"\nruntime = "acp"\nrun = ["agent"]\nprompt = "hi"\nmode = "forever"\n',
         "Step 'a': invalid mode 'forever': expected one of oneshot|persistent"),
        ('id = "a"\nruntime = "acp"\nrun = ["agent"]\nprompt = "hi"\nmode = 1\n',
         "Step 'a': mode must be a string (oneshot|persistent), got integer"),
        ('id = "a"\nruntime = "subagent"\nrun = ["agent"]\nmode = "persistent"\n',
         "Step 'a' has a mode but runtime 'subagent' has no session: mode is for acp steps"),
        ('id = "a"\nrun = ["make"]\nmode = "oneshot"\n', "Step 'a' has a mode but runtime 'cli'"),
    ],
)
def test_agent_key_rejections(step: str, expected: str) -> None:
    err = rejected(HEAD + "[[step]]\n" + step)
    assert err.detail == expected or expected in err.detail, err.detail


def test_definitions_are_frozen_and_hashable() -> None:
    parsed = parse_flow(flow('[[step]]\nid = "a"\nrun = ["true"]\nenv = { A = "1" }\n'))
    with pytest.raises(AttributeError):
        parsed.goal = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        parsed.steps[0].env["B"] = "2"  # type: ignore[index]
    assert hash(parsed) == hash(parse_flow(flow('[[step]]\nid = "a"\nrun = ["true"]\nenv = { A = "1" }\n')))


def test_document_round_trip_is_plain_json() -> None:
    parsed = parse_flow(flow("""
        [[step]]
        id = "a"
        run = ["python3", "-c", "print(1)"]
        timeout = "1m500ms"
        retries = 1
        env = { K = "v" }
        [[step]]
        id = "b"
        needs = ["a"]
        shell = true
        run = "echo hi"
        label = "B"
        cwd = "."
    """))
    doc = json.loads(json.dumps(parsed.to_document()))
    assert flow_from_document(doc) == parsed


def test_hand_built_definitions_accept_lists() -> None:
    step = StepDefinition("a", run=["x", "y"], needs=["b"], env={"K": "v"})  # type: ignore[arg-type]
    assert step.run == ("x", "y") and step.needs == ("b",)
    built = FlowDefinition("g", steps=[step])  # type: ignore[arg-type]
    assert built.steps == (step,)


@pytest.mark.parametrize("name", ["nightly-release.toml", "fan-out.toml"])
def test_examples_parse(name: str) -> None:
    parsed = load_flow_file(EXAMPLES / name)
    assert parsed.steps
    assert all(s.runtime == Runtime.CLI for s in parsed.steps)


def test_agent_steps_example_has_an_acp_and_a_subagent_step_after_a_cli_one() -> None:
    parsed = load_flow_file(EXAMPLES / "agent-steps.toml")
    build, summary, check = parsed.steps
    assert (build.runtime, summary.runtime, check.runtime) == (Runtime.CLI, Runtime.ACP, Runtime.SUBAGENT)
    assert summary.needs == check.needs == ("build",)
    assert (summary.agent_prompt, summary.session_mode) == ("Summarise the build", "oneshot")
    assert check.prompt is None and check.agent_prompt == "Check the tests"


def test_nightly_example_shows_fan_out_fan_in_timeout_and_retries() -> None:
    parsed = load_flow_file(EXAMPLES / "nightly-release.toml")
    assert any(s.timeout is not None for s in parsed.steps)
    assert any(s.retries > 0 for s in parsed.steps)
    assert any(len(s.needs) > 1 for s in parsed.steps)  # fan-in
    needed = [n for s in parsed.steps for n in s.needs]
    assert any(needed.count(n) > 1 for n in needed)  # fan-out


# --- what is rejected ---------------------------------------------------------------------------------


def test_cycle_names_its_steps_in_order() -> None:
    err = rejected(flow("""
        [[step]]
        id = "a"
        run = ["x"]
        needs = ["c"]
        [[step]]
        id = "b"
        run = ["x"]
        needs = ["a"]
        [[step]]
        id = "c"
        run = ["x"]
        needs = ["b"]
    """))
    assert isinstance(err, FlowCycleError)
    assert err.message == "nightly.toml: Flow has a cycle: a -> b -> c -> a"
    assert err.cycle == ("a", "b", "c", "a")


def test_self_need_is_a_cycle() -> None:
    err = rejected(flow('[[step]]\nid = "a"\nrun = ["x"]\nneeds = ["a"]\n'))
    assert err.detail == "Flow has a cycle: a -> a"


def test_unknown_need() -> None:
    err = rejected(flow("""
        [[step]]
        id = "build"
        run = ["make"]
        [[step]]
        id = "test"
        needs = ["biuld"]
        run = ["make", "test"]
    """))
    assert isinstance(err, UnknownStepError)
    assert err.detail.startswith("Step 'test' needs unknown step 'biuld'")
    assert "did you mean 'build'" in err.detail


def test_unknown_key_in_step() -> None:
    err = rejected(flow('[[step]]\nid = "test"\nnedds = ["a"]\nrun = ["x"]\n'))
    assert err.detail.startswith("Unknown key 'nedds' in step 'test'")
    assert "did you mean 'needs'" in err.detail


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (HEAD + 'colour = "red"\n[[step]]\nid = "a"\nrun = ["x"]\n', "Unknown key 'colour' in [flow]"),
        (HEAD + '[[steps]]\nid = "a"\nrun = ["x"]\n', "Unknown key 'steps' at top level"),
        ('[[step]]\nid = "a"\nrun = ["x"]\n', "Missing [flow] table"),
        ('[flow]\nowner = "x"\n[[step]]\nid = "a"\nrun = ["x"]\n', "Missing key 'goal' in [flow]"),
        ('[flow]\ngoal = ""\n[[step]]\nid = "a"\nrun = ["x"]\n', "[flow] goal must not be empty"),
        ('[flow]\ngoal = 3\n[[step]]\nid = "a"\nrun = ["x"]\n', "[flow] goal must be a string, got integer"),
        ('flow = "x"\n', "'flow' must be a table"),
        (HEAD, "Flow has no steps"),
        ("step = []\n" + HEAD, "Flow has no steps"),
        (HEAD + "step = []\n", "Unknown key 'step' in [flow]"),
        (HEAD + '[step]\nid = "a"\nrun = ["x"]\n', "'step' must be an array of tables (write [[step]])"),
        ('[flow]\ngoal = "g"\nnotify = "loud"\n[[step]]\nid = "a"\nrun = ["x"]\n',
         "Invalid [flow] notify 'loud': expected one of done_only|state_changes|silent"),
        ('[flow]\ngoal = "g"\nmax_parallel = 0\n[[step]]\nid = "a"\nrun = ["x"]\n', "max_parallel must be between 1"),
        ('[flow]\ngoal = "g"\nmax_parallel = true\n[[step]]\nid = "a"\nrun = ["x"]\n',
         "max_parallel must be an integer, got boolean"),
        (HEAD + '[[step]]\nrun = ["x"]\n', "Missing key 'id' in step #1"),
        (HEAD + '[[step]]\nid = "has space"\nrun = ["x"]\n', "Invalid step id 'has space'"),
        (HEAD + '[[step]]\nid = 7\nrun = ["x"]\n', "Step #1 id must be a string, got integer"),
        (HEAD + '[[step]]\nid = "a"\nrun = ["x"]\n[[step]]\nid = "a"\nrun = ["y"]\n',
         "Duplicate step id 'a' (steps #1 and #2)"),
        (HEAD + '[[step]]\nid = "a"\nruntime = "docker"\nrun = ["x"]\n',
         "Step 'a' has unknown runtime 'docker': expected one of cli|subagent|acp"),
        (HEAD + '[[step]]\nid = "a"\nruntime = "cron"\nrun = ["x"]\n', "Step 'a' cannot use runtime 'cron'"),
        (HEAD + '[[step]]\nid = "a"\n', "Missing key 'run' in step 'a'"),
        (HEAD + '[[step]]\nid = "a"\nrun = []\n', "Step 'a': run is an empty argv list"),
        (HEAD + '[[step]]\nid = "a"\nrun = ["", "x"]\n', "Step 'a': run[0] (the program) is empty"),
        (HEAD + '[[step]]\nid = "a"\nrun = ["x", 1]\n', "Step 'a': run[1] must be a string, got integer"),
        (HEAD + '[[step]]\nid = "a"\nrun = "make test"\n', "(a single command string needs shell = true)"),
        (HEAD + '[[step]]\nid = "a"\nshell = true\nrun = ["make"]\n',
         "Step 'a': with shell = true, run must be one command string, got array"),
        (HEAD + '[[step]]\nid = "a"\nshell = true\nrun = "  "\n', "Step 'a': run must not be empty"),
        (HEAD + '[[step]]\nid = "a"\nshell = "yes"\nrun = ["x"]\n', "Step 'a': shell must be true or false"),
        (HEAD + '[[step]]\nid = "a"\nrun = ["x"]\nneeds = "b"\n', "Step 'a': needs must be an array of step ids"),
        (HEAD + '[[step]]\nid = "a"\nrun = ["x"]\nneeds = [1]\n', "Step 'a': needs[0] must be a step id string"),
        (HEAD + '[[step]]\nid = "b"\nrun = ["x"]\n[[step]]\nid = "a"\nrun = ["x"]\nneeds = ["b", "b"]\n',
         "Step 'a': needs lists 'b' twice"),
        (HEAD + '[[step]]\nid = "a"\nrun = ["x"]\ntimeout = 600\n', "Step 'a': timeout must be a duration string"),
        (HEAD + '[[step]]\nid = "a"\nrun = ["x"]\ntimeout = "10 minutes"\n', "Step 'a': Invalid timeout '10 minutes'"),
        (HEAD + '[[step]]\nid = "a"\nrun = ["x"]\ntimeout = "0s"\n', "Step 'a': Invalid timeout '0s'"),
        (HEAD + '[[step]]\nid = "a"\nrun = ["x"]\nretries = -1\n', "Step 'a': retries must be between 0 and 100"),
        (HEAD + '[[step]]\nid = "a"\nrun = ["x"]\nretries = 1.5\n', "Step 'a': retries must be an integer, got float"),
        (HEAD + '[[step]]\nid = "a"\nrun = ["x"]\nlabel = ""\n', "Step 'a': label must not be empty"),
        (HEAD + '[[step]]\nid = "a"\nrun = ["x"]\ncwd = 1\n', "Step 'a': cwd must be a string"),
        (HEAD + '[[step]]\nid = "a"\nrun = ["x"]\nenv = ["A=1"]\n', "Step 'a': env must be a table of strings"),
        (HEAD + '[[step]]\nid = "a"\nrun = ["x"]\nenv = { PORT = 8080 }\n',
         "Step 'a': env 'PORT' must be a string, got integer"),
        ('step = [1]\n' + HEAD, "Step #1 must be a table"),
    ],
)
def test_rejections(text: str, expected: str) -> None:
    err = rejected(text)
    assert expected in err.detail, err.detail


def test_bad_toml_names_the_line() -> None:
    err = rejected('[flow]\ngoal = "x"\nthis is not toml\n')
    assert err.detail.startswith("Invalid TOML: ")
    assert "line 3" in err.detail


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(FlowFileError) as info:
        load_flow_file(missing)
    assert info.value.message.startswith(f"{missing}: Cannot read flow file")
    with pytest.raises(FlowFileError, match="Cannot read flow file"):
        load_flow_file(tmp_path)  # a directory
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(FlowFileError, match="not UTF-8"):
        load_flow_file(binary)


def test_load_flow_file_reads_a_path(tmp_path: Path) -> None:
    path = tmp_path / "f.toml"
    path.write_text(flow('[[step]]\nid = "a"\nrun = ["true"]\n'), encoding="utf-8")
    assert load_flow_file(str(path)).step_ids == ("a",)


def test_default_source_is_named() -> None:
    with pytest.raises(FlowFileError, match=r"^<string>: Flow has no steps"):
        parse_flow(HEAD)


def test_errors_are_checked_in_file_order_before_graph() -> None:
    # A type error in a later step wins over an unknown need in an earlier one: nothing half-checked.
    err = rejected(flow("""
        [[step]]
        id = "a"
        run = ["x"]
        needs = ["ghost"]
        [[step]]
        id = "b"
        run = ["x"]
        retries = "2"
    """))
    assert "retries must be an integer" in err.detail


# --- generated cycles ---------------------------------------------------------------------------------


def _toml(needs: dict[str, list[str]]) -> str:
    parts = [HEAD]
    for step, deps in needs.items():
        parts.append(f'[[step]]\nid = "{step}"\nrun = ["true"]\nneeds = {json.dumps(deps)}\n')
    return "".join(parts)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(min_value=1, max_value=12), data=st.data())
def test_generated_ring_is_rejected_naming_every_step(size: int, data: st.DataObject) -> None:
    names = data.draw(st.permutations([f"s{i}" for i in range(size)]))
    # s_k needs its predecessor on the ring: edges name[k-1] -> name[k], and the ring closes.
    needs = {names[k]: [names[k - 1]] for k in range(size)}
    err = rejected(_toml(needs))
    assert isinstance(err, FlowCycleError)
    assert err.cycle[0] == err.cycle[-1]
    assert sorted(err.cycle[:-1]) == sorted(names)
    assert err.detail == "Flow has a cycle: " + " -> ".join(err.cycle)


@settings(max_examples=80, deadline=None)
@given(size=st.integers(min_value=2, max_value=15), data=st.data())
def test_generated_back_edge_is_rejected_with_a_real_cycle(size: int, data: st.DataObject) -> None:
    needs: dict[str, list[str]] = {}
    for j in range(size):
        deps = data.draw(st.sets(st.integers(min_value=0, max_value=j - 1), max_size=3)) if j else set()
        needs[f"n{j}"] = [f"n{i}" for i in sorted(deps)]
    # A back edge: an earlier step needs a later one that (transitively or directly) needs it.
    low = data.draw(st.integers(min_value=0, max_value=size - 2))
    high = data.draw(st.integers(min_value=low + 1, max_value=size - 1))
    if f"n{low}" not in needs[f"n{high}"]:
        needs[f"n{high}"].append(f"n{low}")
    needs[f"n{low}"].append(f"n{high}")
    err = rejected(_toml(needs))
    assert isinstance(err, FlowCycleError)
    cycle = err.cycle
    assert cycle[0] == cycle[-1] and len(cycle) >= 2
    assert len(set(cycle[:-1])) == len(cycle) - 1
    for need, step in itertools.pairwise(cycle):
        assert need in needs[step], f"{step} does not need {need}"
