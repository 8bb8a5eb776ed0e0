"""A real `flowledger web` process on a free port, for the process and browser tests."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

SERVING = re.compile(r"serving (http://\S+?)/ ")
START_TIMEOUT_S = 30.0


@dataclass
class Board:
    process: subprocess.Popen[str]
    url: str
    stderr_lines: list[str]


def _command(state_dir: Path, database_url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "flowledger.cli.main", "--state-dir", str(state_dir), "--database-url",
            database_url, "web", "--port", "0", *args]


@contextmanager
def running_board(state_dir: Path, database_url: str, *args: str,
                  env: dict[str, str] | None = None) -> Iterator[Board]:
    """Start the board (port 0: the OS picks), wait for its `serving` line, stop it with SIGTERM at the end."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLEDGER_")}
    environment.update(env or {})
    process = subprocess.Popen(_command(state_dir, database_url, *args), stderr=subprocess.PIPE, text=True,
                               stdout=subprocess.DEVNULL, env=environment)
    assert process.stderr is not None
    lines: list[str] = []
    ready: queue.Queue[str] = queue.Queue()

    def drain(stream: IO[str]) -> None:  # keeps the pipe empty for the whole run, so the board never blocks on it
        for line in stream:
            lines.append(line)
            found = SERVING.search(line)
            if found:
                ready.put(found.group(1))

    threading.Thread(target=drain, args=(process.stderr,), daemon=True).start()
    try:
        url = ready.get(timeout=START_TIMEOUT_S)
    except queue.Empty:
        process.kill()
        process.wait()
        raise AssertionError(f"flowledger web did not start: {''.join(lines)}") from None
    try:
        yield Board(process, url, lines)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
