"""`flowledger cron add|list|remove|runs` on both engines: JSON shapes, validation, exit codes."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from flowledger import Ledger
from flowledger.scheduler import cron, cron_control
from flowledger.scheduler.runtimes.cron import CronRunner

Invoke = Callable[..., tuple[int, str, str]]  # the `cli` fixture (tests/cli/conftest.py)

JOB_KEYS = {"name", "job_id", "schedule", "every", "tz", "isolated", "argv", "next_run_at", "last_run_at",
            "last_status", "timeout_ms", "next_run_local"}



def test_add_list_remove(cli: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    code, out, _ = cli("cron", "add", "--name", "digest", "--schedule", "30 6 * * 1-5", "--tz", "Europe/Paris",
                       "--json", "--", "make", "digest")
    assert code == 0
    job = json.loads(out)
    assert set(job) == JOB_KEYS and job["schedule"] == "30 6 * * 1-5" and job["tz"] == "Europe/Paris"
    assert job["argv"] == ["make", "digest"] and job["every"] is None and job["last_run_at"] is None
    assert job["next_run_at"].endswith("Z") and job["next_run_local"][-6:] in ("+01:00", "+02:00")
    code, out, _ = cli("cron", "add", "--name", "tick", "--every", "1s", "--isolated", "--", "true")
    assert code == 0 and out.startswith("Added cron job tick")
    code, out, _ = cli("cron", "list", "--json")
    jobs = json.loads(out)["jobs"]
    assert [j["name"] for j in jobs] == ["digest", "tick"] and jobs[1]["every"] == "1s" and jobs[1]["isolated"]
    assert (jobs[1]["tz"], jobs[1]["next_run_local"]) == (None, None)  # an interval has no zone
    code, out, _ = cli("cron", "list")
    assert "30 6 * * 1-5 (Europe/Paris)" in out and re.search(r"Z \(06:30 \+0[12]:00\)", out)
    assert cli("cron", "remove", "digest")[0] == 0
    code, _, err = cli("cron", "remove", "digest")
    assert code == 1 and err.strip() == "Cron job not found: digest."
    assert [j["name"] for j in json.loads(cli("cron", "list", "--json")[1])["jobs"]] == ["tick"]


@pytest.mark.parametrize("args", [
    ["--name", "x", "--", "true"],  # neither schedule nor every
    ["--name", "x", "--every", "1s", "--schedule", "* * * * *", "--", "true"],
    ["--name", "x", "--schedule", "* * *", "--", "true"],
    ["--name", "x", "--schedule", "61 * * * *", "--", "true"],
    ["--name", "x", "--schedule", "* * * * *", "--tz", "Mars/Olympus", "--", "true"],
    ["--name", "x", "--every", "often", "--", "true"],
    ["--name", "x", "--every", "1s"],  # nothing to run
    ["--every", "1s", "--", "true"],  # no name
])
def test_add_refuses_bad_input_with_exit_2(cli: Invoke, args: list[str]) -> None:
    code, out, err = cli("cron", "add", *args)
    assert code == 2 and out == "" and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_duplicate_names_are_refused(cli: Invoke) -> None:
    assert cli("cron", "add", "--name", "a", "--every", "5m", "--", "true")[0] == 0
    code, _, err = cli("cron", "add", "--name", "a", "--every", "5m", "--", "true")
    assert code == 1 and err.strip() == "Cron job already exists: a."


def test_runs_lists_each_execution_newest_first(cli: Invoke, database_url: str, state_dir: Path) -> None:
    with Ledger.open(state_dir=state_dir, database_url=database_url) as ledger:
        job = cron.add_job(ledger, "nightly", ["sh", "-c", "exit 0"], every=timedelta(minutes=1))
        runner = CronRunner(ledger, "gw-test")
        first = runner.run_job(job.job_id)
        second = runner.run_job(job.job_id)
    assert first is not None and second is not None
    code, out, _ = cli("cron", "runs", "nightly", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["job"] == "nightly"
    assert [r["task_id"] for r in doc["runs"]] == [second.task_id, first.task_id]
    assert all(r["run_id"].startswith(f"cron:{job.job_id}:") and r["runtime"] == "cron" for r in doc["runs"])
    listed = json.loads(cli("cron", "list", "--json")[1])["jobs"][0]
    assert listed["last_status"] == "ok" and listed["last_run_at"] is not None
    assert cli("cron", "runs", "nope")[0] == 1
    code, out, _ = cli("cron", "runs", "nightly")
    assert code == 0 and second.task_id in out


def test_pause_resume_and_trigger_without_a_gateway(cli: Invoke, database_url: str, state_dir: Path) -> None:
    assert cli("cron", "add", "--name", "beat", "--every", "1h", "--", "sh", "-c", "echo tick")[0] == 0
    assert cli("cron", "pause", "beat") == (0, "Paused cron job beat.\n", "")
    assert cli("cron", "pause", "beat") == (0, "Cron job beat is already paused.\n", "")
    [job] = json.loads(cli("cron", "list", "--json")[1])["jobs"]
    assert job["paused"] is True
    assert "paused" in cli("cron", "list")[1]
    with Ledger.open(state_dir=state_dir, database_url=database_url) as ledger:
        assert set(cron_control.paused_at(ledger)) == {job["job_id"]}
    assert cli("cron", "resume", "beat") == (0, "Resumed cron job beat.\n", "")
    assert json.loads(cli("cron", "list", "--json")[1])["jobs"][0]["paused"] is False
    code, out, _ = cli("cron", "trigger", "beat")  # no gateway: runs here, recorded like any run
    assert code == 0 and out.startswith("Ran cron job beat as task ") and out.endswith(": succeeded.\n")
    runs = json.loads(cli("cron", "runs", "beat", "--json")[1])["runs"]
    assert len(runs) == 1 and runs[0]["run_id"].startswith(f"cron:{job['job_id']}:")
    assert cli("cron", "add", "--name", "bad", "--every", "1h", "--", "sh", "-c", "exit 3")[0] == 0
    assert cli("cron", "trigger", "bad")[0] == 3
    for command in ("pause", "resume", "trigger"):
        assert cli("cron", command, "nope") == (1, "", "Cron job not found: nope.\n")


def test_triggers_are_taken_once(ledger: Ledger) -> None:
    job = cron.add_job(ledger, "once", ["true"], every=timedelta(hours=1))
    cron_control.request_trigger(ledger, job.job_id)
    assert cron_control.take_triggers(ledger) == [job.job_id]
    assert cron_control.take_triggers(ledger) == []
    cron_control.set_paused(ledger, job.job_id, True)
    cron_control.forget(ledger, job.job_id)
    assert cron_control.paused_at(ledger) == {}
