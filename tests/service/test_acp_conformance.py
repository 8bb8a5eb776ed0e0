"""The acp runtime against the Agent Client Protocol itself, on both engines.

- Conformance: every line flowledger writes to an agent (copied off the wire by `tee`) is valid against the
  protocol's published JSON schema (tests/fixtures/acp/schema.v1.json, @agentclientprotocol/sdk 2.4.0), both as a
  client message and against the definition its method names; initialize, session/new, session/prompt,
  session/cancel and session/close are all seen.
- Interop with agents written with the SDK's typed handlers (tests/e2e/acp_typed_agent.py): one streams several
  chunks around tool-call updates, one asks for permission (denied by selecting its reject option).
- Bad agents (a newer protocol version, malformed JSON, exiting during initialize) end the task `failed` with
  `ACP agent failed: <one line>`, never a hang.

These are about the protocol, which no engine changes, and each starts agents that take seconds to import the SDK:
they run on a SQLite file only. The runtime's ledger writes run on both engines in test_subagent_acp_runtimes.py
and tests/cli (agent runs and agent steps).
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from flowledger import Ledger, TaskStatus
from flowledger.scheduler.logs import log_paths
from flowledger.scheduler.runtimes.acp import AcpRuntime
from flowledger.tasks.core.states import Runtime
from flowledger.tasks.runs import liveness

SESSION = "agent:main:main"
TESTS = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((TESTS / "fixtures" / "acp" / "schema.v1.json").read_text(encoding="utf-8"))
TYPED = [sys.executable, str(TESTS / "e2e" / "acp_typed_agent.py")]
ECHO = [sys.executable, str(TESTS / "e2e" / "acp_echo_agent.py")]
FIVE = {"initialize", "session/new", "session/prompt", "session/cancel", "session/close"}


@pytest.fixture
def ledger(sqlite_ledger: Ledger) -> Ledger:
    return sqlite_ledger


@pytest.fixture
def acp(ledger: Ledger) -> Iterator[AcpRuntime]:
    runtime = AcpRuntime(ledger, kill_grace=timedelta(seconds=2))
    ledger.tasks.cancel_adapters[Runtime.ACP] = runtime
    yield runtime
    runtime.shutdown()


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator({"$defs": SCHEMA["$defs"], **schema})


CLIENT_MESSAGE = _validator(next(branch for branch in SCHEMA["anyOf"] if branch["title"] == "Client"))
# What a client sends, by method: its requests and notifications to the agent, its answers to the agent's requests.
SENT_BY_METHOD = {d["x-method"]: _validator({"$ref": f"#/$defs/{name}"}) for name, d in SCHEMA["$defs"].items()
                  if d.get("x-side") == "agent" and not name.endswith("Response")}
ANSWER_BY_METHOD = {d["x-method"]: _validator({"$ref": f"#/$defs/{name}"}) for name, d in SCHEMA["$defs"].items()
                    if d.get("x-side") == "client" and name.endswith("Response")}


def _wire_tapped(agent: list[str], wire: Path) -> list[str]:
    """The agent behind `tee`: everything flowledger writes to its stdin is also appended to `wire`."""
    return ["/bin/sh", "-c", f"tee -a {shlex.quote(str(wire))} | exec {shlex.join(agent)}"]


def _sent(wire: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in wire.read_text(encoding="utf-8").splitlines() if line.strip()]


def _wait_running(ledger: Ledger, key: str) -> None:
    deadline = time.monotonic() + 15
    while True:
        with ledger.db.read() as conn:
            session = liveness.get_session(conn, key)
        if session is not None and (session.acp or {}).get("state") == "running":
            return
        assert time.monotonic() < deadline, "the turn never reached session/prompt"
        time.sleep(0.02)


def test_the_schema_fixture_is_the_published_draft_2020_12_schema() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert {"initialize", "session/new", "session/prompt", "session/cancel", "session/close"} <= set(SENT_BY_METHOD)


def test_every_message_sent_is_valid_against_the_published_schema(ledger: Ledger, acp: AcpRuntime,
                                                                   tmp_path: Path) -> None:
    wire = tmp_path / "wire.jsonl"
    # A full one-shot turn with a permission request: initialize, session/new, session/prompt, the answer to
    # session/request_permission, session/close.
    asked = acp.spawn(task="may I?", agent=_wire_tapped([*TYPED, "permission"], wire), requester_session_key=SESSION)
    # A cancelled turn: session/cancel.
    slow = acp.spawn(task="sleep 30", agent=_wire_tapped(ECHO, wire), requester_session_key=SESSION)
    _wait_running(ledger, slow.child_session_key or "")
    assert ledger.tasks.cancel(slow.task_id, "enough").cancelled
    for task in (asked, slow):
        assert acp.wait(task.task_id, 30) is not None

    messages = _sent(wire)
    seen: set[str] = set()
    answers = 0
    for message in messages:
        errors = [e.message for e in CLIENT_MESSAGE.iter_errors(message)]
        assert not errors, (message, errors)
        if "method" in message:
            method = message["method"]
            assert method in SENT_BY_METHOD, f"{method} is not a method a client sends"
            errors = [e.message for e in SENT_BY_METHOD[method].iter_errors(message.get("params"))]
            assert not errors, (message, errors)
            seen.add(method)
        else:  # our answer to the agent's session/request_permission
            answers += 1
            errors = [e.message for e in ANSWER_BY_METHOD["session/request_permission"].iter_errors(message["result"])]
            assert not errors, (message, errors)
    assert seen >= FIVE, seen
    assert answers == 1
    prompts = [m for m in messages if m.get("method") == "session/prompt"]
    assert all(block["type"] == "text" for m in prompts for block in m["params"]["prompt"])
    assert sorted(block["text"] for m in prompts for block in m["params"]["prompt"]) == ["may I?", "sleep 30"]


def test_a_typed_agent_streams_chunks_and_tool_calls(ledger: Ledger, acp: AcpRuntime) -> None:
    task = acp.spawn(task="hello there", agent=[*TYPED, "stream"], requester_session_key=SESSION)
    done = acp.wait(task.task_id, 30)
    assert done is not None and done.status == TaskStatus.SUCCEEDED, done
    assert done.terminal_summary == "Reading your prompt: hello there"
    out, err = log_paths(ledger.state_dir, task.task_id)
    # `tasks logs` shows the message stream (stdout) and the tool calls beside the agent's stderr.
    assert out.read_text(encoding="utf-8") == "Reading your prompt: hello there"
    tools = [line for line in err.read_text(encoding="utf-8").splitlines() if line.startswith("[tool]")]
    assert tools == ["[tool] Read notes.txt: pending", "[tool] read-1: in_progress", "[tool] read-1: completed"]


def test_a_permission_request_is_denied_with_the_agents_reject_option(ledger: Ledger, acp: AcpRuntime) -> None:
    task = acp.spawn(task="clean up", agent=[*TYPED, "permission"], requester_session_key=SESSION)
    done = acp.wait(task.task_id, 30)
    assert done is not None and done.status == TaskStatus.SUCCEEDED
    assert done.terminal_summary == "permission: reject"
    _, err = log_paths(ledger.state_dir, task.task_id)
    assert "[permission] rm -rf build: denied" in err.read_text(encoding="utf-8")


def test_bad_agents_fail_with_one_line_and_never_hang(ledger: Ledger, acp: AcpRuntime) -> None:
    started = time.monotonic()
    tasks = {behaviour: acp.spawn(task="hi", agent=[*TYPED, behaviour], requester_session_key=SESSION)
             for behaviour in ("newer-protocol", "malformed", "exit-in-initialize")}
    errors = {}
    for behaviour, task in tasks.items():
        done = acp.wait(task.task_id, 30)
        assert done is not None and done.status == TaskStatus.FAILED, done
        errors[behaviour] = done.error
    assert time.monotonic() - started < 30
    assert errors == {
        "newer-protocol": "ACP agent failed: the agent speaks ACP protocol version 2; flowledger speaks 1",
        "malformed": "ACP agent failed: malformed JSON from the agent: '{this is not json' (during initialize)",
        "exit-in-initialize": "ACP agent failed: the agent exited during initialize (exit code 4): "
                              "agent: giving up during initialize",
    }
    assert all("\n" not in (error or "") for error in errors.values())
