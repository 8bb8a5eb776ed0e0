"""Random argv lists into `flowledger.cli.main.run`: never an exception, never a traceback, never an internal
error, and the exit code is always one of the documented four (CONTRACT §3)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowledger import Ledger
from flowledger.cli.main import run

# Words the parser knows, and values that tend to break parsers. Commands that start long-lived or user-chosen
# processes (gateway, run, flow run, logs --follow) are left out on purpose: fuzzing must not spawn anything.
WORDS = [
    "tasks", "list", "show", "cancel", "notify", "events", "audit", "maintenance", "flow", "validate", "board",
    "status", "sessions", "cron", "add", "remove", "runs", "--json", "--status", "--runtime", "--severity",
    "--code", "--limit", "--apply", "--reason", "--session", "--name", "--every", "--schedule", "--tz", "--drain",
    "--help", "-h", "--", "done_only", "state_changes", "silent", "running", "queued", "lost", "bogus", "acp",
    "cli", "cron", "subagent", "warn", "error", "0", "-1", "99999999999999999999", "run-1", "agent:main:main",
    "", " ", "\x1b[31m", "\n", "\x00", "é", "%s", "{}", "[]", "1s", "5m", "-5m", "1e9d", "* * * * *",
]
argv_strategy = st.lists(
    st.one_of(st.sampled_from(WORDS), st.text(max_size=12), st.text(alphabet="-abcdefgh", max_size=8)),
    max_size=6,
)
LEADING = st.sampled_from([[], ["tasks"], ["tasks", "flow"], ["cron"], ["sessions"], ["tasks", "audit"]])
FORBIDDEN = {"gateway", "run", "--follow", "--state-dir", "--database-url", "--detach"}


@pytest.fixture(scope="module")
def seeded_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    state = tmp_path_factory.mktemp("fuzz") / "state"
    with Ledger.open(state_dir=state) as ledger:
        ledger.tasks.create(runtime="cli", task="fuzz \x1b[31mred\x1b[0m\n", owner_key="agent:main:main",
                            run_id="run-1", status="running", label="l\t\x07")
        ledger.tasks.create(runtime="acp", task="other", owner_key="agent:main:main",
                            child_session_key="agent:main:acp:child", run_id="run-2", status="queued")
    yield state


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=LEADING, argv=argv_strategy)
def test_random_argv_never_raises_or_prints_a_traceback(
    seeded_state: Path, capsys: pytest.CaptureFixture[str], prefix: list[str], argv: list[str]
) -> None:
    full = [*prefix, *argv]
    if FORBIDDEN & set(full):
        return
    code = run(["--state-dir", str(seeded_state), *full])
    out, err = capsys.readouterr()
    assert code in {0, 1, 2, 3}, (full, code, err)
    assert "Traceback" not in out + err, (full, err)
    assert "internal error" not in err, (full, err)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(url=st.one_of(st.text(max_size=30), st.sampled_from([
    "sqlite:////proc/nope/x.sqlite", "postgresql+psycopg://nobody@127.0.0.1:1/x", "mysql://x", "sqlite://",
    "://", "sqlite:///relative/../../x.sqlite",
])))
def test_any_database_url_is_exit_3_or_2_with_one_line(
    tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    if url.startswith("sqlite") and "proc" not in url:
        return  # a writable path would just work (and litter the disk): not a fault
    state = tmp_path_factory.getbasetemp() / "url-fuzz"
    code = run(["--state-dir", str(state), "--database-url", url, "tasks", "list"])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "internal error" not in err, (url, err)
    # Some odd strings are real databases (empty = the default, sqlite:// = in memory, postgresql:// = the local
    # socket): those may simply work. Everything else is refused with exactly one line.
    assert code in {0, 2, 3}, (url, code, err)
    if code != 0:
        assert len([line for line in err.splitlines() if line.strip()]) == 1, err


FLOW_LINES = st.sampled_from([
    "[flow]", 'goal = "g"', "[[step]]", 'id = "a"', 'id = "b"', 'needs = ["a"]', 'needs = ["b"]', 'needs = ["zz"]',
    'run = ["true"]', 'run = "true"', 'runtime = "cli"', 'runtime = "bogus"', 'timeout = "10m"', 'timeout = "-1s"',
    "shell = true", 'notify = "loud"', "= broken", '"\x1b[31m" = 1', "[step]", "x = 1",
])


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.one_of(FLOW_LINES, st.text(max_size=20)), max_size=12))
def test_flow_validate_on_any_file_is_ok_or_one_line_exit_2(
    seeded_state: Path, capsys: pytest.CaptureFixture[str], lines: list[str]
) -> None:
    path = seeded_state.parent / "fuzz-flow.toml"
    path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    code = run(["--state-dir", str(seeded_state), "tasks", "flow", "validate", str(path)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "internal error" not in err, (lines, err)
    assert code in {0, 2}, (lines, code, err)
    if code == 2:
        assert len([line for line in err.splitlines() if line.strip()]) == 1, err
        assert "\x1b" not in err
