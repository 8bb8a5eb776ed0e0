"""The pages people look at, on both engines: every route renders, untrusted text stays text, errors are pages."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from flowledger import Ledger
from flowledger.flows.controller import define_flow

from .conftest import HOSTILE, diamond, seed

ESCAPED = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"


def _no_raw_script(html: str) -> None:
    # the only script elements are the board's own file
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/board.js" defer>']


def test_overview_shows_pressure_failures_and_live_flows(ledger: Ledger, board: TestClient) -> None:
    seeded = seed(ledger)
    response = board.get("/")
    assert response.status_code == 200
    html = response.text
    assert "Tasks: 0 queued · 1 running · 2 issues" in html
    assert f'href="/tasks/{seeded.failed.task_id}"' in html  # a recent failure
    assert ESCAPED in html
    _no_raw_script(html)


def test_flows_page_filters_and_pages(ledger: Ledger, board: TestClient) -> None:
    seeded = seed(ledger)
    html = board.get("/flows", params={"status": "failed"}).text
    assert f'href="/flows/{seeded.flow_id}"' in html
    assert "Release &lt;b&gt;now&lt;/b&gt;" in html
    assert "mirrored" not in html
    first = board.get("/flows", params={"limit": 1}).text
    assert 'href="/flows?limit=1&amp;offset=1"' in first  # "Older →" keeps the page size
    second = board.get("/flows", params={"limit": 1, "offset": 1}).text
    assert 'href="/flows?limit=1&amp;offset=0"' in second


def test_flow_page_draws_one_svg_node_per_step(ledger: Ledger, board: TestClient) -> None:
    seeded = seed(ledger)
    html = board.get(f"/flows/{seeded.flow_id}").text
    nodes = dict(re.findall(r'<g class="step" data-step-id="([^"]+)" data-status="([^"]+)"', html))
    assert nodes == {"fetch": "succeeded", "build": "failed", "lint": "succeeded", "ship": "cancelled"}
    assert html.count('class="edge"') == 4
    assert 'data-ended="true"' in html
    assert ESCAPED in html  # the failed step's error in the steps table
    assert "Why: Step build failed: build broke: &lt;script&gt;" in html
    _no_raw_script(html)


def test_flow_page_of_a_queued_flow_shows_pending_steps(ledger: Ledger, board: TestClient) -> None:
    flow = define_flow(ledger, diamond())
    html = board.get(f"/flows/{flow.flow_id}").text
    assert set(re.findall(r'data-status="([^"]+)" data-task-id', html)) == {"pending"}
    assert 'data-ended="false"' in html


def test_tasks_page_takes_the_cli_filters(ledger: Ledger, board: TestClient) -> None:
    seeded = seed(ledger)
    html = board.get("/tasks", params={"runtime": "cli", "status": "failed"}).text
    assert f'href="/tasks/{seeded.failed.task_id}"' in html
    assert seeded.done.task_id not in html
    assert '<option value="failed" selected>' in html
    everything = board.get("/tasks", params={"runtime": "", "status": ""}).text  # an empty filter form
    assert seeded.done.task_id in everything


def test_task_page_shows_fields_events_and_log_tail(ledger: Ledger, board: TestClient) -> None:
    seeded = seed(ledger)
    logs = ledger.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / f"{seeded.failed.task_id}.err").write_text(f"{HOSTILE}\n")
    html = board.get(f"/tasks/{seeded.failed.task_id}").text
    assert seeded.failed.task_id in html and "run-failed" in html
    assert html.count(ESCAPED) >= 3  # label, task, log tail (and the error)
    assert "exit 3" in html
    _no_raw_script(html)


def test_audit_and_cron_pages(ledger: Ledger, board: TestClient) -> None:
    seed(ledger)
    assert "findings" in board.get("/audit").text
    assert board.get("/audit", params={"severity": "warn"}).status_code == 200
    from flowledger.scheduler import cron

    cron.add_job(ledger, "nightly", ["echo", HOSTILE], schedule="0 3 * * *")
    html = board.get("/cron").text
    assert "nightly" in html and "0 3 * * *" in html
    assert "echo &lt;script&gt;" in html
    _no_raw_script(html)


@pytest.mark.parametrize("path", ["/tasks/nope", "/flows/nope", "/nowhere"])
def test_unknown_pages_are_404_pages(board: TestClient, path: str) -> None:
    response = board.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "Not found" in response.text


def test_an_unknown_id_is_escaped_on_its_404_page(board: TestClient) -> None:
    response = board.get("/tasks/<img src=x onerror=alert(1)>")
    assert response.status_code == 404
    assert "Task not found: &lt;img src=x onerror=alert(1)&gt;." in response.text


@pytest.mark.parametrize(("path", "message"), [
    ("/tasks?status=bogus", "Invalid status &#39;bogus&#39;"),
    ("/flows?limit=x", "Invalid value for &#39;--limit&#39;: &#39;x&#39; is not a valid integer."),
    ("/audit?severity=loud", "Invalid severity &#39;loud&#39;"),
    ("/?refresh=1", "Unknown query parameter &#39;refresh&#39;"),
])
def test_bad_query_parameters_are_400_pages(board: TestClient, path: str, message: str) -> None:
    response = board.get(path)
    assert response.status_code == 400
    assert message in response.text


def test_pages_forbid_inline_scripts(board: TestClient) -> None:
    policy = board.get("/").headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy


def test_static_assets_are_served_by_the_board(board: TestClient) -> None:
    assert board.get("/static/board.js").status_code == 200
    assert board.get("/static/board.css").status_code == 200
    html = board.get("/").text
    assert "http://" not in html and "https://" not in html  # no CDN
