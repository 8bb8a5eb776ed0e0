"""Unique-prefix lookups of task and flow ids (CONTRACT §7), on both engines."""

from __future__ import annotations

import pytest

from flowledger import Ledger
from flowledger.tasks.core.errors import AmbiguousLookup, TaskNotFound

OWNER = "agent:main:main"


def _tasks(ledger: Ledger, *ids: str) -> None:
    for task_id in ids:
        ledger.tasks.create(runtime="cli", task=task_id, owner_key=OWNER, task_id=task_id)


def test_task_prefix_unique_ambiguous_too_short(ledger: Ledger) -> None:
    _tasks(ledger, "01a23b43-aaaa-7000", "01a23b43-aaab-7000", "01a23b43-bbbb-7000", "01a23c00-0000-7000")
    assert ledger.tasks.require("01a23b43-b").task_id == "01a23b43-bbbb-7000"
    assert ledger.tasks.require("01a23c").task_id == "01a23c00-0000-7000"  # exactly 6 characters
    assert ledger.tasks.get("01a23") is None  # 5 characters: never a prefix
    assert ledger.tasks.get("01a23b44") is None  # no id starts so
    with pytest.raises(AmbiguousLookup) as caught:
        ledger.tasks.get("01a23b43-aaa")
    assert caught.value.message == "Ambiguous id prefix '01a23b43-aaa': matches 2 tasks."
    assert caught.value.details == ["  01a23b43-aaaa-7000", "  01a23b43-aaab-7000"]
    assert caught.value.exit_code == 1
    with pytest.raises(AmbiguousLookup, match="matches 3 tasks"):
        ledger.tasks.get("01a23b")


def test_prefix_is_case_sensitive_and_literal(ledger: Ledger) -> None:
    _tasks(ledger, "abcdef_1", "abcdefx1", "ABCDEF-9")
    assert ledger.tasks.require("abcdef_").task_id == "abcdef_1"  # `_` is not a wildcard
    assert ledger.tasks.require("ABCDEF").task_id == "ABCDEF-9"
    with pytest.raises(TaskNotFound):
        ledger.tasks.require("abcdef%")


def test_exact_matches_win_over_a_prefix(ledger: Ledger) -> None:
    _tasks(ledger, "feedface-1", "feedface-2")
    ledger.tasks.create(runtime="cli", task="by run", owner_key=OWNER, run_id="feedface", task_id="other-1")
    assert ledger.tasks.require("feedface").task_id == "other-1"  # the run id, not an ambiguous prefix
    ledger.tasks.create(runtime="cli", task="by session", owner_key="feedfa", task_id="other-2")
    assert ledger.tasks.require("feedfa").task_id == "other-2"  # the owner key


def test_many_matches_list_ten_candidates(ledger: Ledger) -> None:
    _tasks(ledger, *(f"cafe0000-{n:02d}" for n in range(12)))
    with pytest.raises(AmbiguousLookup) as caught:
        ledger.tasks.get("cafe0000")
    assert caught.value.matches == 12
    assert caught.value.details[:10] == [f"  cafe0000-{n:02d}" for n in range(10)]
    assert caught.value.details[10:] == ["  … and 2 more"]


def test_flow_prefix_unique_ambiguous_and_owner_wins(ledger: Ledger) -> None:
    for flow_id in ("0badf00d-1", "0badf00d-2", "0badcafe-1"):
        ledger.flows.create_managed(OWNER, "ctl", f"goal {flow_id}", flow_id=flow_id)
    assert ledger.flows.get("0badc") is None
    assert ledger.flows.require("0badca").flow_id == "0badcafe-1"
    with pytest.raises(AmbiguousLookup, match=r"^Ambiguous id prefix '0badf00d': matches 2 flows\.$"):
        ledger.flows.get("0badf00d")
    ledger.flows.create_managed("0badf00d", "ctl", "owned", flow_id="owned-1")
    assert ledger.flows.require("0badf00d").flow_id == "owned-1"  # the owner key wins
