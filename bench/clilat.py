"""CLI latency: the real `flowledger` console script against a seeded database, median wall time per command
(interpreter start included: that is what a person or a script waits for)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def flowledger_argv() -> list[str]:
    script = Path(sys.executable).with_name("flowledger")
    return [str(script)] if script.exists() else [sys.executable, "-m", "flowledger.cli.main"]


def time_command(args: list[str], *, state_dir: Path, url: str, repeat: int, timeout: float,
                 env: dict[str, str] | None = None) -> tuple[float | None, str, list[float]]:
    """(median seconds, reason when None, samples). Stops repeating once one run takes over `timeout`/3.
    `env` adds to the environment (a `PYTHONPATH` runs a baseline source tree instead of this one)."""
    # A baseline tree (PYTHONPATH): its console script's module, cli/entry.py (the lean path first), or cli.main in
    # a tree that predates it, as its script would.
    program = flowledger_argv()
    if env and "PYTHONPATH" in env:
        entry = Path(env["PYTHONPATH"]) / "flowledger" / "cli" / "entry.py"
        program = [sys.executable, "-m", "flowledger.cli.entry" if entry.exists() else "flowledger.cli.main"]
    argv = [*program, "--state-dir", str(state_dir), "--database-url", url, *args]
    samples: list[float] = []
    for _ in range(repeat):
        start = time.perf_counter()
        try:
            proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout,
                                  check=False, env={**os.environ, "NO_COLOR": "1", **(env or {})})
        except subprocess.TimeoutExpired:
            return None, f"over {timeout:.0f} s", samples
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            detail = (proc.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
            return None, f"exit {proc.returncode}: {detail[:100]}", samples
        samples.append(elapsed)
        if elapsed > timeout / 3:
            break
    return statistics.median(samples), "", samples


def one_task_id(url: str, state_dir: Path) -> str:
    from flowledger import Ledger

    with Ledger.open(state_dir=state_dir, database_url=url) as ledger:
        [task] = ledger.tasks.list(limit=1)
        return task.task_id


def startup(repeat: int = 10, before: Path | None = None) -> None:
    """The start-up targets on a small ledger: `--help`, the read commands, `status` on an empty ledger and the
    writing commands (`tasks cancel`, `run --detach`), beside `python -c pass`.

    `python bench/clilat.py [repeat] [--before SRC]`: a quick check that does not need the full benchmark's
    seeded database. With `--before SRC` (a baseline source tree, SRC/flowledger) each sample of the baseline
    runs right before the same sample of this tree, and the ratio after/before is printed; `cpu` is the median
    user + sys time of the command's process (before/after with a baseline).
    """
    import os
    import resource
    import tempfile

    from flowledger import Ledger

    with tempfile.TemporaryDirectory(prefix="clilat-") as tmp:
        empty, one = Path(tmp, "empty"), Path(tmp, "one")
        empty_url, one_url = f"sqlite:///{empty / 'ledger.db'}", f"sqlite:///{one / 'ledger.db'}"
        with Ledger.open(state_dir=empty, database_url=empty_url):
            pass
        with Ledger.open(state_dir=one, database_url=one_url) as ledger:
            flow = ledger.flows.create_managed("agent:main:main", "clilat", "clilat flow")
            task_id = ledger.tasks.create(runtime="cli", task="clilat", owner_key="agent:main:main",
                                          parent_flow_id=flow.flow_id).task_id

        def queued_task() -> list[str]:  # a fresh task each time: a cancelled task cannot be cancelled again
            with Ledger.open(state_dir=one, database_url=one_url) as opened:  # as `run --detach` records one
                fresh = opened.tasks.create(runtime="cli", task="to cancel", status="queued", task_kind="command")
            return ["tasks", "cancel", fresh.task_id]

        def queued_acp_task() -> list[str]:  # linked to its one-task flow, a notice due: the full path's to cancel
            with Ledger.open(state_dir=one, database_url=one_url) as opened:
                fresh = opened.tasks.create(runtime="acp", task="to cancel", owner_key="agent:main:main",
                                            status="queued", child_session_key="agent:main:acp:clilat")
            return ["tasks", "cancel", fresh.task_id]

        commands: list[tuple[str, object, Path, str]] = [
            ("flowledger --help", ["--help"], empty, empty_url),
            ("tasks list", ["tasks", "list"], one, one_url),
            ("tasks show <id>", ["tasks", "show", task_id], one, one_url),
            ("tasks show <id> --json", ["tasks", "show", task_id, "--json"], one, one_url),
            ("tasks flow list", ["tasks", "flow", "list"], one, one_url),
            ("tasks flow show <id>", ["tasks", "flow", "show", flow.flow_id], one, one_url),
            ("status (empty ledger)", ["status"], empty, empty_url),
            ("tasks cancel <cli id>", queued_task, one, one_url),
            ("tasks cancel <acp id>", queued_acp_task, one, one_url),
            ("run --detach -- true", ["run", "--detach", "--", "true"], one, one_url),
        ]
        floor = []
        for _ in range(repeat):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            floor.append(time.perf_counter() - start)
        print(f"load average {os.getloadavg()[0]:.2f}; python -c pass median {statistics.median(floor) * 1000:.0f} ms")
        for label, args, state_dir, url in commands:
            now: list[float] = []
            old: list[float] = []
            cpu: dict[bool, list[float]] = {True: [], False: []}  # user + sys of the command's process
            reason = ""
            trees = [before, None] if before is not None else [None]
            for _ in range(repeat):
                for tree in trees:  # alternating: the baseline and this tree see the same load
                    argv = args() if callable(args) else args
                    assert isinstance(argv, list)
                    env = {"PYTHONPATH": str(tree)} if tree is not None else None
                    used = resource.getrusage(resource.RUSAGE_CHILDREN)
                    median, why, _ = time_command(argv, state_dir=state_dir, url=url, repeat=1, timeout=60,
                                                  env=env)
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    cpu[tree is None].append(after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime)
                    if median is None:
                        reason = why
                    else:
                        (old if tree is not None else now).append(median)
            shown = f"{statistics.median(now) * 1000:6.0f} ms" if now else f"n/a ({reason})"
            if before is not None and old and now:
                ratio = statistics.median(now) / statistics.median(old)
                shown = f"before {statistics.median(old) * 1000:6.0f} ms  after {shown}  after/before {ratio:.2f}"
            cpu_ms = "/".join(f"{statistics.median(cpu[k]) * 1000:.0f}" for k in (False, True) if cpu[k])
            print(f"{label:<24} median {shown}  cpu {cpu_ms} ms  ({len(now)} runs)", flush=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("repeat", type=int, nargs="?", default=10)
    parser.add_argument("--before", type=Path, default=None, help="a baseline source tree to time beside")
    options = parser.parse_args()
    startup(options.repeat, options.before)
