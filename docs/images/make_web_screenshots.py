"""Make docs/images/web-overview.png and web-flow.png: a demo ledger, a real `flowledger web`, headless Chromium.

    .venv/bin/python docs/images/make_web_screenshots.py      # needs /usr/bin/chromium and the playwright package

The demo drives a graph flow through the ledger API (a launcher that starts nothing; the script ends each step),
so the flow page shows succeeded, retried, running and pending steps at once.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

from playwright.sync_api import sync_playwright

from flowledger import Ledger
from flowledger.flows.controller import GraphController, define_flow
from flowledger.flows.definitions import parse_flow
from flowledger.tasks.core.models import Task

HERE = Path(__file__).parent
FLOW = """
[flow]
goal = "Nightly release"
[[step]]
id = "checkout"
run = ["git", "pull"]
[[step]]
id = "build"
needs = ["checkout"]
run = ["make", "build"]
retries = 1
[[step]]
id = "lint"
needs = ["checkout"]
run = ["make", "lint"]
[[step]]
id = "docs"
needs = ["checkout"]
run = ["make", "docs"]
[[step]]
id = "test"
needs = ["build", "lint"]
run = ["make", "test"]
[[step]]
id = "package"
needs = ["test"]
run = ["make", "dist"]
[[step]]
id = "publish"
needs = ["package", "docs"]
run = ["make", "publish"]
"""


class Held:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.started: queue.Queue[Task] = queue.Queue()

    def start(self, task: Task, argv: list[str], *, shell: bool, timeout: timedelta | None, cwd: str | None,
              env: dict[str, str] | None) -> None:
        self.ledger.tasks.start(task.run_id or "")
        self.started.put(task)


def demo(ledger: Ledger) -> str:
    owner = "agent:main:main"
    for i, (runtime, outcome) in enumerate([("cli", "ok"), ("cron", "ok"), ("cli", "fail"), ("subagent", "ok"),
                                             ("cli", "ok"), ("acp", "run")]):
        run_id = f"demo-{i}"
        ledger.tasks.create(runtime=runtime, task=f"demo task {i}", owner_key=owner, run_id=run_id,
                            status="running", started_at=ledger.clock.now(), label=["export", "nightly cron",
                            "backup", "summarise PR 12", "reindex", "review agent"][i],
                            child_session_key=f"agent:main:{runtime}:demo{i}" if runtime in ("acp", "subagent")
                            else None)
        if outcome == "ok":
            ledger.tasks.complete(run_id, summary="done")
        elif outcome == "fail":
            ledger.tasks.fail(run_id, error="exit code 2: disk full")
    flow = define_flow(ledger, parse_flow(FLOW))
    launcher = Held(ledger)
    threading.Thread(target=GraphController(ledger, flow, launcher, poll_interval=0.01).run, daemon=True).start()

    def step(outcome: str = "ok") -> str:
        task = launcher.started.get(timeout=10)
        time.sleep(0.4)
        if outcome == "ok":
            ledger.tasks.complete(task.run_id or "")
        elif outcome == "fail":
            ledger.tasks.fail(task.run_id or "", error="make: *** [build] Error 1")
        return task.label or ""

    step()  # checkout
    started = {launcher.started.get(timeout=10).label: None for _ in range(3)}
    pending = {label: task for label, task in started.items()}
    del pending
    # build fails once, then succeeds on its retry; lint succeeds; docs keeps running
    for task in ledger.flows.linked_tasks(flow.flow_id):
        if task.label == "build" and task.status.value == "running":
            ledger.tasks.fail(task.run_id or "", error="make: *** [build] Error 1")
        if task.label == "lint" and task.status.value == "running":
            ledger.tasks.complete(task.run_id or "")
    time.sleep(0.6)
    step()  # build, second attempt
    time.sleep(0.5)  # test starts and keeps running
    return flow.flow_id


def main() -> None:
    state = Path(tempfile.mkdtemp()) / "state"
    url = f"sqlite:///{state / 'tasks' / 'runs.sqlite'}"
    with Ledger.open(state_dir=state, database_url=url) as ledger:
        flow_id = demo(ledger)
        web = subprocess.Popen([sys.executable, "-m", "flowledger.cli.main", "--state-dir", str(state),
                                "--database-url", url, "web", "--port", "8797"], stderr=subprocess.PIPE, text=True)
        assert web.stderr is not None
        while "serving" not in web.stderr.readline():
            pass
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
                page = browser.new_page(viewport={"width": 1280, "height": 820})
                page.goto("http://127.0.0.1:8797/")
                page.screenshot(path=str(HERE / "web-overview.png"))
                page.goto(f"http://127.0.0.1:8797/flows/{flow_id}")
                page.locator('svg.graph g.step[data-step-id="build"]').click()
                page.wait_for_timeout(1200)
                page.screenshot(path=str(HERE / "web-flow.png"), full_page=True)
                browser.close()
        finally:
            web.terminate()
            web.wait()


if __name__ == "__main__":
    main()
