"""`flowledger cron add --timeout D` on both engines: stored, shown by `cron list` (text and JSON), and refused
with exit 2 and one line when it is not a positive duration."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

Invoke = Callable[..., tuple[int, str, str]]  # the `cli` fixture (tests/cli/conftest.py)


def test_timeout_is_stored_and_listed(cli: Invoke) -> None:
    code, out, _ = cli("cron", "add", "--name", "backup", "--every", "1h", "--timeout", "1h30m", "--json", "--",
                       "make", "backup")
    assert code == 0 and json.loads(out)["timeout_ms"] == 5_400_000
    code, out, _ = cli("cron", "add", "--name", "tick", "--every", "1s", "--", "true")
    assert code == 0 and out.strip().endswith("timeout 1h.")  # no --timeout: the 1 h default
    jobs = {j["name"]: j for j in json.loads(cli("cron", "list", "--json")[1])["jobs"]}
    assert jobs["backup"]["timeout_ms"] == 5_400_000 and jobs["tick"]["timeout_ms"] is None
    code, out, _ = cli("cron", "list")
    header, _rule, *rows = out.splitlines()
    column = header.index("Timeout")
    timeouts = {row.split()[0]: row[column:].split()[0] for row in rows}
    assert code == 0 and timeouts == {"backup": "1h30m", "tick": "1h"}


@pytest.mark.parametrize("value", ["0s", "0ms", "-5s", "soon", "5 minutes", ""])
def test_a_bad_timeout_exits_2_with_one_line(cli: Invoke, value: str) -> None:
    code, out, err = cli("cron", "add", "--name", "x", "--every", "5m", "--timeout", value, "--", "true")
    assert code == 2 and out == "" and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "--timeout" in err
    assert json.loads(cli("cron", "list", "--json")[1])["jobs"] == []
