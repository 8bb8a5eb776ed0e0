"""`/api/…` answers the CLI's JSON documents, on both engines; bad input is one line with the right status."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from flowledger import Ledger
from flowledger.flows import health, listing
from flowledger.flows.documents import task_list_document

from .conftest import HOSTILE, seed


def test_status_is_status_json(ledger: Ledger, board: TestClient) -> None:
    seed(ledger)
    response = board.get("/api/status")
    assert response.status_code == 200
    assert response.json() == health.status(ledger).to_json()
    assert response.json()["tasks"]["by_status"]["failed"] >= 1


def test_tasks_is_tasks_list_json_with_the_same_filters(ledger: Ledger, board: TestClient) -> None:
    seed(ledger)
    everything = board.get("/api/tasks").json()
    page = listing.task_page(ledger)
    assert everything == task_list_document(page.tasks, runtime=None, status=None, total=page.total,
                                            filters=page.filters)
    assert everything["total"] == everything["count"] == 6 and everything["limit"] == 100
    failed = board.get("/api/tasks", params={"status": "failed", "runtime": "cli"}).json()
    assert failed["status"] == "failed" and failed["runtime"] == "cli"
    assert "run-failed" in {t["run_id"] for t in failed["tasks"]}
    assert {t["status"] for t in failed["tasks"]} == {"failed"} and {t["runtime"] for t in failed["tasks"]} == {"cli"}
    labels = {t["run_id"]: t["label"] for t in failed["tasks"]}
    assert labels["run-failed"] == HOSTILE  # JSON carries the text as it is; pages escape it


def test_tasks_pages_with_limit_and_offset(ledger: Ledger, board: TestClient) -> None:
    seed(ledger)
    every = [t["task_id"] for t in board.get("/api/tasks", params={"limit": 0}).json()["tasks"]]
    assert len(every) >= 5
    first = board.get("/api/tasks", params={"limit": 2}).json()
    second = board.get("/api/tasks", params={"limit": 2, "offset": 2}).json()
    assert [t["task_id"] for t in first["tasks"] + second["tasks"]] == every[:4]
    assert first["count"] == 2


def test_one_task_by_id_run_id_or_session_key(ledger: Ledger, board: TestClient) -> None:
    seeded = seed(ledger)
    by_id = board.get(f"/api/tasks/{seeded.done.task_id}").json()
    assert by_id == health.project_one(ledger, seeded.done).to_json()
    assert board.get("/api/tasks/run-done").json()["task_id"] == seeded.done.task_id
    assert board.get("/api/tasks/agent:main:subagent:child").json()["task_id"] == seeded.running.task_id


def test_flow_document_carries_the_steps(ledger: Ledger, board: TestClient) -> None:
    seeded = seed(ledger)
    doc = board.get(f"/api/flows/{seeded.flow_id}").json()
    assert doc["flow_id"] == seeded.flow_id and doc["status"] == "failed"
    assert {"tasks", "task_summary", "state"} <= set(doc)
    steps = {s["step_id"]: s for s in doc["steps"]}
    assert [s["step_id"] for s in doc["steps"]] == ["fetch", "build", "lint", "ship"]  # file order
    assert steps["fetch"]["status"] == "succeeded" and steps["fetch"]["attempts"] == 1
    assert steps["build"]["status"] == "failed" and HOSTILE in steps["build"]["error"]
    assert steps["ship"]["status"] == "cancelled" and steps["ship"]["attempts"] == 0
    assert steps["ship"]["task_id"] is None
    assert steps["fetch"]["task_id"] in {t["task_id"] for t in doc["tasks"]}
    failed = board.get("/api/flows", params={"status": "failed"}).json()
    assert failed["count"] == 1 and failed["flows"][0]["flow_id"] == seeded.flow_id
    assert board.get("/api/flows", params={"status": "succeeded"}).json()["count"] == 0


def test_a_flow_that_is_not_a_graph_flow_has_no_steps(ledger: Ledger, board: TestClient) -> None:
    seed(ledger)  # the running subagent task is mirrored by a flow of its own
    listed = board.get("/api/flows").json()
    assert listed["count"] == 2
    mirrored = next(f for f in listed["flows"] if f["sync_mode"] == "mirrored")
    # an owner key finds the owner's newest live flow, as `tasks flow show <owner>` does
    doc = board.get("/api/flows/agent:main:main").json()
    assert doc["flow_id"] == mirrored["flow_id"] and doc["steps"] is None


def test_audit_is_audit_json_with_filters(ledger: Ledger, board: TestClient) -> None:
    seed(ledger)
    doc = board.get("/api/audit").json()
    assert doc == health.run_audit(ledger).to_json()
    limited = board.get("/api/audit", params={"severity": "error", "limit": 1}).json()
    assert limited["filters"] == {"severity": "error", "code": None, "limit": 1}


def test_task_events_and_log_tail(ledger: Ledger, board: TestClient) -> None:
    seeded = seed(ledger)
    logs = ledger.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / f"{seeded.failed.task_id}.out").write_text("".join(f"line {i}\n" for i in range(100)))
    (logs / f"{seeded.failed.task_id}.err").write_text(f"boom {HOSTILE}\n")
    tail = board.get(f"/api/tasks/{seeded.failed.task_id}/logs").json()
    assert tail["captured"] is True
    assert tail["stdout"].splitlines()[-1] == "line 99" and len(tail["stdout"].splitlines()) == 40
    assert tail["stderr"] == f"boom {HOSTILE}"
    events = board.get("/api/tasks/run-failed/events").json()
    assert [e["kind"] for e in events["events"]][-1] == "failed"
    assert board.get(f"/api/tasks/{seeded.done.task_id}/logs").json()["captured"] is False


@pytest.mark.parametrize(("path", "message"), [
    ("/api/tasks?status=bogus", "Invalid status 'bogus': expected one of queued|running|"),
    ("/api/tasks?runtime=shell", "Invalid runtime 'shell': expected one of"),
    ("/api/tasks?limit=-1", "--limit must be 0 (all) or a positive integer, not -1."),
    ("/api/tasks?limit=ten", "Invalid value for '--limit': 'ten' is not a valid integer."),
    ("/api/tasks?offset=x", "Invalid value for '--offset': 'x' is not a valid integer."),
    ("/api/tasks?offset=-2", "--offset must be 0 or a positive integer, not -2."),
    ("/api/tasks?since=2026-12-01T10:00:00", "Invalid --since '2026-12-01T10:00:00': the time has no zone"),
    ("/api/flows?since=yesterday", "Invalid --since 'yesterday': expected a duration"),
    ("/api/tasks?colour=red", "Unknown query parameter 'colour'"),
    ("/api/flows?status=done", "Invalid flow status 'done'"),
    ("/api/audit?severity=fatal", "Invalid severity 'fatal'"),
    ("/api/audit?limit=0", "--limit must be a positive integer, for example --limit 25."),
    ("/api/status?x=1", "Unknown query parameter 'x'"),
])
def test_bad_query_parameters_are_400_with_one_line(board: TestClient, path: str, message: str) -> None:
    response = board.get(path)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error.startswith(message) and "\n" not in error


@pytest.mark.parametrize("path", ["/api/tasks/nope", "/api/tasks/nope/logs", "/api/tasks/nope/events",
                                  "/api/flows/nope", "/api/nothing"])
def test_unknown_ids_are_404_json(board: TestClient, path: str) -> None:
    response = board.get(path)
    assert response.status_code == 404
    assert set(response.json()) == {"error"}


def test_lookup_misses_use_the_cli_message(board: TestClient) -> None:
    assert board.get("/api/tasks/nope").json() == {"error": "Task not found: nope."}
    assert board.get("/api/flows/nope").json() == {"error": "Flow not found: nope."}
    missing_flow = board.get("/api/tasks", params={"flow": "nope"})
    assert missing_flow.status_code == 404 and missing_flow.json() == {"error": "Flow not found: nope."}


def test_an_ambiguous_prefix_is_a_miss_with_its_candidates(ledger: Ledger, board: TestClient) -> None:
    seed(ledger)  # two flows made within the same second share their first characters
    flows = sorted(f["flow_id"] for f in board.get("/api/flows").json()["flows"])
    response = board.get(f"/api/flows/{flows[0][:6]}")
    assert response.status_code == 404
    assert response.json() == {"error": f"Ambiguous id prefix '{flows[0][:6]}': matches 2 flows.",
                               "candidates": flows}
    assert board.get(f"/api/flows/{flows[1][:-3]}").json()["flow_id"] == flows[1]


def test_owner_flow_and_since_filters(ledger: Ledger, board: TestClient) -> None:
    seeded = seed(ledger)
    steps = board.get("/api/tasks", params={"flow": seeded.flow_id[:-4], "limit": 0}).json()
    assert steps["flow"] == seeded.flow_id and steps["total"] == 3  # fetch, build, lint ran; ship never did
    assert board.get("/api/tasks", params={"owner": "agent:nobody"}).json()["total"] == 0
    assert board.get("/api/tasks", params={"since": "1h"}).json()["total"] == 6
    later = ledger.clock.now().replace(year=2030).isoformat()
    assert board.get("/api/tasks", params={"since": later}).json()["total"] == 0
    flows = board.get("/api/flows", params={"owner": "agent:main:main", "limit": 1}).json()
    assert flows["count"] == 1 and flows["total"] == 2 and flows["owner"] == "agent:main:main"


def test_healthz(board: TestClient) -> None:
    response = board.get("/healthz")
    assert response.status_code == 200 and response.text == "ok"
