"""Actions need --allow-actions and the bearer token; an exposed host needs the token for everything."""

from __future__ import annotations

import base64

import pytest
from starlette.testclient import TestClient

from flowledger import Ledger
from flowledger.flows.controller import define_flow
from flowledger.tasks.core.errors import InvalidInput
from flowledger.web.security import decide_access, is_loopback

from .conftest import TOKEN, MakeClient, diamond, seed

BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize("path", ["/api/tasks/run-live/cancel", "/api/flows/x/cancel", "/api/flows/x/retry"])
def test_actions_do_not_exist_without_allow_actions(ledger: Ledger, board: TestClient, path: str) -> None:
    seed(ledger)
    assert board.post(path, headers=BEARER).status_code == 404


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                                     {"Cookie": f"token={TOKEN}"}])
def test_actions_without_the_token_are_401(ledger: Ledger, make_client: MakeClient, headers: dict[str, str]) -> None:
    seeded = seed(ledger)
    client = make_client(allow_actions=True, token=TOKEN)
    response = client.post("/api/tasks/run-live/cancel", headers=headers)
    assert response.status_code == 401
    assert "token" in response.json()["error"]
    assert ledger.tasks.require(seeded.running.task_id).status.value == "running"


def test_cancel_a_task_with_the_token(ledger: Ledger, make_client: MakeClient) -> None:
    seeded = seed(ledger)
    client = make_client(allow_actions=True, token=TOKEN)
    response = client.post("/api/tasks/run-live/cancel", headers=BEARER, json={"reason": "operator said so"})
    assert response.status_code == 200
    assert response.json()["message"] == f"Cancelled {seeded.running.task_id} (subagent)."
    assert ledger.tasks.require(seeded.running.task_id).status.value == "cancelled"
    again = client.post("/api/tasks/run-live/cancel", headers=BEARER)
    assert again.status_code == 409 and again.json()["error"]
    assert client.post("/api/tasks/nope/cancel", headers=BEARER).json() == {"error": "Task not found: nope."}
    bad = client.post("/api/tasks/run-done/cancel", headers=BEARER, content=b"not json")
    assert bad.status_code == 400


def test_cancel_a_flow_with_the_token(ledger: Ledger, make_client: MakeClient) -> None:
    flow = define_flow(ledger, diamond())
    client = make_client(allow_actions=True, token=TOKEN)
    response = client.post(f"/api/flows/{flow.flow_id}/cancel", headers=BEARER)
    assert response.status_code == 200
    assert response.json()["message"] == f"Cancelled {flow.flow_id} (managed) with status cancelled."
    assert response.json()["flow"]["status"] == "cancelled"
    assert client.post("/api/flows/nope/cancel", headers=BEARER).status_code == 404


def test_retry_a_failed_flow_with_the_token(ledger: Ledger, make_client: MakeClient) -> None:
    seeded = seed(ledger)
    client = make_client(allow_actions=True, token=TOKEN)
    assert client.post(f"/api/flows/{seeded.flow_id}/retry").status_code == 401
    response = client.post(f"/api/flows/{seeded.flow_id}/retry", headers=BEARER)
    assert response.status_code == 200
    assert response.json()["message"] == f"Retrying {seeded.flow_id}: 2 steps to run, 2 kept."
    assert response.json()["flow"]["status"] == "queued"
    assert ledger.flows.require(seeded.flow_id).status.value == "queued"  # a gateway drives it from here
    again = client.post(f"/api/flows/{seeded.flow_id}/retry", headers=BEARER)
    assert again.status_code == 409
    assert again.json()["error"].endswith("only a failed, cancelled or lost flow can be retried.")


def test_a_random_token_is_made_when_none_is_set() -> None:
    first = decide_access("127.0.0.1", None, allow_actions=True)
    second = decide_access("127.0.0.1", "", allow_actions=True)
    assert len(first.token) >= 24 and first.token != second.token
    assert not first.token_from_env and not first.guard_reads


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "example.org"])
def test_an_exposed_host_without_a_token_is_refused(host: str) -> None:
    with pytest.raises(InvalidInput, match="FLOWLEDGER_WEB_TOKEN"):
        decide_access(host, None, allow_actions=False)


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True),
                                                ("[::1]", True), ("localhost", True), ("0.0.0.0", False),
                                                ("10.0.0.1", False), ("::", False)])
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_an_exposed_host_needs_the_token_for_reads_too(ledger: Ledger, make_client: MakeClient) -> None:
    client = make_client(host="0.0.0.0", token=TOKEN)
    for path in ("/", "/api/status", "/metrics", "/healthz", "/static/board.js"):
        denied = client.get(path)
        assert denied.status_code == 401, path
    assert client.get("/").headers["www-authenticate"].startswith("Basic")
    assert client.get("/api/status", headers=BEARER).status_code == 200
    basic = base64.b64encode(f"operator:{TOKEN}".encode()).decode()
    assert client.get("/", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    wrong = base64.b64encode(b"operator:nope").decode()
    assert client.get("/", headers={"Authorization": f"Basic {wrong}"}).status_code == 401


def test_browser_credentials_alone_never_perform_an_action(ledger: Ledger, make_client: MakeClient) -> None:
    seed(ledger)
    client = make_client(host="0.0.0.0", token=TOKEN, allow_actions=True)
    basic = base64.b64encode(f"operator:{TOKEN}".encode()).decode()
    response = client.post("/api/tasks/run-live/cancel", headers={"Authorization": f"Basic {basic}"})
    assert response.status_code == 401  # Basic reads the board; only the Bearer header acts
