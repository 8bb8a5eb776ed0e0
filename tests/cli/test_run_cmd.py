"""`flowledger run` without a gateway (runs in-process, records everything) and `flowledger tasks logs`."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from flowledger import Ledger
from flowledger.scheduler import queue

Invoke = Callable[..., tuple[int, str, str]]  # the `cli` fixture (tests/cli/conftest.py)




def test_run_in_process_succeeds_and_shows_the_output(cli: Invoke) -> None:
    code, out, err = cli("run", "--", "sh", "-c", "echo hello; echo careful >&2")
    assert code == 0 and out == "hello\n" and err == "careful\n"


def test_run_json_prints_the_final_task(cli: Invoke, database_url: str, state_dir: Path) -> None:
    code, out, _ = cli("run", "--json", "--label", "greet", "--session", "agent:main:main", "--", "echo", "hi")
    task = json.loads(out)
    assert code == 0 and task["status"] == "succeeded" and task["runtime"] == "cli"
    assert task["label"] == "greet" and task["owner_key"] == "agent:main:main"
    assert task["run_id"] == f"cli:{task['task_id']}" and task["terminal_summary"] == "hi"
    with Ledger.open(state_dir=state_dir, database_url=database_url) as ledger:
        payload = queue.get_payload(ledger, task["task_id"])
        assert payload is not None and payload.claimed_by is not None and payload.claimed_by.startswith("run-")


def test_run_exits_with_the_commands_code(cli: Invoke) -> None:
    code, out, err = cli("run", "--json", "--", "sh", "-c", "echo nope >&2; exit 4")
    task = json.loads(out)
    assert (code, task["error"], task["exit_code"]) == (4, "exit code 4: nope", 4)
    code, _, err = cli("run", "--", "sh", "-c", "exit 0")
    assert code == 0
    code, _, err = cli("run", "--timeout", "200ms", "--", "sleep", "30")
    assert code == 124 and "timed_out" in err and "Traceback" not in err
    code, _, err = cli("run", "--", "no-such-command-flowledger")
    assert code == 127 and "cannot start" in err


def test_run_exits_130_when_the_task_is_cancelled(cli: Invoke, database_url: str, state_dir: Path) -> None:
    # The command cancels its own task from another process, as an operator would; the runtime stops it.
    cancel = (f'"{sys.executable}" -m flowledger.cli.main --state-dir "{state_dir}" --database-url "{database_url}"'
              ' tasks cancel "$FLOWLEDGER_TASK_ID" >/dev/null; sleep 30')
    code, out, _ = cli("run", "--json", "--", "sh", "-c", cancel)
    assert (code, json.loads(out)["status"], json.loads(out)["exit_code"]) == (130, "cancelled", 130)


def test_run_options_are_checked(cli: Invoke) -> None:
    assert cli("run", "--timeout", "soon", "--", "true")[0] == 2
    code, _, err = cli("run")
    assert code == 2 and err.startswith("Nothing to run")


def test_run_detach_without_a_gateway_leaves_it_queued(cli: Invoke) -> None:
    code, out, err = cli("run", "--detach", "--json", "--", "true")
    assert code == 0 and json.loads(out)["status"] == "queued" and json.loads(out)["exit_code"] is None
    code, out, err = cli("run", "--detach", "--", "true")
    assert code == 0 and "no gateway is running" in err
    task_id = out.strip()  # `id=$(flowledger run --detach -- …)`
    assert out == f"{task_id}\n" and task_id in err
    assert json.loads(cli("tasks", "show", task_id, "--json")[1])["status"] == "queued"


def test_tasks_logs_shows_stdout_and_stderr_terminal_safe(cli: Invoke) -> None:
    _, out, _ = cli("run", "--json", "--", "sh", "-c", r"printf 'one\n\033[31mred\033[0m\n'; echo two >&2")
    task_id = json.loads(out)["task_id"]
    code, out, err = cli("tasks", "logs", task_id)
    assert code == 0 and out == "one\nred\n" and err == f"two\nTask {task_id} succeeded (exit 0)\n"
    code, out, err = cli("tasks", "logs", task_id, "--follow")  # a finished task: prints and returns
    assert code == 0 and out == "one\nred\n"
    code, out, err = cli("tasks", "logs", task_id, "--tail", "1")
    assert code == 0 and out == "red\n"
    code, out, err = cli("tasks", "logs", task_id, "--tail", "0")
    assert code == 0 and out == ""
    code, out, err = cli("tasks", "logs", task_id, "--timestamps")
    assert code == 0 and re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (one|red)\n){2}", out)
    code, _, err = cli("tasks", "logs", "no-such-task")
    assert code == 1 and err.strip() == "Task not found: no-such-task."


# --- agent runs (CONTRACT §7 "Agent runs") ----------------------------------------------------------------

AGENTS = Path(__file__).resolve().parents[1] / "e2e"


def test_run_acp_prints_the_reply_and_records_it(cli: Invoke) -> None:
    import sys

    agent = [sys.executable, str(AGENTS / "acp_typed_agent.py"), "stream"]
    code, out, err = cli("run", "--runtime", "acp", "--prompt", "hello", "--", *agent)
    assert code == 0, err
    assert out == "Reading your prompt: hello\n"
    assert "[tool] Read notes.txt: pending" in err
    code, out, _ = cli("tasks", "list", "--json", "--runtime", "acp")
    [task] = json.loads(out)["tasks"]
    assert (task["status"], task["task"]) == ("succeeded", "hello")
    assert task["terminal_summary"] == "Reading your prompt: hello"
    assert task["owner_key"] == "agent:main:main" and task["child_session_key"] == f"agent:main:acp:{task['task_id']}"
    code, logs, _ = cli("tasks", "logs", task["task_id"])
    assert code == 0 and logs == "Reading your prompt: hello"


def test_run_acp_persistent_and_a_failed_agent_run(cli: Invoke, database_url: str, state_dir: Path) -> None:
    import sys

    from flowledger.tasks.runs import liveness

    echo = [sys.executable, str(AGENTS / "acp_echo_agent.py")]
    code, out, _ = cli("run", "--json", "--runtime", "acp", "--mode", "persistent", "--session", "agent:ops:main",
                       "--prompt", "keep me", "--", *echo)
    task = json.loads(out)
    assert code == 0 and task["terminal_summary"] == "echo: keep me" and task["owner_key"] == "agent:ops:main"
    with Ledger.open(state_dir=state_dir, database_url=database_url) as ledger, ledger.db.read() as conn:
        session = liveness.get_session(conn, task["child_session_key"])
    assert session is not None and session.mode == "persistent" and (session.acp or {}).get("state") == "idle"
    code, out, err = cli("run", "--runtime", "acp", "--prompt", "refuse this", "--", *echo)
    assert code == 1 and out == "" and "failed: ACP agent refused the prompt" in err


def test_run_subagent_reads_the_prompt(cli: Invoke) -> None:
    script = 'printf "stdin=%s env=%s\\n" "$(cat)" "$FLOWLEDGER_PROMPT"'
    code, out, err = cli("run", "--json", "--runtime", "subagent", "--prompt", "Check it", "--", "sh", "-c", script)
    task = json.loads(out)
    assert code == 0, err
    assert task["runtime"] == "subagent" and task["terminal_summary"] == "stdin=Check it env=Check it"
    # Without --prompt a subagent run is asked its label.
    code, out, _ = cli("run", "--json", "--runtime", "subagent", "--label", "Tidy up", "--", "sh", "-c", script)
    assert code == 0 and json.loads(out)["terminal_summary"] == "stdin=Tidy up env=Tidy up"


def test_agent_run_options_are_checked(cli: Invoke) -> None:
    cases = {
        ("--prompt", "hi"): "--prompt is for --runtime acp|subagent (a cli run runs its command).",
        ("--runtime", "acp"): "--runtime acp needs --prompt TEXT (what the agent is asked).",
        ("--runtime", "subagent"): "--runtime subagent needs --prompt TEXT (what the agent is asked).",
        ("--runtime", "subagent", "--prompt", "x", "--mode", "persistent"):
            "--mode is for --runtime acp (a subagent run has no ACP session).",
        ("--runtime", "acp", "--prompt", "x", "--mode", "forever"):
            "Invalid --mode 'forever': expected one of oneshot|persistent.",
        ("--runtime", "cron"): "Invalid --runtime 'cron': expected one of cli|subagent|acp.",
    }
    for args, message in cases.items():
        code, out, err = cli("run", *args, "--", "true")
        assert (code, out, err.strip()) == (2, "", message), args
    code, out, _ = cli("tasks", "list", "--json")
    assert json.loads(out)["count"] == 0  # nothing was recorded
