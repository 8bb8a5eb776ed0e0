"""Input an outside test threw at the CLI (issue 12 items 8–12): arguments that are not UTF-8, TOML nested without
end, files that are not files, database URLs of every shape, huge numbers. Each gets one line and a documented
exit code; none reaches a traceback, an internal error, a hang or a terminal escape."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowledger import Ledger
from flowledger.cli.main import run
from flowledger.tasks.core.limits import MAX_FILE_BYTES, MAX_NESTING

BAD = os.fsdecode(b"bad\xff\xfe")  # what Python makes of argv bytes that are not UTF-8
ESCAPED = "bad\\xff\\xfe"


@pytest.fixture(scope="module")
def seeded_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    state = tmp_path_factory.mktemp("hostile") / "state"
    with Ledger.open(state_dir=state) as ledger:
        ledger.tasks.create(runtime="cli", task="t", owner_key="agent:main:main", run_id="run-1", status="running")
    yield state


def _cli(state: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(["--state-dir", str(state), *args])
    out, err = capsys.readouterr()
    return code, out, err


def _clean(out: str, err: str) -> None:
    assert "Traceback" not in out + err and "internal error" not in err, err
    assert "\x1b" not in out + err


# Every command the outside test fed non-UTF-8 arguments to.
NON_UTF8_COMMANDS = [
    ["tasks", "show", BAD], ["tasks", "cancel", BAD], ["tasks", "cancel", "run-1", "--reason", BAD],
    ["tasks", "events", BAD], ["tasks", "logs", BAD], ["tasks", "notify", BAD, "silent"],
    ["tasks", "board", "--session", BAD], ["tasks", "flow", "show", BAD], ["tasks", "flow", "cancel", BAD],
    ["cron", "runs", BAD], ["cron", "remove", BAD], ["sessions", "events", BAD], ["sessions", "route", BAD],
    ["tasks", "list", "--status", BAD], ["tasks", "flow", "validate", BAD], ["tasks", BAD],
]


@pytest.mark.parametrize("args", NON_UTF8_COMMANDS, ids=lambda a: " ".join(a[:3]))
def test_arguments_that_are_not_utf8_are_escaped_never_raised(seeded_state: Path, capsys: pytest.CaptureFixture[str],
                                                              args: list[str]) -> None:
    code, out, err = _cli(seeded_state, capsys, *args)
    _clean(out, err)
    assert code in {0, 1, 2}, (args, err)
    assert BAD not in out + err  # the lone surrogates never reach a stream…
    if BAD in args[-1:] and code == 1:
        assert ESCAPED in err  # …a lookup miss names them escaped


def test_run_keeps_the_commands_own_bytes_and_shows_them_escaped(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "made"
    code, out, err = _cli(tmp_path / "state", capsys, "run", "--label", BAD, "--session", "agent:main:" + BAD,
                          "--json", "--", "sh", "-c", 'printf "%s" "$1" > "$2"', "sh", BAD, str(target))
    _clean(out, err)
    assert code == 0, err
    task = json.loads(out)
    assert task["label"] == ESCAPED and task["owner_key"] == "agent:main:" + ESCAPED and ESCAPED in task["task"]
    assert target.read_bytes() == b"bad\xff\xfe"  # the child got the exact bytes


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(min_size=1, max_size=12), where=st.sampled_from(NON_UTF8_COMMANDS))
def test_random_bytes_in_any_argument(seeded_state: Path, capsys: pytest.CaptureFixture[str], raw: bytes,
                                      where: list[str]) -> None:
    arg = os.fsdecode(raw.replace(b"\x00", b"0"))
    args = [arg if a == BAD else a for a in where]
    code, out, err = _cli(seeded_state, capsys, *args)
    _clean(out, err)
    assert code in {0, 1, 2}, (args, err)


@pytest.mark.parametrize("command", [["cron", "runs"], ["cron", "remove"]])
def test_cron_commands_escape_their_argument(seeded_state: Path, capsys: pytest.CaptureFixture[str],
                                             command: list[str]) -> None:
    code, out, err = _cli(seeded_state, capsys, *command, "\x1b[31mred\nline")
    assert code == 1 and out == ""
    assert err == "Cron job not found: red\\nline.\n"


@pytest.mark.parametrize("value", ["1e40", "99999999999999999999999", "-1", "x"])
def test_a_limit_out_of_range_is_a_usage_error(seeded_state: Path, capsys: pytest.CaptureFixture[str],
                                               value: str) -> None:
    for command in (["tasks", "list"], ["tasks", "audit"]):
        code, out, err = _cli(seeded_state, capsys, *command, "--limit", value)
        _clean(out, err)
        assert code in {0, 2}, (command, value, err)  # audit treats an odd limit its own documented way


# --- nested TOML and files that are not files ----------------------------------------------------------------


def _nested(levels: int) -> str:
    return "[flow]\ngoal = 'g'\nx = " + "[" * (levels - 1) + "1" + "]" * (levels - 1) + "\n"


@pytest.mark.parametrize("levels", [MAX_NESTING + 1, 5_000, 100_000])
def test_flow_files_nested_too_deep_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                levels: int) -> None:
    flow = tmp_path / "deep.toml"
    flow.write_text(_nested(levels))
    code, out, err = _cli(tmp_path / "state", capsys, "tasks", "flow", "validate", str(flow))
    _clean(out, err)
    assert code == 2 and err.count("\n") == 1 and f"nested deeper than {MAX_NESTING} levels" in err


def test_a_flow_file_at_the_nesting_limit_is_only_judged_on_its_content(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    flow = tmp_path / "deep.toml"
    flow.write_text(_nested(MAX_NESTING))  # `[flow]` is one level, the array the other 31
    code, _out, err = _cli(tmp_path / "state", capsys, "tasks", "flow", "validate", str(flow))
    assert code == 2 and "nested" not in err  # refused for its unknown key, not its depth


def test_config_nested_too_deep_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "config.toml").write_text("x = " + "[" * 3000 + "]" * 3000 + "\n")
    code, out, err = _cli(state, capsys, "tasks", "cancel", "nope")  # a command that delivers refuses
    _clean(out, err)
    assert code == 2 and err.count("\n") == 1 and "nested deeper" in err
    code, out, err = _cli(state, capsys, "tasks", "list")  # a reading command warns and reads (issue 17)
    _clean(out, err)
    assert code == 0 and err.startswith("Warning: ") and "nested deeper" in err


def _within(seconds: float, fn: object) -> None:
    """Run `fn` in a thread and fail (instead of hanging the suite) when it does not return in time."""
    done = threading.Event()

    def target() -> None:
        fn()  # type: ignore[operator]
        done.set()

    threading.Thread(target=target, daemon=True).start()
    assert done.wait(seconds), "hung"


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_special_files_are_refused_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "flow.fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (MAX_FILE_BYTES + 1))
    results: list[tuple[int, str, str]] = []

    def check() -> None:
        for path in ("/dev/zero", str(fifo), str(big), str(tmp_path)):
            results.append(_cli(tmp_path / "state", capsys, "tasks", "flow", "validate", path))

    _within(20, check)
    for code, out, err in results:
        _clean(out, err)
        assert code == 2 and err.count("\n") == 1, err
    assert "not a regular file" in results[0][2] and "not a regular file" in results[1][2]
    assert "larger than 1024 KiB" in results[2][2]


def test_a_fifo_named_config_toml_does_not_hang_every_command(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.mkfifo(state / "config.toml")
    results: list[tuple[int, str, str]] = []
    _within(20, lambda: results.append(_cli(state, capsys, "tasks", "cancel", "nope")))
    _within(20, lambda: results.append(_cli(state, capsys, "tasks", "list")))
    (code, out, err), (read_code, _, read_err) = results
    _clean(out, err)
    assert code == 2 and "config.toml: not a regular file" in err
    assert read_code == 0 and "config.toml: not a regular file" in read_err


# --- database URL shapes ---------------------------------------------------------------------------------------

URL_SHAPES = st.builds(
    lambda scheme, user, host, port, tail: f"{scheme}://{user}{host}{port}{tail}",
    scheme=st.sampled_from(["postgresql", "postgresql+psycopg", "postgresql+asyncpg", "postgresql+psycopg2",
                            "sqlite", "sqlite+pysqlite", "mysql", "", "http", "sqlite+aiosqlite"]),
    user=st.sampled_from(["", "u@", "u:s3cr3t-pw@", "u:@", ":s3cr3t-pw@"]),
    host=st.sampled_from(["", "127.0.0.1", "[::1", "[::1]", "host name", "h%zz"]),
    port=st.sampled_from(["", ":1", ":abc", ":99999", ":-1", ":"]),
    tail=st.sampled_from(["", "/", "/db", "/:memory:", "/" + "n" * 300, "/db?mode=memory", "/x?sslmode=bogus"]),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(url=URL_SHAPES)
def test_database_url_shapes_are_exit_2_or_3_on_one_line(tmp_path_factory: pytest.TempPathFactory,
                                                        capsys: pytest.CaptureFixture[str], url: str) -> None:
    if url.startswith(("sqlite://", "sqlite+pysqlite://")) and url.count("/") >= 3 and ":memory:" not in url \
            and "mode=memory" not in url and "n" * 300 not in url:
        return  # a usable file path just works (and would litter the disk): not a fault
    state = tmp_path_factory.getbasetemp() / "url-shapes"
    capsys.readouterr()
    code = run(["--state-dir", str(state), "--database-url", url, "tasks", "list"])
    out, err = capsys.readouterr()
    _clean(out, err)
    assert "s3cr3t-pw" not in out + err
    assert code in {0, 2, 3}, (url, code, err)  # 0: a local server answered (postgresql:///db)
    if code != 0:
        assert len([line for line in err.splitlines() if line.strip()]) == 1, (url, err)
