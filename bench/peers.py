"""Peers on their own SQLite databases, each in a subprocess of the peers' interpreter and time-boxed.

The peers' interpreter is `--peers-python`, else $FLOWLEDGER_BENCH_PEERS_PYTHON, else this one (after
`pip install -e '.[bench]'`). A peer that is missing, fails or overruns its box is reported `n/a (reason)`.
"""

from __future__ import annotations

import os
import subprocess
import tempfile

from measure import helper, run_json

PEERS = ("dbos", "prefect", "huey")
UNIT = {
    "dbos": "workflow with one step (SQLite system database)",
    "prefect": "flow run with one task run (default SQLite database, ephemeral server warm)",
    "huey": "SqliteHuey task, immediate mode, result stored in SQLite",
}


def peers_python(explicit: str | None) -> str:
    import sys

    return explicit or os.environ.get("FLOWLEDGER_BENCH_PEERS_PYTHON") or sys.executable


def installed(python: str, peer: str) -> bool:
    try:
        return subprocess.run([python, "-c", f"import {peer}"], capture_output=True, timeout=120,
                              check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def run_peer(python: str, peer: str, n: int, timeout: float) -> tuple[float | None, str, str]:
    """(lifecycles per second, version, reason when None)."""
    if not installed(python, peer):
        return None, "", f"{peer} not installed in {python}"
    with tempfile.TemporaryDirectory(prefix=f"flbench-{peer}-") as workdir:
        # A loaded machine needs longer than Prefect's default to bring its ephemeral server up (excluded anyway).
        env = {"PREFECT_HOME": workdir, "PREFECT_LOGGING_LEVEL": "ERROR", "DBOS__APPVERSION": "bench",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
               "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": str(int(timeout))}
        result, reason = run_json([python, helper("peer_tasks.py"), peer, str(n), workdir], timeout=timeout,
                                  env=env, cwd=workdir)
    if result is None:
        return None, "", reason
    return n / float(result["seconds"]), str(result.get("version", "")), ""
