"""A database that is unavailable gives 503 (error page / JSON); once it is back the same board serves again."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url
from starlette.testclient import TestClient

from flowledger.web.app import build_app
from flowledger.web.security import decide_access
from flowledger.web.source import LedgerSource

from ..conftest import PG_ADMIN_URL


def _board(state_dir: Path, url: str) -> tuple[TestClient, LedgerSource]:
    source = LedgerSource.from_config(str(state_dir), url)
    return TestClient(build_app(source, decide_access("127.0.0.1", None, allow_actions=False))), source


def _assert_unavailable(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 503
    assert "Storage unavailable" in page.text and "keeps serving" in page.text
    api = client.get("/api/status")
    assert api.status_code == 503 and api.json()["error"].startswith("Storage unavailable")
    assert client.get("/metrics").status_code == 503
    assert client.get("/healthz").text == "ok"  # the process itself is alive


def test_sqlite_that_cannot_be_opened_then_can(tmp_path: Path) -> None:
    blocker = tmp_path / "db"
    blocker.write_text("a file where the database directory should be")
    client, source = _board(tmp_path / "state", f"sqlite:///{blocker / 'runs.sqlite'}")
    try:
        _assert_unavailable(client)
        blocker.unlink()
        assert client.get("/").status_code == 200
        assert client.get("/api/status").json()["tasks"]["total"] == 0
    finally:
        client.close()
        source.close()


@pytest.fixture
def pg_admin() -> Iterator[tuple[Engine, str]]:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        admin.dispose()
        from ..conftest import IN_CI

        if IN_CI:
            pytest.fail(f"PostgreSQL is required under CI=true but unavailable: {exc}")
        pytest.skip(f"PostgreSQL not available at {PG_ADMIN_URL}")
    name = f"flowledger_web_outage_{uuid.uuid4().hex[:8]}"
    yield admin, name
    with admin.connect() as conn:
        if _exists(conn, name):
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def _exists(conn: Connection, name: str) -> bool:
    return bool(conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar())


def test_postgres_outage_while_serving(tmp_path: Path, pg_admin: tuple[Engine, str]) -> None:
    admin, name = pg_admin
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    client, source = _board(tmp_path / "state", url)
    try:
        _assert_unavailable(client)  # the database does not exist yet
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        assert client.get("/").status_code == 200
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                         {"n": name})
        assert client.get("/api/status").status_code == 503
        assert client.get("/flows").status_code == 503
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        assert client.get("/api/status").status_code == 200
        assert client.get("/flows").status_code == 200
    finally:
        client.close()
        source.close()
