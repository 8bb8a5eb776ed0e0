"""`flowledger sessions route <key> [--channel C --to T [--account A] [--thread X]] [--json]` on both engines."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from flowledger import FrozenClock, Ledger

Invoke = Callable[..., tuple[int, str, str]]  # the `cli` fixture (tests/cli/conftest.py)
OWNER = "agent:main:main"


def test_no_route_yet(cli: Invoke) -> None:
    code, out, err = cli("sessions", "route", OWNER, "--json")
    assert (code, json.loads(out), err) == (0, {"session_key": OWNER, "route": None}, "")
    code, out, err = cli("sessions", "route", OWNER)
    assert (code, out, err) == (0, "", f"No stored route for {OWNER}.\n")


def test_a_route_recorded_by_a_task_is_shown(cli: Invoke, database_url: str, state_dir: Path,
                                             clock: FrozenClock) -> None:
    with Ledger.open(state_dir=state_dir, database_url=database_url, clock=clock) as ledger:
        ledger.tasks.create(runtime="cli", task="Export", owner_key=OWNER,
                            requester_origin={"channel": "telegram", "to": "telegram:123", "thread_id": "321"})
    code, out, _ = cli("sessions", "route", OWNER, "--json")
    assert code == 0
    assert json.loads(out) == {"session_key": OWNER, "route": {"channel": "telegram", "to": "telegram:123",
                                                               "account_id": None, "thread_id": "321"}}
    code, out, _ = cli("sessions", "route", f"  {OWNER} ")
    assert (code, out.splitlines()) == (0, ["channel: telegram", "to: telegram:123", "accountId: n/a",
                                            "threadId: 321"])


def test_setting_a_route(cli: Invoke) -> None:
    code, out, _ = cli("sessions", "route", OWNER, "--channel", "discord", "--to", "channel:9", "--account", "bot-2")
    assert (code, out.splitlines()) == (0, [f"Updated {OWNER} route.", "channel: discord", "to: channel:9",
                                            "accountId: bot-2", "threadId: n/a"])
    code, out, _ = cli("sessions", "route", OWNER, "--channel", "telegram", "--to", "telegram:1", "--thread", "7",
                       "--json")
    assert json.loads(out)["route"] == {"channel": "telegram", "to": "telegram:1", "account_id": None,
                                        "thread_id": "7"}
    assert json.loads(cli("sessions", "route", OWNER, "--json")[1])["route"]["to"] == "telegram:1"


def test_bad_input_is_one_line_exit_2(cli: Invoke) -> None:
    assert cli("sessions", "route", OWNER, "--to", "telegram:1") == \
        (2, "", "Setting a route needs both --channel and --to.\n")
    assert cli("sessions", "route", OWNER, "--channel", "telegram", "--to", "  ") == \
        (2, "", "A route needs a target (to).\n")
    assert cli("sessions", "route", "  ") == (2, "", "Session key is required.\n")
    code, _, err = cli("sessions", "route")
    assert code == 2 and "Traceback" not in err
    assert cli("sessions", "route", OWNER, "--json") == (0, json.dumps({"session_key": OWNER, "route": None},
                                                                       indent=2) + "\n", "")
