"""`flowledger web` as a process: refuses an exposed host without a token, a busy port; exits 0 on SIGTERM."""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from flowledger.cli.main import run

from .server_support import running_board

Invoke = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(sqlite_url: str, state_dir: Path, capsys: pytest.CaptureFixture[str]) -> Invoke:
    def invoke(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = run(["--state-dir", str(state_dir), "--database-url", sqlite_url, *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return invoke


def test_exposed_host_without_token_exits_2(cli: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOWLEDGER_WEB_TOKEN", raising=False)
    code, out, err = cli("web", "--host", "0.0.0.0")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        "Refusing to serve on non-loopback host '0.0.0.0' without FLOWLEDGER_WEB_TOKEN set: every request there "
        "must carry a token."]


def test_busy_port_exits_1(cli: Invoke) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        code, _, err = cli("web", "--port", str(port))
    assert code == 1
    assert err.startswith(f"Cannot listen on 127.0.0.1:{port}:")


def test_serves_until_sigterm_then_exits_0(sqlite_url: str, state_dir: Path) -> None:
    with running_board(state_dir, sqlite_url, "--allow-actions") as board:
        assert httpx.get(f"{board.url}/healthz").text == "ok"
        assert httpx.get(f"{board.url}/api/status").json()["tasks"]["total"] == 0
        assert any(line.startswith("Action token") for line in board.stderr_lines)
        board.process.send_signal(signal.SIGTERM)
        assert board.process.wait(timeout=15) == 0


def test_sigint_exits_0_too(sqlite_url: str, state_dir: Path) -> None:
    with running_board(state_dir, sqlite_url) as board:
        board.process.send_signal(signal.SIGINT)
        assert board.process.wait(timeout=15) == 0
