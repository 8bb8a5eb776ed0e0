"""End to end through a gateway: N instant commands (`true`) from submission to `succeeded`, beside huey's consumer
and Celery's worker doing the same on this machine.

    python bench/e2e.py [--n 1000] [--cli-submits 20] [--postgres URL|none] [--peers-python PY] [--quick]
                        [--variant NAME=DIR]... [--rounds R]

For flowledger on SQLite and on PostgreSQL, two phases against a real `flowledger gateway` process (8 parallel
runs, each task a real child process started and recorded by the cli runtime):
- live: the gateway is up; N tasks are submitted from one process through `run_command(detach=True)` — what
  `flowledger run --detach -- true` does after its start-up — and the clock runs from the first submission to
  the last `ended_at`: end-to-end tasks/s. The submission rate is reported apart.
- drain: N tasks are queued with no gateway up, then the gateway starts; drain tasks/s is taken from the first
  task's end to the last one's (the gateway's start-up is left out).
- cli submit: `flowledger run --detach -- true` as a console script, one process per command, median wall time
  → submissions/s of a shell loop.
The peers (bench/e2e_peers.py, in the peers' interpreter: huey on Redis, Celery on RabbitMQ + Redis results, 8
workers each) do the same two phases with the same task: run `true` in a child process. `--quick` (CI) runs a
handful of tasks on flowledger only and skips the peers with a note. `--variant NAME=DIR` (repeatable; DIR holds
an older `flowledger/` source tree, e.g. `git archive main | tar -x -C DIR/flowledger`) runs the flowledger phases
with that code too, in the same invocation, back to back with this tree on each engine: before and after side by
side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from measure import helper, postgres_database, run_json
from sqlalchemy import text

from flowledger import Ledger
from flowledger.scheduler.runner import run_command
from flowledger.tasks.core.states import TaskStatus

PEERS = ("huey", "celery")


@contextmanager
def gateway(url: str, state: Path, log_name: str = "gateway.log") -> Iterator[subprocess.Popen[bytes]]:
    """A `flowledger gateway` process on (url, state), yielded once it prints `gateway ready`."""
    log_path = state.parent / log_name
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flowledger.cli.main", "--state-dir", str(state), "--database-url", url,
             "gateway", "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=log, env={**os.environ})
        try:
            deadline = time.monotonic() + 60
            while b"gateway ready" not in log_path.read_bytes():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(log_path.read_text(errors="replace")[-2000:])
                time.sleep(0.02)
            yield proc
        finally:
            proc.terminate()
            proc.wait(30)


def _wait_all_ended(ledger: Ledger, ids: list[str], timeout: float) -> tuple[float, float]:
    """Poll until none of `ids` is active; (first ended_at, last ended_at) as epoch seconds. Raises unless all
    succeeded."""
    deadline = time.monotonic() + timeout
    # One count a poll, on the task_runs status index: the poll itself must not load the database it measures.
    count = text("SELECT count(*) FROM task_runs WHERE status IN ('queued', 'running')")
    while True:
        with ledger.tasks.db.read() as conn:
            active = conn.execute(count).scalar_one()
        if not active:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{active} tasks still active after {timeout:.0f} s")
        time.sleep(0.02)
    ends: list[float] = []
    for task_id in ids:
        task = ledger.tasks.require(task_id)
        if task.status != TaskStatus.SUCCEEDED or task.ended_at is None:
            raise RuntimeError(f"task {task_id} ended {task.status.value}: {task.error}")
        ends.append(task.ended_at.timestamp())
    return min(ends), max(ends)


def flowledger_phases(url: str, state: Path, n: int, cli_submits: int) -> dict[str, float]:
    Ledger.open(state_dir=state, database_url=url).close()  # the schema first
    result: dict[str, float] = {}
    with Ledger.open(state_dir=state, database_url=url) as ledger:
        queued = [run_command(ledger, ["true"], detach=True).task.task_id for _ in range(n)]
        with gateway(url, state, "gateway-drain.log"):
            first_end, last_end = _wait_all_ended(ledger, queued, 600)
        result["drain_per_s"] = (n - 1) / max(last_end - first_end, 1e-3)
        with gateway(url, state, "gateway-live.log"):
            warm = run_command(ledger, ["true"], detach=True).task.task_id
            _wait_all_ended(ledger, [warm], 60)
            first = time.time()
            ids = [run_command(ledger, ["true"], detach=True).task.task_id for _ in range(n)]
            submitted = time.time()
            _, last_end = _wait_all_ended(ledger, ids, 600)
            result["submit_per_s"] = n / (submitted - first)
            result["e2e_per_s"] = n / max(last_end - first, 1e-3)
            if cli_submits:
                result["cli_submit_s"] = cli_submit_median(url, state, cli_submits)
    return result


def flowledger_child(url: str, state: Path, n: int, cli_submits: int, source: str | None) -> dict[str, float]:
    """flowledger_phases in a child interpreter, on `source` (a baseline tree) when given: the gateway and the
    console script it starts inherit the same PYTHONPATH, so the whole path runs on that code."""
    env = {"PYTHONPATH": source} if source else {}
    got, reason = run_json([sys.executable, os.path.abspath(__file__), "--child", url, str(state), str(n),
                            str(cli_submits)], timeout=1800, env=env)
    if got is None:
        raise RuntimeError(f"flowledger phases failed: {reason}")
    return got


def cli_submit_median(url: str, state: Path, repeat: int) -> float:
    """Median wall time of `flowledger run --detach -- true` as a console script (a gateway is up)."""
    script = Path(sys.executable).with_name("flowledger")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "flowledger.cli.main"]
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        subprocess.run([*argv, "--state-dir", str(state), "--database-url", url, "run", "--detach", "--", "true"],
                       check=True, capture_output=True)
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def peer_phases(python: str, peer: str, n: int, timeout: float) -> tuple[dict[str, float] | None, str]:
    """(rates, reason when None) for one peer, both phases."""
    result: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix=f"flb-e2e-{peer}-") as workdir:
        for mode in ("drain", "live"):
            got, reason = run_json([python, helper("e2e_peers.py"), peer, str(n), mode, workdir], timeout=timeout,
                                   cwd=workdir)
            if got is None:
                return None, reason
            result["version"] = got["version"]
            if mode == "drain":
                result["drain_per_s"] = (n - 1) / max(got["last_end"] - got["first_end"], 1e-3)
            else:
                result["submit_per_s"] = n / (got["submitted"] - got["first_submit"])
                result["e2e_per_s"] = n / max(got["last_end"] - got["first_submit"], 1e-3)
    return result, ""


def peers_available(python: str, peer: str) -> str:
    """Why the peer cannot run here ('' when it can): not installed, or its servers are not up."""
    probe = {"huey": "import huey, redis; redis.Redis(socket_timeout=2).ping()",
             "celery": "import celery, redis, kombu; redis.Redis(socket_timeout=2).ping(); "
                       "kombu.Connection('amqp://guest:guest@127.0.0.1:5672//', connect_timeout=2).connect()"}[peer]
    try:
        done = subprocess.run([python, "-c", probe], capture_output=True, timeout=60, check=False, text=True)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{peer}: {exc}"
    if done.returncode != 0:
        return f"{peer} not runnable in {python}: {(done.stderr.strip().splitlines() or ['?'])[-1][:100]}"
    return ""


def run_all(n: int, cli_submits: int, pg_admin: str | None, peers_python: str | None,
            tmp: Path, variants: list[tuple[str, str]] | None = None, rounds: int = 1
            ) -> list[tuple[str, float | None, str, str]]:
    """Every system in one run, `rounds` times over (trees alternated within each engine, then the peers):
    rows of (measure, median value, unit, note: the range over the rounds, or why there is no value)."""
    samples: dict[str, list[float]] = {}
    units: dict[str, str] = {}
    reasons: dict[str, str] = {}

    def add(system: str, got: dict[str, Any] | None, reason: str = "") -> None:
        for key, label, unit in (("e2e_per_s", "end to end, submit → succeeded", "tasks/s"),
                                 ("drain_per_s", "drain of a full queue", "tasks/s"),
                                 ("submit_per_s", "submit, in-process", "tasks/s")):
            name = f"{system}: {label} ({n:,})"
            value = None if got is None else got.get(key)
            units[name] = unit
            samples.setdefault(name, [])
            if value is None:
                reasons[name] = reason
            else:
                samples[name].append(value)
        if got is not None and "cli_submit_s" in got:
            name = f"{system}: `run --detach -- true` as a process (median)"
            units[name] = "ms"
            samples.setdefault(name, []).append(got["cli_submit_s"] * 1000)

    # Baseline and this tree back to back on each engine, so both see the same machine load.
    trees: list[tuple[str, str | None]] = [*(variants or []), ("", None)]
    for round_no in range(rounds):
        for tag, source in trees:
            sqlite_state = tmp / f"e2e-sqlite{tag}-{round_no}" / "state"
            add(f"flowledger SQLite{f' ({tag})' if tag else ''}",
                flowledger_child(f"sqlite:///{sqlite_state / 'tasks' / 'runs.sqlite'}", sqlite_state, n,
                                 cli_submits, source))
        for tag, source in trees if pg_admin else []:
            with postgres_database(pg_admin) as pg:  # type: ignore[arg-type]
                add(f"flowledger PostgreSQL{f' ({tag})' if tag else ''}",
                    flowledger_child(pg, tmp / f"e2e-pg{tag}-{round_no}" / "state", n, cli_submits, source))
        for peer in PEERS:
            if peers_python is None:
                add(peer, None, "skipped in --quick (peers are not installed in CI)")
                continue
            why = peers_available(peers_python, peer)
            got, reason = (None, why) if why else peer_phases(peers_python, peer, n, timeout=600)
            add(f"{peer} {got['version']}" if got else peer, got, reason)
        print(f"round {round_no + 1}/{rounds} done, load average {os.getloadavg()[0]:.2f}", flush=True)
    rows: list[tuple[str, float | None, str, str]] = []
    for name, values in samples.items():
        if not values:
            rows.append((name, None, units[name], reasons.get(name, "")))
            continue
        spread = f"{min(values):,.1f}–{max(values):,.1f} over {len(values)}" if len(values) > 1 else ""
        rows.append((name, statistics.median(values), units[name], spread))
    return rows


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        url, state, n, cli_submits = sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        print(json.dumps(flowledger_phases(url, state, n, cli_submits)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--cli-submits", type=int, default=20)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--peers-python", default=os.environ.get("FLOWLEDGER_BENCH_PEERS_PYTHON", sys.executable))
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=DIR",
                        help="also measure the flowledger/ tree under DIR, labelled NAME (repeatable)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat everything, alternating; medians and ranges")
    parser.add_argument("--quick", action="store_true", help="20 tasks, flowledger only (the CI smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.n, args.cli_submits, args.peers_python, args.rounds = 20, 1, None, 1
        print("e2e --quick: huey and Celery are skipped (their servers and packages are not part of CI)")
    pg = None if args.postgres.lower() == "none" else args.postgres
    with tempfile.TemporaryDirectory(prefix="flb-e2e-") as tmp:
        variants = [tuple(v.split("=", 1)) for v in args.variant]
        rows = run_all(args.n, args.cli_submits, pg, args.peers_python, Path(tmp), variants,  # type: ignore[arg-type]
                       args.rounds)
    for name, value, unit, note in rows:
        shown = f"{value:,.1f}" if value is not None else f"n/a ({note})"
        extra = f"  ({note})" if value is not None and note else ""
        print(f"  {name:<62} {shown:>12} {unit}{extra}")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
