"""The board in a real browser: headless Debian Chromium driven by Playwright against a real `flowledger web`.

The test drives a graph flow through the ledger API (a launcher that starts nothing, so the test decides when
each step ends) and watches the page follow it: one SVG node per step with the right `data-status`, the change
when a step ends, and a click through to the step's task. Locally it skips, with the reason, when Chromium or
Playwright is missing; under CI=true it must run (.ci/run installs Chromium).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from flowledger import Ledger
from flowledger.flows.controller import GraphController, define_flow
from flowledger.tasks.core.models import Task

from ..conftest import IN_CI
from .conftest import diamond
from .server_support import running_board

CHROMIUM = os.environ.get("FLOWLEDGER_TEST_CHROMIUM", "/usr/bin/chromium")
WAIT_MS = 15_000


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium chromium-driver)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    missing = _browser_missing()
    if missing:
        if IN_CI:
            pytest.fail(f"the browser test must run under CI=true: {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # never `playwright install`: Debian's Chromium is the browser
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


class HeldLauncher:
    """Starts nothing: marks each step's task running and hands it to the test, which ends it."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.started: queue.Queue[Task] = queue.Queue()

    def start(self, task: Task, argv: list[str], *, shell: bool, timeout: timedelta | None, cwd: str | None,
              env: dict[str, str] | None) -> None:
        assert task.run_id is not None
        self.ledger.tasks.start(task.run_id)
        self.started.put(task)

    def next(self) -> Task:
        return self.started.get(timeout=WAIT_MS / 1000)


def test_a_running_flow_updates_live_and_clicks_through(browser: object, sqlite_url: str, state_dir: Path) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    with Ledger.open(state_dir=state_dir, database_url=sqlite_url) as ledger:
        flow = define_flow(ledger, diamond("Release <b>now</b>"))
        launcher = HeldLauncher(ledger)
        controller = GraphController(ledger, flow, launcher, poll_interval=0.01)
        driver = threading.Thread(target=controller.run, daemon=True)
        driver.start()
        fetch = launcher.next()
        assert fetch.label == "fetch"
        with running_board(state_dir, sqlite_url) as board:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{board.url}/flows/{flow.flow_id}")
            nodes = page.locator("svg.graph g.step[data-step-id]")
            expect(nodes).to_have_count(4)
            node = {step: page.locator(f'svg.graph g.step[data-step-id="{step}"]')
                    for step in ("fetch", "build", "lint", "ship")}
            expect(node["fetch"]).to_have_attribute("data-status", "running")
            for step in ("build", "lint", "ship"):
                expect(node[step]).to_have_attribute("data-status", "pending")
            expect(page.locator("h1")).to_have_text("Release <b>now</b>")  # text, not markup

            ledger.tasks.complete(fetch.run_id or "")  # the step ends: the page follows by polling
            expect(node["fetch"]).to_have_attribute("data-status", "succeeded", timeout=WAIT_MS)
            started = {launcher.next().label: None for _ in range(2)}
            assert set(started) == {"build", "lint"}
            expect(node["build"]).to_have_attribute("data-status", "running", timeout=WAIT_MS)
            expect(node["lint"]).to_have_attribute("data-status", "running", timeout=WAIT_MS)
            expect(page.locator('tr[data-step-row="fetch"] .badge')).to_have_text("succeeded")

            node["build"].click()  # the step's task and log tail, then on to the task's page
            panel = page.locator("#step-panel")
            expect(panel).to_be_visible()
            expect(page.locator("#step-panel-facts")).to_contain_text("running", timeout=WAIT_MS)
            build_task = node["build"].get_attribute("data-task-id")
            assert build_task
            page.locator("#step-panel-link").click()
            page.wait_for_url(f"**/tasks/{build_task}")
            expect(page.locator("main")).to_have_attribute("data-task-id", build_task)
            expect(page.locator('[data-task-field="status"] .badge')).to_have_text("running")
            assert errors == []
            page.close()
        for task in ledger.flows.linked_tasks(flow.flow_id):
            if task.status.value == "running" and task.run_id:
                ledger.tasks.complete(task.run_id)
        ship = launcher.next()
        ledger.tasks.complete(ship.run_id or "")
        driver.join(timeout=WAIT_MS / 1000)
        assert not driver.is_alive()
