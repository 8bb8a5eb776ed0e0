"""Helpers for the end-to-end tests. Real gateway processes: started with `python -m flowledger.cli.main … gateway`,
ready once they print `gateway ready`, stopped with SIGTERM (or killed with SIGKILL)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ACP_AGENT = [sys.executable, str(HERE / "acp_echo_agent.py")]
# Testing knobs (docs/gateway.md): a short lease and a fast first sweep keep these tests in seconds.
FAST_ENV = {"FLOWLEDGER_LEASE_TTL_MS": "1500", "FLOWLEDGER_SWEEP_FIRST_MS": "300",
            "FLOWLEDGER_SWEEP_INTERVAL_MS": "500"}


def wait_for(condition: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll `condition` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


class GatewayProc:
    def __init__(self, state_dir: Path, database_url: str, *, name: str = "gw", env: dict[str, str] | None = None):
        self.log_path = state_dir.parent / f"{name}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        merged = {**os.environ, **FAST_ENV, **(env or {})}
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flowledger.cli.main", "--state-dir", str(state_dir), "--database-url",
             database_url, "gateway", "--log-level", "info"],
            stdout=subprocess.DEVNULL, stderr=self._log, env=merged)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def gateway_id(self) -> str:
        """The id the gateway logged when it began serving."""
        found = re.search(r"gateway (\S+) serving", self.log())
        assert found is not None, self.log()
        return found.group(1)

    def wait_ready(self, timeout: float = 20.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited {self.proc.returncode}:\n{self.log()}")
            return "gateway ready" in self.log()

        wait_for(ready, timeout, what="gateway ready")

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._log.close()



def cli(state_dir: Path, database_url: str, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run the real `flowledger` CLI in a subprocess."""
    return subprocess.run([sys.executable, "-m", "flowledger.cli.main", "--state-dir", str(state_dir),
                           "--database-url", database_url, *args], check=False, capture_output=True, text=True,
                          timeout=timeout,
                          env={**os.environ, **FAST_ENV})
