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
    # A baseline tree (PYTHONPATH) may predate cli/entry.py: run its cli.main module, as its script would.
    program = [sys.executable, "-m", "flowledger.cli.main"] if env and "PYTHONPATH" in env else flowledger_argv()
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


def startup(repeat: int = 10) -> None:
    """The start-up targets on a small ledger: `--help`, `tasks show <id>`, and `status` on an empty ledger.

    `python bench/clilat.py [repeat]`: a quick check that does not need the full benchmark's seeded database.
    """
    import tempfile

    from flowledger import Ledger

    with tempfile.TemporaryDirectory(prefix="clilat-") as tmp:
        empty, one = Path(tmp, "empty"), Path(tmp, "one")
        empty_url, one_url = f"sqlite:///{empty / 'ledger.db'}", f"sqlite:///{one / 'ledger.db'}"
        with Ledger.open(state_dir=empty, database_url=empty_url):
            pass
        with Ledger.open(state_dir=one, database_url=one_url) as ledger:
            task_id = ledger.tasks.create(runtime="cli", task="clilat", owner_key="agent:main:main").task_id
        commands = [("flowledger --help", ["--help"], empty, empty_url),
                    ("tasks show <id>", ["tasks", "show", task_id], one, one_url),
                    ("status (empty ledger)", ["status"], empty, empty_url)]
        for label, args, state_dir, url in commands:
            median, reason, samples = time_command(args, state_dir=state_dir, url=url, repeat=repeat, timeout=60)
            shown = f"{median * 1000:6.0f} ms" if median is not None else f"n/a ({reason})"
            spread = f"min {min(samples) * 1000:.0f}, max {max(samples) * 1000:.0f}" if samples else ""
            print(f"{label:<24} median {shown}  ({len(samples)} runs; {spread})")


if __name__ == "__main__":
    startup(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
