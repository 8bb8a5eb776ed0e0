"""tasks.listing on both engines: pages and counts over the reconciled view, both page plans agree."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flowledger import FrozenClock, Ledger
from flowledger.flows.listing import Paging, task_page
from flowledger.tasks.health import listing

OWNER = "agent:main:main"


@pytest.mark.parametrize("sort_at_most", [0, 20_000])  # walk the created index / sort the candidates
def test_status_pages_and_counts_follow_the_projection(ledger: Ledger, clock: FrozenClock,
                                                       monkeypatch: pytest.MonkeyPatch, sort_at_most: int) -> None:
    monkeypatch.setattr(listing, "SORT_AT_MOST", sort_at_most)
    gone = ledger.tasks.create(runtime="cli", task="gone", owner_key=OWNER, run_id="r-gone", status="running",
                               started_at=clock.now())
    for i in range(5):
        ledger.tasks.create(runtime="cli", task=f"done {i}", owner_key=OWNER, status="succeeded")
    clock.advance(timedelta(minutes=10))  # `gone` has no backing and is past its grace: projected lost
    fresh = ledger.tasks.create(runtime="acp", task="fresh", owner_key=OWNER, status="queued")
    page = task_page(ledger, status="lost", paging=Paging(limit=10))
    assert ([t.task_id for t in page.tasks], page.total, page.pressure) == ([gone.task_id], 1, (0, 0, 1))
    page = task_page(ledger, status="succeeded", paging=Paging(limit=2, offset=1))
    assert ([t.task for t in page.tasks], page.total) == (["done 3", "done 2"], 5)
    page = task_page(ledger, paging=Paging(limit=1))
    assert ([t.task_id for t in page.tasks], page.total, page.pressure) == ([fresh.task_id], 7, (1, 0, 1))
    assert task_page(ledger, status="running").total == 0
