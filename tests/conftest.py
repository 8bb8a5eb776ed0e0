"""Shared fixtures: a frozen clock, and a ledger on a real SQLite file and on a real PostgreSQL database.

PostgreSQL: each test run creates its own database (and drops it at the end) on the server named by
FLOWLEDGER_TEST_PG_URL (default: the local trust-auth server). Locally the PostgreSQL half skips with the
reason when no server answers; under CI=true it must run, so a missing server fails the run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from flowledger import FrozenClock, Ledger
from flowledger.tasks.core.tables import METADATA

T0 = datetime(2026, 3, 30, 1, 0, tzinfo=UTC)
PG_ADMIN_URL = os.environ.get("FLOWLEDGER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, dropped afterwards."""
    name = f"flowledger_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # the reason is shown in the skip line
        admin.dispose()
        if IN_CI:
            pytest.fail(f"PostgreSQL is required under CI=true but unavailable: {exc}")
        pytest.skip(f"PostgreSQL not available at {PG_ADMIN_URL}: {str(exc).splitlines()[0]}")
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"
            ), {"n": name})
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def _truncate_pg(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            existing = [t for t in METADATA.sorted_tables if conn.dialect.has_table(conn, t.name)]
            if existing:
                names = ", ".join(f'"{t.name}"' for t in existing)
                conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY"))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for each engine: a SQLite file in tmp_path, and the run's PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'tasks' / 'runs.sqlite'}"
    url: str = request.getfixturevalue("pg_url")
    _truncate_pg(url)
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state' / 'tasks' / 'runs.sqlite'}"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def ledger(database_url: str, state_dir: Path, clock: FrozenClock) -> Iterator[Ledger]:
    """A ledger on each engine, with a frozen clock."""
    with Ledger.open(state_dir=state_dir, database_url=database_url, clock=clock) as opened:
        yield opened


@pytest.fixture
def sqlite_ledger(sqlite_url: str, state_dir: Path, clock: FrozenClock) -> Iterator[Ledger]:
    with Ledger.open(state_dir=state_dir, database_url=sqlite_url, clock=clock) as opened:
        yield opened


@pytest.fixture(autouse=True)
def _no_notice_sender_outlives_its_test() -> Iterator[None]:
    """A detached notice sender a test started (tasks/delivery/outbox.py `kick`) ends with that test. On
    PostgreSQL the next test reuses the database (truncated): a lingering sender, holding the previous test's channel
    config, would claim the new test's notices and send them to a server that is gone."""
    yield
    from flowledger.tasks.delivery import outbox

    for key, sender in list(outbox._SENDERS.items()):
        if sender.poll() is None:
            sender.kill()
            sender.wait(10)
        outbox._SENDERS.pop(key, None)
