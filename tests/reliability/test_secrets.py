"""Credentials (a webhook secret, a webhook URL whose path is the credential, a Telegram bot token) never appear
in logs, error lines or JSON — even when a delivery fails and every logger runs at DEBUG. And the state dir and
database files are private, with a start-up warning when they were found looser."""

from __future__ import annotations

import json
import logging
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import select

from flowledger import Ledger
from flowledger.cli.main import run
from flowledger.tasks.core.states import DeliveryStatus, TaskStatus
from flowledger.tasks.core.tables import task_delivery_state

WEBHOOK_SECRET = "whsec-7Hq2LxN9pQ"
HOOK_PATH = "T000-B000-pathsecret-Zk31"
TG_TOKEN = "123456:AAH-telegram-token-Vb8"
SECRETS = (WEBHOOK_SECRET, HOOK_PATH, TG_TOKEN)


def _config(state_dir: Path, base: str, *, broken: bool = False) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "config.toml").write_text(
        f'[channels.webhook]\nurl = "{base}/hook/{HOOK_PATH}"\nsecret = "{WEBHOOK_SECRET}"\n'
        f'[channels.telegram]\ntoken = "{TG_TOKEN}"\napi_base = "{base}/tg"\n'
        + ("timeout = -1\n" if broken else ""),
        encoding="utf-8",
    )


def _no_secret(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{where} leaks a credential: {text!r}"


@pytest.mark.parametrize("channel", ["webhook", "telegram"])
def test_failed_delivery_leaks_no_credential(
    database_url: str, state_dir: Path, httpserver: HTTPServer, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str], channel: str
) -> None:
    # The server refuses and echoes the credential back in its body: a careless error path would repeat it.
    httpserver.expect_request("/tg/bot" + TG_TOKEN + "/sendMessage").respond_with_data(
        f"bad token {TG_TOKEN}", status=400)
    httpserver.expect_request(f"/hook/{HOOK_PATH}").respond_with_data(f"bad {WEBHOOK_SECRET}", status=400)
    _config(state_dir, httpserver.url_for("").rstrip("/"))
    caplog.set_level(logging.DEBUG)
    with Ledger.open(state_dir=state_dir, database_url=database_url) as ledger:
        ledger.tasks.create(runtime="acp", task="deliver me", owner_key="agent:main:main",
                            child_session_key="agent:main:acp:c", run_id="run-s", status="running",
                            requester_origin={"channel": channel, "to": f"{channel}:42"})
        ledger.tasks.fail("run-s", error="Permission denied by ACP runtime")
        task = ledger.tasks.get("run-s")
        assert task is not None and task.status == TaskStatus.FAILED
        assert task.delivery_status == DeliveryStatus.FAILED
        with ledger.db.read() as conn:
            row = conn.execute(select(task_delivery_state)).mappings().all()
        url = ledger.db.engine.url.render_as_string(hide_password=False)
    assert len(httpserver.log) >= 1  # the send really was attempted
    _no_secret("delivery row", json.dumps([{k: str(v) for k, v in r.items()} for r in row]))
    _no_secret("task JSON", json.dumps(task.to_json()))
    ours = [r for r in caplog.records if not r.name.startswith("werkzeug")]  # werkzeug is the far end, not us
    _no_secret("logs", "\n".join(r.getMessage() + str(r.args) for r in ours))
    capsys.readouterr()
    for args in (["tasks", "show", "run-s", "--json"], ["tasks", "audit", "--json"], ["tasks", "list"],
                 ["sessions", "events", "agent:main:main", "--json"], ["status", "--json"]):
        code = run(["--state-dir", str(state_dir), "--database-url", url, *args])
        out, err = capsys.readouterr()
        assert code in {0, 1}, (args, err)
        _no_secret(" ".join(args), out + err)


def test_broken_config_error_names_the_key_not_the_token(state_dir: Path, capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    _config(state_dir, "https://example.invalid", broken=True)
    # A command that delivers refuses the broken file; a reading one only warns (issue 17), naming it the same way.
    code = run(["--state-dir", str(state_dir), "tasks", "cancel", "nope"])
    _, err = capsys.readouterr()
    assert code == 2
    assert "channels.telegram.timeout" in err and len(err.strip().splitlines()) == 1
    _no_secret("config error", err)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A real process: its stderr is exactly what an operator sees at start-up."""
    return subprocess.run([sys.executable, "-m", "flowledger.cli.main", "--state-dir", str(state), *args],
                          capture_output=True, text=True, check=False, timeout=60)


def test_private_files_and_a_startup_warning_when_looser(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = _cli(state, "run", "--", "true")  # a writing command makes the ledger (reading ones never do)
    assert first.returncode == 0
    assert first.stderr == ""  # a fresh state dir is private from the start: nothing to warn about
    db = state / "tasks" / "runs.sqlite"
    assert (_mode(state), _mode(state / "tasks"), _mode(db)) == (0o700, 0o700, 0o600)

    state.chmod(0o755)
    db.chmod(0o644)
    second = _cli(state, "tasks", "list")
    assert second.returncode == 0
    assert f"{state} is accessible by others (mode 755)" in second.stderr
    assert f"{db} was readable by others (mode 644)" in second.stderr
    assert _mode(db) == 0o600  # the file is tightened; the directory is the operator's to fix
    assert "Traceback" not in second.stderr


# --- issue 12, item 3 -----------------------------------------------------------------------------------------

PASSWORD = "pw-Zq8Lr4"


@pytest.mark.parametrize("url", [f"postgresql://u:{PASSWORD}@host:port/db", f"postgresql://u:{PASSWORD}@[::1/db",
                                 f"not a url {PASSWORD}", f"mysql://u:{PASSWORD}@h/d",
                                 f"postgresql+asyncpg://u:{PASSWORD}@127.0.0.1/db"])
def test_a_bad_database_url_is_never_echoed(tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str) -> None:
    code = run(["--state-dir", str(tmp_path / "s"), "--database-url", url, "tasks", "list"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("Invalid database URL:") and err.count("\n") == 1
    assert PASSWORD not in err


def test_children_never_inherit_flowledger_variables(database_url: str, state_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FLOWLEDGER_DATABASE_URL", database_url)  # with PostgreSQL it may carry a password
    monkeypatch.setenv("FLOWLEDGER_STATE_DIR", str(state_dir))
    monkeypatch.setenv("FLOWLEDGER_SOMETHING_ELSE", "x")
    code = run(["run", "--", "env"])
    out, err = capsys.readouterr()
    assert code == 0, err
    names = {line.split("=", 1)[0] for line in out.splitlines() if "=" in line}
    assert "FLOWLEDGER_TASK_ID" in names  # what flowledger hands the child on purpose stays
    handed = {"FLOWLEDGER_TASK_ID", "FLOWLEDGER_RUN_ID"}
    assert not {n for n in names if n.startswith("FLOWLEDGER_") and n not in handed}, names
    assert database_url not in out


def test_state_dir_and_log_files_are_private_on_every_engine(database_url: str, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "fresh" / "state"  # its parent is missing too: both are made 0700, not with the umask
    code = run(["--state-dir", str(state), "--database-url", database_url, "run", "--json", "--",
                "sh", "-c", "echo out; echo err >&2"])
    task = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (_mode(tmp_path / "fresh"), _mode(state), _mode(state / "logs")) == (0o700, 0o700, 0o700)
    for suffix in (".out", ".err"):
        assert _mode(state / "logs" / f"{task['task_id']}{suffix}") == 0o600


def test_a_readable_config_holding_secrets_is_warned_about_once(
    state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from flowledger.tasks.core import config as config_module

    _config(state_dir, "https://example.invalid")
    path = state_dir / "config.toml"
    path.chmod(0o600)
    caplog.set_level(logging.WARNING)
    config_module.load_config(state_dir)
    assert caplog.records == []
    path.chmod(0o644)
    config_module.load_config(state_dir)
    config_module.load_config(state_dir)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "readable by others (mode 644)" in warned[0]
    _no_secret("config warning", warned[0])


def test_no_mode_warning_beside_an_error_or_for_a_directory_the_user_chose(tmp_path: Path) -> None:
    """Issue 12 item 13: a database the user put in a shared directory says nothing about that directory, and a
    failed open prints its one error line only."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    state = tmp_path / "state"
    ok = _cli(state, "--database-url", f"sqlite:///{shared / 'runs.sqlite'}", "run", "--", "true")
    assert ok.returncode == 0 and ok.stderr == ""
    state.chmod(0o755)  # looser than expected: worth a warning when the command works…
    (shared / "broken.sqlite").write_bytes(b"not a database " * 100)
    failed = _cli(state, "--database-url", f"sqlite:///{shared / 'broken.sqlite'}", "tasks", "list")
    assert failed.returncode == 3
    assert failed.stderr.startswith("Storage unavailable:") and failed.stderr.count("\n") == 1, failed.stderr
