"""End to end with a real gateway process: a detached flow fails, `tasks flow retry --detach` hands it back, the
gateway runs only what failed, and the gateway (not the writer) sends one end notice per run to a local HTTP
server; `tasks flow wait` follows it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from gateway_support import GatewayProc, wait_for
from pytest_httpserver import HTTPServer

from flowledger import Ledger
from flowledger.cli.main import run


def test_detached_retry_runs_what_failed_and_the_gateway_announces_each_run(
        tmp_path: Path, gateways: Callable[..., GatewayProc], httpserver: HTTPServer,
        capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    url = f"sqlite:///{state / 'tasks' / 'runs.sqlite'}"

    def cli(*args: str) -> tuple[int, str]:  # the CLI in this process (the gateway is the real other process)
        capsys.readouterr()
        code = run(["--state-dir", str(state), "--database-url", url, *args])
        return code, capsys.readouterr().out
    state.mkdir(parents=True, mode=0o700)
    (state / "config.toml").write_text(f'[channels.webhook]\nurl = "{httpserver.url_for("/hook")}"\n')
    httpserver.expect_request("/hook", method="POST").respond_with_json({"ok": True})
    marker = tmp_path / "fixed"
    flow = tmp_path / "flow.toml"
    flow.write_text(f"""
[flow]
goal = "Detached"
origin = {{ channel = "webhook", to = "ops" }}
[[step]]
id = "a"
run = ["true"]
[[step]]
id = "b"
needs = ["a"]
run = ["test", "-e", "{marker}"]
""")
    gateways(state, url)
    code, out = cli("tasks", "flow", "run", str(flow), "--detach", "--json")
    assert code == 0
    flow_id = json.loads(out)["flow_id"]
    assert cli("tasks", "flow", "wait", flow_id, "--timeout", "30s") == (1, f"Flow {flow_id} failed.\n")

    marker.write_text("ok")
    assert cli("tasks", "flow", "retry", flow_id, "--detach") == (0, f"Retrying {flow_id}: 1 steps to run, 1 kept.\n")
    assert cli("tasks", "flow", "wait", flow_id, "--timeout", "30s")[0] == 0

    wait_for(lambda: len(httpserver.log) >= 2, timeout=15, what="two end notices")
    bodies = [json.loads(request.get_data()) for request, _ in httpserver.log]
    assert sorted((b["idempotency_key"], b["status"]) for b in bodies) == [
        (f"flow:{flow_id}:run:1:end", "failed"), (f"flow:{flow_id}:run:2:end", "succeeded")]
    with Ledger.open(state_dir=state, database_url=url) as ledger:
        shown = {t.run_id for t in ledger.flows.linked_tasks(flow_id)}
    assert shown == {f"flow:{flow_id}:a:1", f"flow:{flow_id}:b:1", f"flow:{flow_id}:b:2"}
