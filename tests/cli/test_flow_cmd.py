"""`flowledger tasks flow …`: REFERENCE §11 scenario 48, validate/run with real processes, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowledger import Ledger
from flowledger.flows.models import FlowStatus

OWNER = "agent:main:main"



def blocked_flow(ledger: Ledger) -> str:
    flow = ledger.flows.create_managed(OWNER, "tests/cli", "Review PR 123")
    child = ledger.flows.run_task(flow.flow_id, runtime="acp", task="Inspect the diff", label="Inspect PR 123",
                                  child_session_key="agent:main:acp:child-1", run_id="run-child-1",
                                  status="running")
    assert child.created
    current = ledger.flows.get(flow.flow_id)
    assert current is not None
    ledger.flows.set_waiting(flow.flow_id, current.revision, blocked_summary="Waiting on child task output",
                             current_step="inspect")
    return flow.flow_id


def test_flow_list_json_with_status_scenario_48(ledger: Ledger, cli) -> None:
    flow_id = blocked_flow(ledger)
    ledger.flows.create_managed(OWNER, "tests/cli", "Other")
    code, out, _ = cli("tasks", "flow", "list", "--json", "--status", "blocked")
    assert code == 0
    doc = json.loads(out)
    assert (doc["count"], doc["status"]) == (1, "blocked")
    [flow] = doc["flows"]
    assert flow["flow_id"] == flow_id
    assert (flow["task_summary"]["total"], flow["task_summary"]["active"]) == (1, 1)
    assert [(t["run_id"], t["label"]) for t in flow["tasks"]] == [("run-child-1", "Inspect PR 123")]
    expected = {"flow_id", "sync_mode", "owner_key", "controller_id", "revision", "status", "notify_policy", "goal",
                "current_step", "blocked_task_id", "blocked_summary", "state", "wait", "cancel_requested_at",
                "created_at", "updated_at", "ended_at", "tasks", "task_summary"}
    assert set(flow) == expected
    assert flow["created_at"].endswith("Z") and flow["sync_mode"] == "managed"


def test_flow_show_text_scenario_48(ledger: Ledger, cli) -> None:
    flow_id = blocked_flow(ledger)
    code, out, _ = cli("tasks", "flow", "show", flow_id)
    assert code == 0
    assert "state: Waiting on child task output" in out and "Linked tasks:" in out
    assert "run-child-1 Inspect PR 123" in out
    for hidden in ("syncMode:", "controllerId:", "revision:"):
        assert hidden not in out
    code, out, _ = cli("tasks", "flow", "show", OWNER, "--json")
    assert code == 0 and json.loads(out)["flow_id"] == flow_id


def test_control_characters_are_escaped(ledger: Ledger, cli) -> None:
    flow = ledger.flows.create_managed(OWNER, "ctl\x1b[31m\tred", "Line one\nline\ttwo \x1b[1mbold\x1b[0m")
    code, out, _ = cli("tasks", "flow", "list")
    assert code == 0 and "\x1b" not in out and "\\n" in out
    code, out, _ = cli("tasks", "flow", "show", flow.flow_id)
    assert "goal: Line one\\nline\\ttwo bold" in out and "\x1b" not in out


def test_flow_cancel_scenario_48(ledger: Ledger, cli) -> None:
    flow = ledger.flows.create_managed(OWNER, "tests/cli", "Nothing to do")
    code, out, _ = cli("tasks", "flow", "cancel", flow.flow_id)
    assert code == 0
    assert out.strip() == f"Cancelled {flow.flow_id} (managed) with status cancelled."
    code, _, err = cli("tasks", "flow", "cancel", flow.flow_id)
    assert code == 1 and "Flow is already cancelled." in err
    code, _, err = cli("tasks", "flow", "cancel", "no-such-flow")
    assert code == 1 and err.strip() == "Flow not found: no-such-flow."


def test_list_text_and_pressure(ledger: Ledger, cli) -> None:
    code, out, _ = cli("tasks", "flow", "list")
    assert code == 0 and "TaskFlows: 0" in out and "No TaskFlows found." in out
    blocked_flow(ledger)
    done = ledger.flows.create_managed(OWNER, "tests/cli", "Done")
    ledger.flows.request_cancel(done.flow_id, 0)
    ledger.flows.cancel(done.flow_id)
    code, out, _ = cli("tasks", "flow", "list")
    assert "TaskFlow pressure: 0 active · 1 blocked · 0 cancel-requested · 2 total" in out
    assert "Active/Tasks" in out and "  1/1  " in out


def test_bad_status_and_missing_flow(cli) -> None:
    code, _, err = cli("tasks", "flow", "list", "--status", "bogus")
    assert code == 2 and "Traceback" not in err
    code, _, err = cli("tasks", "flow", "show", "nope")
    assert code == 1 and err.strip() == "Flow not found: nope."


BAD_FILES = {
    "cycle": ('[flow]\ngoal="x"\n[[step]]\nid="a"\nneeds=["b"]\nrun=["true"]\n'
              '[[step]]\nid="b"\nneeds=["a"]\nrun=["true"]\n', "cycle: a -> b -> a"),
    "unknown_need": ('[flow]\ngoal="x"\n[[step]]\nid="a"\nneeds=["zz"]\nrun=["true"]\n', "unknown step 'zz'"),
    "duplicate": ('[flow]\ngoal="x"\n[[step]]\nid="a"\nrun=["true"]\n[[step]]\nid="a"\nrun=["true"]\n',
                  "Duplicate step id 'a'"),
    "runtime": ('[flow]\ngoal="x"\n[[step]]\nid="a"\nruntime="docker"\nrun=["true"]\n', "unknown runtime"),
    "empty": ('[flow]\ngoal="x"\n', "no steps"),
    "key": ('[flow]\ngoal="x"\n[[step]]\nid="a"\nrun=["true"]\ncolour="red"\n', "Unknown key 'colour'"),
    "cli_prompt": ('[flow]\ngoal="x"\n[[step]]\nid="a"\nrun=["true"]\nprompt="hi"\n',
                   "Step 'a' has a prompt but runtime 'cli' runs its command"),
    "acp_without_prompt": ('[flow]\ngoal="x"\n[[step]]\nid="ask"\nruntime="acp"\nrun=["agent"]\n',
                           "Missing key 'prompt' in step 'ask'"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_validate_and_run_reject_bad_files(case: str, cli, tmp_path: Path) -> None:
    text, message = BAD_FILES[case]
    path = tmp_path / f"{case}.toml"
    path.write_text(text)
    for command in ("validate", "run"):
        code, out, err = cli("tasks", "flow", command, str(path))
        assert code == 2, err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, out, _ = cli("tasks", "flow", "list", "--json")
    assert json.loads(out)["count"] == 0  # nothing was written


def test_validate_ok_and_missing_file(cli, tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text('[flow]\ngoal="Ship"\n[[step]]\nid="a"\nrun=["true"]\n')
    code, out, _ = cli("tasks", "flow", "validate", str(path))
    assert code == 0 and out.strip() == "Flow file OK: Ship (1 step)."
    code, _, err = cli("tasks", "flow", "validate", str(tmp_path / "missing.toml"))
    assert code == 2 and "Cannot read flow file" in err


FLOW = """
[flow]
goal = "Build and test"
[[step]]
id = "build"
run = ["sh", "-c", "echo built"]
[[step]]
id = "test"
needs = ["build"]
run = "echo tested; exit {code}"
shell = true
[[step]]
id = "publish"
needs = ["test"]
run = ["true"]
"""


def test_run_succeeds_with_progress(cli, tmp_path: Path) -> None:
    path = tmp_path / "flow.toml"
    path.write_text(FLOW.format(code=0))
    code, out, err = cli("tasks", "flow", "run", str(path))
    assert code == 0, err
    assert "▶ build started" in err and "✔ publish succeeded" in err
    assert "succeeded: Build and test" in out and "flowledger tasks flow show" in out


def test_run_failure_exits_1_and_names_the_step(ledger: Ledger, cli, tmp_path: Path) -> None:
    path = tmp_path / "flow.toml"
    path.write_text(FLOW.format(code=3))
    code, out, _ = cli("tasks", "flow", "run", str(path), "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["status"] == "failed" and doc["blocked_summary"].startswith("Step test failed")
    steps = doc["state"]["steps"]
    assert (steps["build"]["status"], steps["test"]["status"], steps["publish"]["status"]) == (
        "succeeded", "failed", "cancelled")
    assert doc["task_summary"]["total"] == 2
    flow = ledger.flows.get(doc["flow_id"])
    assert flow is not None and flow.status == FlowStatus.FAILED


def test_run_detach_queues_for_the_gateway(ledger: Ledger, cli, tmp_path: Path) -> None:
    path = tmp_path / "flow.toml"
    path.write_text(FLOW.format(code=0))
    code, out, _ = cli("tasks", "flow", "run", str(path), "--detach", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["status"] == "queued" and doc["controller_id"] == "flowledger/graph" and doc["tasks"] == []
    assert ledger.flows.list("queued")[0].flow_id == doc["flow_id"]


def test_cancel_from_another_process_stops_a_running_flow(sqlite_url: str, state_dir: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    path = tmp_path / "long.toml"
    path.write_text('[flow]\ngoal="Long"\n[[step]]\nid="wait"\nrun=["sleep","30"]\n'
                    '[[step]]\nid="after"\nneeds=["wait"]\nrun=["true"]\n')
    args = [sys.executable, "-m", "flowledger.cli.main", "--state-dir", str(state_dir), "--database-url", sqlite_url,
            "tasks", "flow", "run", str(path)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
    try:
        with Ledger.open(state_dir=state_dir, database_url=sqlite_url) as ledger:
            deadline = time.monotonic() + 20
            flow_id = None
            while time.monotonic() < deadline:  # wait for the other process, not for domain time
                running = [t for t in ledger.tasks.list(status="running") if t.label == "wait"]
                if running:
                    flow_id = running[0].parent_flow_id
                    break
                time.sleep(0.05)
            assert flow_id is not None, proc.stderr.read1().decode() if proc.stderr else ""
            result = ledger.flows.cancel(flow_id)
            assert result.found
            out, err = proc.communicate(timeout=30)
            assert proc.returncode == 1, err.decode()
            flow = ledger.flows.get(flow_id)
            assert flow is not None and flow.status == FlowStatus.CANCELLED
            tasks = ledger.flows.linked_tasks(flow_id)
            assert [t.label for t in tasks] == ["wait"] and tasks[0].status.value == "cancelled"
            assert b"cancelled" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


AGENTS = Path(__file__).resolve().parents[1] / "e2e"
AGENT_FLOW = """
[flow]
goal = "Build, then ask the agents"
[[step]]
id = "build"
run = ["sh", "-c", "echo built"]
[[step]]
id = "summary"
runtime = "acp"
needs = ["build"]
run = [{python}, {typed_agent}, "stream"]
prompt = "Summarise the build"
[[step]]
id = "check"
runtime = "subagent"
needs = ["build"]
run = ["sh", "-c", "printf 'stdin=%s env=%s' \\"$(cat)\\" \\"$FLOWLEDGER_PROMPT\\""]
prompt = "Check the tests"
[[step]]
id = "review"
runtime = "subagent"
needs = ["summary", "check"]
label = "Review the release"
run = ["reviewer:review"]
cwd = {cwd}
"""


def test_run_drives_acp_and_subagent_steps_in_the_foreground(ledger: Ledger, cli, tmp_path: Path) -> None:
    import sys

    (tmp_path / "reviewer.py").write_text("def review(prompt):\n    return 'reviewed: ' + prompt\n")
    path = tmp_path / "agents.toml"
    path.write_text(AGENT_FLOW.format(python=json.dumps(sys.executable),
                                      typed_agent=json.dumps(str(AGENTS / "acp_typed_agent.py")),
                                      cwd=json.dumps(str(tmp_path))))
    code, out, err = cli("tasks", "flow", "run", str(path), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["status"] == "succeeded"
    tasks = {t["run_id"].split(":")[-2]: t for t in doc["tasks"]}  # by step id (a step's label is its tasks')
    assert tasks["review"]["label"] == "Review the release"
    assert {label: t["status"] for label, t in tasks.items()} == dict.fromkeys(
        ("build", "summary", "check", "review"), "succeeded")
    assert [tasks[s]["runtime"] for s in ("build", "summary", "check", "review")] == ["cli", "acp", "subagent",
                                                                                       "subagent"]
    # Each agent step is asked its prompt (the task text) and its terminal summary is the agent's reply.
    assert tasks["summary"]["task"] == "Summarise the build"
    assert tasks["summary"]["terminal_summary"] == "Reading your prompt: Summarise the build"
    assert tasks["check"]["terminal_summary"] == "stdin=Check the tests env=Check the tests"
    assert tasks["review"]["terminal_summary"] == "reviewed: Review the release"
    # Every attempt of an agent step has a child session of its own; a one-shot ACP session is closed with it.
    assert tasks["summary"]["child_session_key"] == f"agent:main:acp:{tasks['summary']['task_id']}"
    assert tasks["check"]["child_session_key"] != tasks["review"]["child_session_key"]
    code, logs, _ = cli("tasks", "logs", tasks["summary"]["task_id"])
    assert code == 0 and logs == "Reading your prompt: Summarise the build"


def test_a_persistent_acp_session_stays_idle_and_no_other_step_reuses_it(ledger: Ledger, cli,
                                                                                tmp_path: Path) -> None:
    import sys

    from flowledger.tasks.runs import liveness

    path = tmp_path / "persistent.toml"
    agent = json.dumps([sys.executable, str(AGENTS / "acp_echo_agent.py")])
    path.write_text(f'[flow]\ngoal="Ask twice"\n[[step]]\nid="first"\nruntime="acp"\nrun={agent}\n'
                    'prompt="hello"\nmode="persistent"\n'
                    f'[[step]]\nid="second"\nruntime="acp"\nneeds=["first"]\nrun={agent}\nprompt="again"\n'
                    'mode="persistent"\n')
    code, out, err = cli("tasks", "flow", "run", str(path), "--json")
    assert code == 0, err
    tasks = sorted(json.loads(out)["tasks"], key=lambda t: t["label"])
    keys = [t["child_session_key"] for t in tasks]
    assert len(set(keys)) == 2 and [t["terminal_summary"] for t in tasks] == ["echo: hello", "echo: again"]
    with ledger.db.read() as conn:
        sessions = [liveness.get_session(conn, key) for key in keys]
    for session in sessions:
        assert session is not None and session.mode == "persistent"
        assert session.acp is not None and session.acp["state"] == "idle" and session.acp["session_id"]
    assert sessions[0].acp["session_id"] != sessions[1].acp["session_id"]  # type: ignore[union-attr, index]
