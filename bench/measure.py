"""Shared bench plumbing: results, timing, subprocess peers with a time box, temp databases on PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench")


@dataclass
class Row:
    """One line of the results table. `value` None means not measured; `note` says why."""

    section: str
    name: str
    value: float | None
    unit: str
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def shown(self) -> str:
        if self.value is None:
            return f"n/a ({self.note})" if self.note else "n/a"
        return fmt(self.value)


def fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_runs(fn: Callable[[], Any], repeat: int) -> tuple[float, list[float]]:
    samples = [timed(fn) for _ in range(repeat)]
    return statistics.median(samples), samples


def run_json(argv: list[str], *, timeout: float, env: dict[str, str] | None = None,
             cwd: str | None = None) -> tuple[dict[str, Any] | None, str]:
    """Run a helper that prints one JSON document as its last stdout line; (result, reason-if-none).

    The helper gets its own session and the whole group is killed afterwards: peers leave servers behind.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            proc = subprocess.Popen(argv, stdout=out, stderr=err, text=True, env={**os.environ, **(env or {})},
                                    cwd=cwd, start_new_session=True)
        except OSError as exc:
            return None, f"cannot start: {exc.strerror}"
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.wait()
            return None, f"timed out after {timeout:.0f} s"
        _kill_group(proc)  # files, not pipes: a server the helper left behind cannot hold us up
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    lines = [ln for ln in stdout.splitlines() if ln.strip().startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return None, tail[:160]
    try:
        return json.loads(lines[-1]), ""
    except ValueError:
        return None, "unreadable output"


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def helper(name: str) -> str:
    return os.path.join(BENCH, name)


def python() -> str:
    return sys.executable


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh database on the server at `admin_url`, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"flowledger_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :n AND pid <> pg_backend_pid()"), {"n": name})
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def libpq(url: str) -> str:
    """A SQLAlchemy URL as a libpq connection string for raw psycopg."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    parts = [f"dbname={u.database}", f"host={u.host or '127.0.0.1'}", f"port={u.port or 5432}"]
    if u.username:
        parts.append(f"user={u.username}")
    if u.password:
        parts.append(f"password={u.password}")
    return " ".join(parts)
