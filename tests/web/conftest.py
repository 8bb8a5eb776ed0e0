"""The board over the ledger fixtures (a SQLite file and PostgreSQL), through Starlette's TestClient."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from starlette.testclient import TestClient

from flowledger import Ledger
from flowledger.flows.controller import run_flow
from flowledger.flows.definitions import FlowDefinition, StepDefinition
from flowledger.tasks.core.models import Task
from flowledger.web.app import build_app
from flowledger.web.security import decide_access
from flowledger.web.source import LedgerSource

OWNER = "agent:main:main"
TOKEN = "s3cret-token-for-tests"
HOSTILE = "<script>alert('x')</script>"

MakeClient = Callable[..., TestClient]


@pytest.fixture
def make_client(ledger: Ledger) -> Iterator[MakeClient]:
    clients: list[TestClient] = []

    def make(*, allow_actions: bool = False, host: str = "127.0.0.1", token: str | None = None) -> TestClient:
        access = decide_access(host, token, allow_actions=allow_actions)
        client = TestClient(build_app(LedgerSource.of(ledger), access), raise_server_exceptions=True)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def board(make_client: MakeClient) -> TestClient:
    return make_client()


class Script:
    """A step launcher that ends each attempt at once as scripted (default: succeeded)."""

    def __init__(self, ledger: Ledger, outcomes: dict[str, str]) -> None:
        self.ledger = ledger
        self.outcomes = outcomes

    def start(self, task: Task, argv: list[str], *, shell: bool, timeout: timedelta | None, cwd: str | None,
              env: dict[str, str] | None) -> None:
        assert task.run_id is not None
        self.ledger.tasks.start(task.run_id)
        outcome = self.outcomes.get(task.label or "", "succeeded")
        if outcome == "succeeded":
            self.ledger.tasks.complete(task.run_id, summary=f"{task.label} done")
        else:
            self.ledger.tasks.fail(task.run_id, error=f"{task.label} broke: {HOSTILE}", status=outcome)


DIAMOND = (("fetch", ()), ("build", ("fetch",)), ("lint", ("fetch",)), ("ship", ("build", "lint")))


def diamond(goal: str = "Release <b>now</b>") -> FlowDefinition:
    return FlowDefinition(goal, owner=OWNER,
                          steps=tuple(StepDefinition(s, run=("true",), needs=n) for s, n in DIAMOND))


@dataclass
class Seeded:
    done: Task
    failed: Task
    running: Task
    flow_id: str  # a graph flow that failed at `build`


def seed(ledger: Ledger) -> Seeded:
    now = ledger.clock.now()
    ledger.tasks.create(runtime="cli", task="export", owner_key=OWNER, run_id="run-done", status="running",
                               started_at=now, label="nightly export")
    ledger.tasks.complete("run-done", summary="exported 12 rows")
    ledger.tasks.create(runtime="cli", task=HOSTILE, owner_key=OWNER, run_id="run-failed",
                                 status="running", started_at=now, label=HOSTILE)
    ledger.tasks.fail("run-failed", error=f"exit 3 {HOSTILE}")
    running = ledger.tasks.create(runtime="subagent", task="summarise", owner_key=OWNER,
                                  child_session_key="agent:main:subagent:child", run_id="run-live",
                                  status="running", started_at=now)
    flow = run_flow(ledger, diamond(), Script(ledger, {"build": "failed"}), poll_interval=0.001)
    return Seeded(ledger.tasks.require("run-done"), ledger.tasks.require("run-failed"), running, flow.flow_id)
