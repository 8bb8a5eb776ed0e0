"""The flow-file format (CONTRACT §5): TOML in, frozen `FlowDefinition` out, or one clear line of error.

Everything is checked before anything is written: TOML syntax, every key and type, step ids, runtimes, `needs`
that name no step, and cycles. `FlowDefinition.to_document()` gives back the same shape as the file (plain JSON
values), and `flow_from_document()` reads it through the same checks, so a controller can persist a definition in
a flow's state and rebuild it later. Pure: the only I/O is `load_flow_file` reading its one file.
"""

from __future__ import annotations

import os
import re
import shlex
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import date, datetime, time, timedelta
from types import MappingProxyType
from typing import Any, NoReturn

import networkx as nx

from flowledger.flows.errors import FlowCycleError, FlowFileError, UnknownStepError, did_you_mean
from flowledger.flows.graph import build_graph, find_cycle
from flowledger.tasks.core.durations import format_duration, parse_duration
from flowledger.tasks.core.errors import InvalidInputError
from flowledger.tasks.core.limits import load_toml, read_regular_file
from flowledger.tasks.core.states import NotifyPolicy, Runtime

# The flow-file errors live in flows/errors.py and are exported from here too, where docs and callers import them.
__all__ = [
    "ACP_MODES", "AGENT_RUNTIMES", "DEFAULT_ACP_MODE", "DEFAULT_MAX_PARALLEL", "DEFAULT_NOTIFY", "DEFAULT_OWNER",
    "FLOW_KEYS", "MAX_RETRIES", "MAX_RETRY_BACKOFF", "ORIGIN_KEYS", "SHELL", "STEP_KEYS", "STEP_RUNTIMES", "TOP_KEYS",
    "FlowCycleError", "FlowDefinition", "FlowFileError", "StepDefinition", "UnknownStepError", "flow_from_document",
    "load_flow_file", "parse_flow",
]

DEFAULT_OWNER = "agent:main:main"
DEFAULT_NOTIFY = NotifyPolicy.DONE_ONLY
DEFAULT_MAX_PARALLEL = 4
MAX_RETRIES = 100
# `cron` is a schedule, not something a flow step can run.
STEP_RUNTIMES: tuple[Runtime, ...] = (Runtime.CLI, Runtime.SUBAGENT, Runtime.ACP)
SHELL = "/bin/sh"

TOP_KEYS = ("flow", "step")
FLOW_KEYS = ("goal", "owner", "notify", "max_parallel", "pass_env", "origin")
STEP_KEYS = ("id", "runtime", "run", "shell", "needs", "timeout", "retries", "label", "cwd", "env", "prompt", "mode",
             "retry_delay", "retry_backoff")
ORIGIN_KEYS = ("channel", "to", "thread_id")
MAX_RETRY_BACKOFF = 100.0
# Agent steps (CONTRACT §7 "Agent runs"): what is asked, and whether an ACP session outlives its step.
AGENT_RUNTIMES: tuple[Runtime, ...] = (Runtime.SUBAGENT, Runtime.ACP)
ACP_MODES = ("oneshot", "persistent")
DEFAULT_ACP_MODE = "oneshot"

# Letters, digits and `_ . : -`; no spaces and no `>`, so `a -> b` in a cycle message is never ambiguous.
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_STEP_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,99}$")


def _empty_env() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class StepDefinition:
    """One `[[step]]`. `run` is the argv; with `shell = true` it holds the one command string instead.

    `prompt` and `mode` are kept as written (None when absent); `agent_prompt` and `session_mode` give what an
    agent step runs with once the defaults are applied.
    """

    id: str
    _: KW_ONLY
    run: tuple[str, ...]
    runtime: Runtime = Runtime.CLI
    shell: bool = False
    needs: tuple[str, ...] = ()
    timeout: timedelta | None = None
    retries: int = 0
    label: str | None = None
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=_empty_env, hash=False)
    prompt: str | None = None
    mode: str | None = None
    retry_delay: timedelta | None = None
    retry_backoff: float = 1.0

    def __post_init__(self) -> None:
        # Accept lists and dicts from hand-written code; store immutable values.
        object.__setattr__(self, "run", tuple(self.run))
        object.__setattr__(self, "needs", tuple(self.needs))
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))

    @property
    def argv(self) -> tuple[str, ...]:
        """What to execute: `run` itself, or `/bin/sh -c <command>` for a shell step."""
        return (SHELL, "-c", self.run[0]) if self.shell else self.run

    @property
    def command(self) -> str:
        """The command as one line for people (task text, logs)."""
        return self.run[0] if self.shell else shlex.join(self.run)

    @property
    def display_label(self) -> str:
        return self.label or self.id

    @property
    def agent_prompt(self) -> str | None:
        """The text sent to the agent: `prompt`, else (subagent only) the step's label, else its id."""
        if self.runtime == Runtime.CLI:
            return None
        return self.prompt if self.prompt is not None else self.display_label

    @property
    def session_mode(self) -> str | None:
        """An acp step's session mode (`oneshot` unless the file says `persistent`); None for other steps."""
        return (self.mode or DEFAULT_ACP_MODE) if self.runtime == Runtime.ACP else None

    def retry_wait(self, attempt: int) -> timedelta:
        """How long after attempt `attempt` (1-based) ended the next one starts: retry_delay × backoff^(k−1)."""
        if self.retry_delay is None or attempt < 1:
            return timedelta(0)
        return self.retry_delay * (self.retry_backoff ** (attempt - 1))

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"id": self.id, "runtime": self.runtime.value}
        doc["run"] = self.run[0] if self.shell else list(self.run)
        if self.shell:
            doc["shell"] = True
        if self.needs:
            doc["needs"] = list(self.needs)
        if self.timeout is not None:
            doc["timeout"] = format_duration(self.timeout)
        if self.retries:
            doc["retries"] = self.retries
        if self.retry_delay is not None:
            doc["retry_delay"] = format_duration(self.retry_delay)
        if self.retry_backoff != 1.0:
            doc["retry_backoff"] = self.retry_backoff
        for key, value in (("label", self.label), ("cwd", self.cwd), ("prompt", self.prompt), ("mode", self.mode)):
            if value is not None:
                doc[key] = value
        if self.env:
            doc["env"] = dict(self.env)
        return doc


@dataclass(frozen=True, slots=True)
class FlowDefinition:
    """A whole flow file. `steps` keep file order; ids are unique and `needs` form a DAG (when parsed)."""

    goal: str
    _: KW_ONLY
    owner: str = DEFAULT_OWNER
    notify: NotifyPolicy = DEFAULT_NOTIFY
    max_parallel: int = DEFAULT_MAX_PARALLEL
    pass_env: tuple[str, ...] = ()  # variables a detached run takes from the submitter (flows/context.py)
    steps: tuple[StepDefinition, ...] = ()
    origin: Mapping[str, str] | None = None  # where the flow's notices go: {channel, to, thread_id?}
    _by_id: Mapping[str, StepDefinition] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "pass_env", tuple(self.pass_env))
        object.__setattr__(self, "_by_id", MappingProxyType({s.id: s for s in self.steps}))

    @property
    def step_ids(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.steps)

    def step(self, step_id: str) -> StepDefinition:
        """The step with this id; KeyError if there is none."""
        return self._by_id[step_id]

    def to_document(self) -> dict[str, Any]:
        """The flow as plain JSON/TOML values, in the file's own shape."""
        flow: dict[str, Any] = {"goal": self.goal, "owner": self.owner, "notify": self.notify.value,
                                "max_parallel": self.max_parallel}
        if self.pass_env:
            flow["pass_env"] = list(self.pass_env)
        if self.origin is not None:
            flow["origin"] = dict(self.origin)
        return {"flow": flow, "step": [s.to_document() for s in self.steps]}


# --- entry points -------------------------------------------------------------------------------------


def load_flow_file(path: str | os.PathLike[str]) -> FlowDefinition:
    """Read and check a flow file; raise FlowFileError (exit code 2) with one line naming the file."""
    source = os.fspath(path)
    try:
        raw = read_regular_file(path)
    except OSError as exc:
        raise FlowFileError(f"Cannot read flow file: {exc.strerror or exc}", source) from None
    except InvalidInputError as exc:  # a FIFO, a device, more than 1 MiB (CONTRACT §7)
        raise FlowFileError(f"Cannot read flow file: {exc.message}", source) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FlowFileError("Flow file is not UTF-8 text", source) from None
    return parse_flow(text, source=source)


def parse_flow(text: str, source: str = "<string>") -> FlowDefinition:
    """Parse TOML text into a checked FlowDefinition. `source` prefixes every error message."""
    try:
        data = load_toml(text)
    except tomllib.TOMLDecodeError as exc:
        raise FlowFileError(f"Invalid TOML: {exc}", source) from None
    except InvalidInputError as exc:
        raise FlowFileError(f"Invalid TOML: {exc.message}", source) from None
    return flow_from_document(data, source=source)


def flow_from_document(data: Mapping[str, Any], source: str = "<document>") -> FlowDefinition:
    """Check a decoded document (TOML tables, or JSON from `to_document`) and build the definition."""
    return _Checker(source).flow(data)


# --- checking -----------------------------------------------------------------------------------------


def _toml_type(value: object) -> str:
    kinds: tuple[tuple[type, str], ...] = (
        (bool, "boolean"), (int, "integer"), (float, "float"), (str, "string"), (list, "array"),
        (dict, "table"), (datetime, "datetime"), (date, "date"), (time, "time"),
    )
    for kind, name in kinds:
        if isinstance(value, kind):
            return name
    return type(value).__name__


class _Checker:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, detail: str) -> NoReturn:
        raise FlowFileError(detail, self.source)

    def keys(self, table: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
        for key in table:
            if key not in allowed:
                self.fail(f"Unknown key {key!r} {where}{did_you_mean(str(key), allowed)}")

    def text(self, value: object, what: str) -> str:
        if not isinstance(value, str):
            self.fail(f"{what} must be a string, got {_toml_type(value)}")
        if not value.strip():
            self.fail(f"{what} must not be empty")
        if "\x00" in value:
            self.fail(f"{what} contains a NUL character")
        return value.strip()

    def integer(self, value: object, what: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{what} must be an integer, got {_toml_type(value)}")
        if not low <= value <= high:
            self.fail(f"{what} must be between {low} and {high}, got {value}")
        return value

    # flow ----------------------------------------------------------------------------------------------

    def flow(self, data: Mapping[str, Any]) -> FlowDefinition:
        if not isinstance(data, Mapping):
            self.fail(f"A flow document must be a table, got {_toml_type(data)}")
        self.keys(data, TOP_KEYS, "at top level")
        head = data.get("flow")
        if head is None:
            self.fail("Missing [flow] table (it needs at least a goal)")
        if not isinstance(head, Mapping):
            self.fail(f"'flow' must be a table ([flow]), got {_toml_type(head)}")
        self.keys(head, FLOW_KEYS, "in [flow]")
        if "goal" not in head:
            self.fail("Missing key 'goal' in [flow]")
        goal = self.text(head["goal"], "[flow] goal")
        owner = self.text(head.get("owner", DEFAULT_OWNER), "[flow] owner")
        notify = self.notify(head.get("notify", DEFAULT_NOTIFY.value))
        max_parallel = self.integer(head.get("max_parallel", DEFAULT_MAX_PARALLEL), "[flow] max_parallel", 1, 10_000)
        origin = self.origin(head["origin"]) if "origin" in head else None
        pass_env = self.pass_env(head.get("pass_env", []))

        raw_steps = data.get("step", [])
        if not isinstance(raw_steps, list):
            self.fail(f"'step' must be an array of tables (write [[step]]), got {_toml_type(raw_steps)}")
        if not raw_steps:
            self.fail("Flow has no steps: add at least one [[step]]")
        steps: list[StepDefinition] = []
        first_seen: dict[str, int] = {}
        for number, raw in enumerate(raw_steps, start=1):
            step = self.step(raw, number)
            if step.id in first_seen:
                self.fail(f"Duplicate step id {step.id!r} (steps #{first_seen[step.id]} and #{number})")
            first_seen[step.id] = number
            steps.append(step)
        definition = FlowDefinition(goal, owner=owner, notify=notify, max_parallel=max_parallel, pass_env=pass_env,
                                    steps=tuple(steps), origin=origin)
        self.graph(definition)
        return definition

    def notify(self, value: object) -> NotifyPolicy:
        choices = "|".join(p.value for p in NotifyPolicy)
        if not isinstance(value, str):
            self.fail(f"[flow] notify must be a string ({choices}), got {_toml_type(value)}")
        try:
            return NotifyPolicy(value.strip())
        except ValueError:
            self.fail(f"Invalid [flow] notify {value!r}: expected one of {choices}")

    def origin(self, value: object) -> dict[str, str]:
        where = "[flow] origin"
        if not isinstance(value, Mapping):
            self.fail(f"{where} must be a table such as {{ channel = \"webhook\", to = \"ops\" }}, "
                      f"got {_toml_type(value)}")
        self.keys(value, ORIGIN_KEYS, f"in {where}")
        for required in ("channel", "to"):
            if required not in value:
                self.fail(f"Missing key {required!r} in {where}")
        return {key: self.text(value[key], f"{where} {key}") for key in ORIGIN_KEYS if key in value}

    def pass_env(self, value: object) -> tuple[str, ...]:
        if not isinstance(value, list):
            self.fail(f"[flow] pass_env must be an array of variable names such as [\"CI\"], got {_toml_type(value)}")
        names: list[str] = []
        for index, name in enumerate(value):
            if not isinstance(name, str) or not _ENV_NAME.match(name):
                self.fail(f"[flow] pass_env[{index}] must be a variable name (letters, digits, _), got {name!r}")
            if name.startswith("FLOWLEDGER_"):
                self.fail(f"[flow] pass_env cannot pass {name!r}: flowledger's own settings never reach a step")
            if name not in names:
                names.append(name)
        return tuple(names)

    def graph(self, definition: FlowDefinition) -> None:
        known = definition.step_ids
        ids = set(known)
        for step in definition.steps:
            for need in step.needs:
                if need not in ids:
                    raise UnknownStepError(step.id, need, known, self.source)
        graph = build_graph(definition)
        # nx.find_cycle's edge DFS is superlinear on large DAGs (~24 s at 10,000 steps); the acyclicity test is
        # linear, so the cycle is only looked for when there is one to report.
        if nx.is_directed_acyclic_graph(graph):
            return
        cycle = find_cycle(graph)
        if cycle is not None:
            raise FlowCycleError(cycle, self.source)

    # step ----------------------------------------------------------------------------------------------

    def step(self, raw: object, number: int) -> StepDefinition:
        if not isinstance(raw, Mapping):
            self.fail(f"Step #{number} must be a table ([[step]]), got {_toml_type(raw)}")
        if "id" not in raw:
            self.fail(f"Missing key 'id' in step #{number}")
        step_id = self.text(raw["id"], f"Step #{number} id")
        if not _STEP_ID.match(step_id):
            self.fail(f"Invalid step id {step_id!r}: use letters, digits and _ . : - (at most 100 characters)")
        name = f"step {step_id!r}"
        self.keys(raw, STEP_KEYS, f"in {name}")
        prefix = f"Step {step_id!r}:"

        runtime = self.runtime(raw.get("runtime", Runtime.CLI.value), step_id)
        shell = raw.get("shell", False)
        if not isinstance(shell, bool):
            self.fail(f"{prefix} shell must be true or false, got {_toml_type(shell)}")
        if "run" not in raw:
            self.fail(f"Missing key 'run' in {name}")
        run = self.run(raw["run"], shell, prefix)
        needs = self.needs(raw.get("needs", []), prefix)
        timeout = self.duration(raw["timeout"], f"{prefix} timeout") if "timeout" in raw else None
        retries = self.integer(raw.get("retries", 0), f"{prefix} retries", 0, MAX_RETRIES)
        retry_delay = self.duration(raw["retry_delay"], f"{prefix} retry_delay") if "retry_delay" in raw else None
        retry_backoff = self.backoff(raw.get("retry_backoff", 1), prefix)
        label = self.text(raw["label"], f"{prefix} label") if "label" in raw else None
        cwd = self.text(raw["cwd"], f"{prefix} cwd") if "cwd" in raw else None
        env = self.env(raw.get("env", {}), prefix)
        prompt, mode = self.agent(raw, runtime, step_id)
        return StepDefinition(step_id, run=run, runtime=runtime, shell=shell, needs=needs, timeout=timeout,
                              retries=retries, label=label, cwd=cwd, env=env, prompt=prompt, mode=mode,
                              retry_delay=retry_delay, retry_backoff=retry_backoff)

    def duration(self, value: object, what: str) -> timedelta:
        prefix, _, name = what.rpartition(" ")
        if not isinstance(value, str):
            self.fail(f"{what} must be a duration string such as \"10m\", got {_toml_type(value)}")
        try:
            return parse_duration(value, what=name)
        except InvalidInputError as exc:
            self.fail(f"{prefix} {exc.message.rstrip('.')}")

    def backoff(self, value: object, prefix: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(f"{prefix} retry_backoff must be a number (at least 1), got {_toml_type(value)}")
        if not 1 <= value <= MAX_RETRY_BACKOFF:
            self.fail(f"{prefix} retry_backoff must be between 1 and {MAX_RETRY_BACKOFF:g}, got {value}")
        return float(value)

    def agent(self, raw: Mapping[str, Any], runtime: Runtime, step_id: str) -> tuple[str | None, str | None]:
        """`prompt` and `mode`: what an agent step asks, and (acp) whether its session outlives the step."""
        prefix = f"Step {step_id!r}:"
        if "prompt" in raw and runtime not in AGENT_RUNTIMES:
            self.fail(f"Step {step_id!r} has a prompt but runtime {runtime.value!r} runs its command: "
                      "prompt is for acp and subagent steps")
        if "prompt" not in raw and runtime == Runtime.ACP:
            self.fail(f"Missing key 'prompt' in step {step_id!r} (an acp step sends it to the agent)")
        prompt = self.text(raw["prompt"], f"{prefix} prompt") if "prompt" in raw else None
        mode = None
        if "mode" in raw:
            if runtime != Runtime.ACP:
                self.fail(f"Step {step_id!r} has a mode but runtime {runtime.value!r} has no session: "
                          "mode is for acp steps")
            value = raw["mode"]
            choices = "|".join(ACP_MODES)
            if not isinstance(value, str):
                self.fail(f"{prefix} mode must be a string ({choices}), got {_toml_type(value)}")
            if value.strip() not in ACP_MODES:
                self.fail(f"{prefix} invalid mode {value!r}: expected one of {choices}")
            mode = value.strip()
        return prompt, mode

    def runtime(self, value: object, step_id: str) -> Runtime:
        choices = "|".join(r.value for r in STEP_RUNTIMES)
        if not isinstance(value, str):
            self.fail(f"Step {step_id!r}: runtime must be a string ({choices}), got {_toml_type(value)}")
        cleaned = value.strip()
        if cleaned == Runtime.CRON.value:
            self.fail(f"Step {step_id!r} cannot use runtime 'cron' (schedules belong to 'flowledger cron add'): "
                      f"expected one of {choices}")
        for runtime in STEP_RUNTIMES:
            if cleaned == runtime.value:
                return runtime
        self.fail(f"Step {step_id!r} has unknown runtime {value!r}: expected one of {choices}")

    def run(self, value: object, shell: bool, prefix: str) -> tuple[str, ...]:
        if shell:
            if not isinstance(value, str):
                self.fail(f"{prefix} with shell = true, run must be one command string, got {_toml_type(value)}")
            return (self.text(value, f"{prefix} run"),)
        if isinstance(value, str):
            self.fail(f"{prefix} run must be an argv list such as [\"make\", \"test\"] "
                      "(a single command string needs shell = true)")
        if not isinstance(value, list):
            self.fail(f"{prefix} run must be an argv list of strings, got {_toml_type(value)}")
        if not value:
            self.fail(f"{prefix} run is an empty argv list")
        argv: list[str] = []
        for index, arg in enumerate(value):
            if not isinstance(arg, str):
                self.fail(f"{prefix} run[{index}] must be a string, got {_toml_type(arg)}")
            if "\x00" in arg:
                self.fail(f"{prefix} run[{index}] contains a NUL character")
            argv.append(arg)
        if not argv[0].strip():
            self.fail(f"{prefix} run[0] (the program) is empty")
        return tuple(argv)

    def needs(self, value: object, prefix: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            self.fail(f"{prefix} needs must be an array of step ids such as [\"build\"], got {_toml_type(value)}")
        seen: list[str] = []
        for index, need in enumerate(value):
            if not isinstance(need, str):
                self.fail(f"{prefix} needs[{index}] must be a step id string, got {_toml_type(need)}")
            cleaned = need.strip()
            if cleaned in seen:
                self.fail(f"{prefix} needs lists {cleaned!r} twice")
            seen.append(cleaned)
        return tuple(seen)

    def env(self, value: object, prefix: str) -> dict[str, str]:
        if not isinstance(value, Mapping):
            self.fail(f"{prefix} env must be a table of strings, got {_toml_type(value)}")
        env: dict[str, str] = {}
        for key, item in value.items():
            if not key or "=" in key or "\x00" in key:
                self.fail(f"{prefix} env key {key!r} is not a valid variable name")
            if not isinstance(item, str):
                self.fail(f"{prefix} env {key!r} must be a string, got {_toml_type(item)}")
            if "\x00" in item:
                self.fail(f"{prefix} env {key!r} contains a NUL character")
            env[key] = item
        return env
