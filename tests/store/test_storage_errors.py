"""Storage that cannot be used: one clear line, exit 3, no traceback, nothing written. File modes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import update

from flowledger import Ledger
from flowledger.cli.main import run
from flowledger.tasks.core.errors import StorageUnavailable
from flowledger.tasks.core.tables import SCHEMA_VERSION, schema_meta

GARBAGE = b"this is not a database, just some bytes " * 200


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = run(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_line(err: str) -> None:
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_file_that_is_not_sqlite(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = state_dir / "tasks" / "runs.sqlite"
    db.parent.mkdir(parents=True)
    db.write_bytes(GARBAGE)
    with pytest.raises(StorageUnavailable, match=r"^Storage unavailable: file is not a database"):
        Ledger.open(state_dir=state_dir)
    for argv in (["tasks"], ["tasks", "list", "--json"], ["tasks", "show", "x"], ["tasks", "cancel", "x"],
                 ["tasks", "notify", "x", "silent"]):
        code, out, err = _cli(capsys, "--state-dir", str(state_dir), *argv)
        assert (code, out) == (3, ""), argv
        _assert_one_line(err)
        assert err.startswith("Storage unavailable:")
    assert db.read_bytes() == GARBAGE  # nothing written
    assert sorted(p.name for p in db.parent.iterdir()) == ["runs.sqlite"]


def test_unreachable_postgres(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = "postgresql+psycopg://nobody@127.0.0.1:1/nothing"
    with pytest.raises(StorageUnavailable):
        Ledger.open(state_dir=tmp_path / "s", database_url=url)
    code, out, err = _cli(capsys, "--database-url", url, "--state-dir", str(tmp_path / "s"), "tasks", "list")
    assert (code, out) == (3, "")
    _assert_one_line(err)
    assert err.startswith("Storage unavailable:")


def test_unreachable_postgres_from_environment(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWLEDGER_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/nothing")
    code, _out, err = _cli(capsys, "--state-dir", str(tmp_path / "s"), "status")
    assert code == 3
    _assert_one_line(err)


# Issue 12 item 10: each URL a user can get wrong is a usage error (exit 2) on one line, never a traceback.
BAD_URLS = ["mysql://u@h/db", "not a url at all", "postgresql://u@host:abc/db", "postgresql://u@[::1/db",
            "postgresql+asyncpg://u@127.0.0.1/db", "postgresql+psycopg2://u@127.0.0.1/db", "sqlite://",
            "sqlite:///:memory:", "sqlite:///file:x?mode=memory&uri=true", "sqlite:///" + "n" * 5000]


@pytest.mark.parametrize("url", BAD_URLS, ids=lambda u: u[:40])
def test_unsupported_or_malformed_url(capsys: pytest.CaptureFixture[str], tmp_path: Path, url: str) -> None:
    code, out, err = _cli(capsys, "--database-url", url, "--state-dir", str(tmp_path / "s"), "tasks", "list")
    assert (code, out) == (2, "")
    _assert_one_line(err)
    assert err.startswith("Invalid database URL:")


def test_empty_state_dir_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "--state-dir", "", "tasks", "list")
    assert (code, out) == (2, "")
    _assert_one_line(err)


def test_non_numeric_schema_version_is_storage_unavailable(state_dir: Path, capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    with Ledger.open(state_dir=state_dir) as ledger, ledger.db.write() as conn:
        conn.execute(update(schema_meta).where(schema_meta.c.meta_key == "schema_version").values(value="two"))
    code, out, err = _cli(capsys, "--state-dir", str(state_dir), "tasks", "list")
    assert (code, out) == (3, "")
    _assert_one_line(err)
    assert "schema version 'two' is not a number" in err


def test_state_dir_that_is_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _out, err = _cli(capsys, "--state-dir", str(blocker), "tasks", "list")
    assert code == 3
    _assert_one_line(err)


def test_newer_schema_version_is_refused(database_url: str, state_dir: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with Ledger.open(state_dir=state_dir, database_url=database_url) as ledger, ledger.db.write() as conn:
        conn.execute(update(schema_meta).where(schema_meta.c.meta_key == "schema_version")
                     .values(value=str(SCHEMA_VERSION + 1)))
    with pytest.raises(StorageUnavailable) as info:
        Ledger.open(state_dir=state_dir, database_url=database_url)
    assert str(info.value) == (
        f"Storage unavailable: database schema version {SCHEMA_VERSION + 1} is newer than this flowledger "
        f"(supports {SCHEMA_VERSION}); upgrade flowledger."
    )
    code, out, err = _cli(capsys, "--database-url", database_url, "--state-dir", str(state_dir), "tasks")
    assert (code, out) == (3, "")
    _assert_one_line(err)
    assert "newer than this flowledger" in err


def test_reopen_same_version_keeps_data(database_url: str, state_dir: Path) -> None:
    with Ledger.open(state_dir=state_dir, database_url=database_url) as ledger:
        made = ledger.tasks.create(runtime="cli", task="x", owner_key="agent:m:main")
    with Ledger.open(state_dir=state_dir, database_url=database_url) as ledger:
        assert ledger.tasks.get(made.task_id) == made


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_file_modes(tmp_path: Path) -> None:
    state = tmp_path / "fresh" / "state"
    old = os.umask(0o022)  # a typical permissive umask must not leak into our files
    try:
        with Ledger.open(state_dir=state) as ledger:
            ledger.tasks.create(runtime="cli", task="x", owner_key="agent:m:main")
            db = state / "tasks" / "runs.sqlite"
            assert _mode(state) == 0o700
            assert _mode(state / "tasks") == 0o700
            assert _mode(db) == 0o600
            for suffix in ("-wal", "-shm"):
                sidecar = Path(f"{db}{suffix}")
                assert sidecar.exists()
                assert _mode(sidecar) == 0o600, suffix
    finally:
        os.umask(old)
    assert _mode(db) == 0o600


def test_loose_existing_file_is_tightened(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Ledger.open(state_dir=state):
        pass
    db = state / "tasks" / "runs.sqlite"
    db.chmod(0o644)
    with Ledger.open(state_dir=state):
        assert _mode(db) == 0o600


def test_default_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWLEDGER_STATE_DIR", str(tmp_path / "envstate"))
    monkeypatch.delenv("FLOWLEDGER_DATABASE_URL", raising=False)
    with Ledger.open() as ledger:
        assert ledger.db.sqlite_path == (tmp_path / "envstate" / "tasks" / "runs.sqlite").resolve()
    with Ledger.open(state_dir=tmp_path / "pathlike") as ledger:  # a path-like works as well as a str
        assert ledger.db.sqlite_path == (tmp_path / "pathlike" / "tasks" / "runs.sqlite").resolve()


def test_sqlite_pragmas(sqlite_ledger: Ledger) -> None:
    with sqlite_ledger.db.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_close_truncates_wal(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Ledger.open(state_dir=state) as ledger:
        for i in range(20):
            ledger.tasks.create(runtime="cli", task=f"t{i}", owner_key="agent:m:main")
        wal = Path(f"{ledger.db.sqlite_path}-wal")
        assert wal.stat().st_size > 0
    assert not wal.exists() or wal.stat().st_size == 0


@pytest.mark.parametrize("message", ["database is locked", "deadlock detected", "could not serialize access"])
def test_transact_reruns_a_unit_that_hit_a_lock(sqlite_ledger: Ledger, message: str) -> None:
    from sqlalchemy.exc import OperationalError

    calls: list[int] = []

    def unit(conn: object) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("UPDATE …", {}, Exception(message))
        return "done"

    assert sqlite_ledger.db.transact(unit) == "done"
    assert len(calls) == 2


def test_transact_does_not_rerun_other_errors(sqlite_ledger: Ledger) -> None:
    from sqlalchemy.exc import OperationalError

    calls: list[int] = []

    def unit(conn: object) -> None:
        calls.append(1)
        raise OperationalError("SELECT", {}, Exception("disk I/O error"))

    with pytest.raises(StorageUnavailable, match="disk I/O error"):
        sqlite_ledger.db.transact(unit)
    assert len(calls) == 1


def test_older_database_is_migrated_on_open(sqlite_url: str, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database made by this version opens in the next: the versioned DDL steps run once, data kept."""
    from flowledger.tasks.core import db as dbmod

    with Ledger.open(state_dir=state_dir, database_url=sqlite_url) as ledger:
        made = ledger.tasks.create(runtime="cli", task="before the upgrade", owner_key="agent:m:main")
    monkeypatch.setattr(dbmod, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setitem(dbmod.MIGRATIONS, SCHEMA_VERSION + 1, ["ALTER TABLE task_runs ADD COLUMN upgraded_note TEXT"])
    for _ in range(2):  # the second open finds the current version and runs nothing
        with Ledger.open(state_dir=state_dir, database_url=sqlite_url) as ledger:
            assert ledger.tasks.get(made.task_id) == made
            with ledger.db.read() as conn:
                version = conn.execute(schema_meta.select()).mappings().one()["value"]
                columns = [r[1] for r in conn.exec_driver_sql("PRAGMA table_info(task_runs)")]
            assert version == str(SCHEMA_VERSION + 1)
            assert columns.count("upgraded_note") == 1
