"""`/metrics` parsed with prometheus_client's own parser gives `status --json`'s counts."""

from __future__ import annotations

from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from flowledger import Ledger
from flowledger.flows.controller import define_flow

from .conftest import diamond, seed


def scrape(board: TestClient) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = board.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[sample.name].append((sample.labels, sample.value))
    return found


def test_gauges_match_status_json(ledger: Ledger, board: TestClient) -> None:
    seed(ledger)
    define_flow(ledger, diamond())
    metrics = scrape(board)
    status = board.get("/api/status").json()
    by_status: dict[str, float] = defaultdict(float)
    by_runtime: dict[str, float] = defaultdict(float)
    for labels, value in metrics["flowledger_tasks"]:
        by_status[labels["status"]] += value
        by_runtime[labels["runtime"]] += value
    assert by_status == {k: float(v) for k, v in status["tasks"]["by_status"].items()}
    assert by_runtime == {k: float(v) for k, v in status["tasks"]["by_runtime"].items()}
    assert by_status["failed"] == 2 and by_status["running"] == 1
    audit = {labels["severity"]: value for labels, value in metrics["flowledger_audit_findings"]}
    assert audit == {"warn": status["audit"]["warnings"], "error": status["audit"]["errors"]}
    flows = {labels["status"]: value for labels, value in metrics["flowledger_flows"]}
    assert flows == {k: float(v) for k, v in status["flows"]["by_status"].items()}
    assert flows["failed"] == 1 and flows["queued"] == 1 and flows["running"] == 1  # graph ×2, mirrored
    assert sum(flows.values()) == board.get("/api/flows", params={"limit": 0}).json()["count"]


def test_a_reconciled_task_is_counted_where_status_counts_it(ledger: Ledger, board: TestClient) -> None:
    """A running task past its grace is `lost` in the projection: the gauge follows the projection."""
    from datetime import timedelta

    from flowledger import FrozenClock

    ledger.tasks.create(runtime="cli", task="gone", owner_key="agent:main:main", run_id="run-gone",
                        status="running", started_at=ledger.clock.now())
    clock = ledger.clock
    assert isinstance(clock, FrozenClock)
    clock.advance(timedelta(minutes=5))
    status = board.get("/api/status").json()
    metrics = scrape(board)
    lost = sum(v for labels, v in metrics["flowledger_tasks"] if labels["status"] == "lost")
    running = sum(v for labels, v in metrics["flowledger_tasks"] if labels["status"] == "running")
    assert (lost, running) == (status["tasks"]["by_status"]["lost"], status["tasks"]["by_status"]["running"])
    assert lost == 1 and running == 0
