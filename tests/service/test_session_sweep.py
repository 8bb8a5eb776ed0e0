"""Session-registry pruning (REFERENCE §11 scenario 49, retention 7 d) and ACP session repair, both engines."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import insert, select

from flowledger import FrozenClock, Ledger
from flowledger.tasks.core.tables import cron_jobs, sessions
from flowledger.tasks.runs import liveness

MS = timedelta(milliseconds=1)
DAY = timedelta(days=1)


def keys(ledger: Ledger) -> list[str]:
    with ledger.db.read() as conn:
        return [r[0] for r in conn.execute(select(sessions.c.session_key).order_by(sessions.c.session_key))]


def add(ledger: Ledger, key: str, age: timedelta, **fields: Any) -> None:
    with ledger.db.write() as conn:
        liveness.upsert_session(conn, key, ledger.clock.now() - age, **{"kind": "session", **fields})


def test_empty_registry_gives_zeros(ledger: Ledger) -> None:
    report = ledger.maintenance(apply=True)
    assert report.maintenance.sessions.to_json() == {"retention_ms": 604_800_000, "running_cron_jobs": 0,
                                                     "pruned": 0}
    assert keys(ledger) == []


def test_scenario_49_preview_then_apply(ledger: Ledger, clock: FrozenClock) -> None:
    add(ledger, "agent:main:cron:nightly:run:old-uuid", 8 * DAY, kind="cron")
    add(ledger, "agent:main:cron:nightly:run:new-uuid", DAY, kind="cron")
    add(ledger, "agent:main:cron:running-job:run:r-uuid", 8 * DAY, kind="cron")
    add(ledger, "agent:main:telegram:direct:42", 40 * DAY)
    add(ledger, "agent:main:cron:nightly", 40 * DAY)
    add(ledger, "agent:main:cron:kept:run:p-uuid", 40 * DAY, kind="cron", protected=True)
    with ledger.db.write() as conn:
        conn.execute(insert(cron_jobs).values(job_id="Running-Job", name="running", argv_json="[]", agent_id="main",
                                              created_at=clock.now(), running_at=clock.now()))
    before = keys(ledger)
    preview = ledger.maintenance(apply=False).maintenance.sessions
    assert (preview.pruned, preview.running_cron_jobs, preview.preserved_running) == (1, 1, 1)
    assert keys(ledger) == before
    applied = ledger.maintenance(apply=True).maintenance.sessions
    assert (applied.pruned, applied.running_cron_jobs) == (1, 1)
    assert keys(ledger) == [k for k in before if k != "agent:main:cron:nightly:run:old-uuid"]


def test_session_rows_older_than_seven_days_boundary(ledger: Ledger) -> None:
    add(ledger, "agent:main:cron:j:run:at-boundary", 7 * DAY, kind="cron")
    add(ledger, "agent:main:cron:j:run:past-boundary", 7 * DAY + MS, kind="cron")
    assert ledger.maintenance(apply=True).maintenance.sessions.pruned == 1
    assert keys(ledger) == ["agent:main:cron:j:run:at-boundary"]


def _acp(ledger: Ledger, key: str, **fields: Any) -> None:
    add(ledger, key, timedelta(0), kind="acp", acp={"backend": "acpx"}, spawned_by="agent:main:main", **fields)


def test_acp_session_repair(ledger: Ledger, clock: FrozenClock) -> None:
    _acp(ledger, "agent:main:acp:oneshot-done", mode="oneshot")
    _acp(ledger, "agent:main:acp:oneshot-busy", mode="oneshot")
    _acp(ledger, "agent:main:acp:persistent-bound", mode="persistent", bindings=[{"status": "active"}])
    _acp(ledger, "agent:main:acp:persistent-ended", mode="persistent", bindings=[{"status": "ended"}])
    _acp(ledger, "agent:main:acp:orphan", mode="oneshot")
    add(ledger, "agent:main:acp:not-parent-owned", timedelta(0), kind="acp", acp={"backend": "acpx"},
        mode="oneshot")
    add(ledger, "agent:main:subagent:plain", timedelta(0), spawned_by="agent:main:main", mode="oneshot")
    ledger.tasks.create(runtime="acp", task="done", owner_key="agent:main:main", status="succeeded",
                        child_session_key="agent:main:acp:oneshot-done")
    ledger.tasks.create(runtime="acp", task="busy", owner_key="agent:main:main", status="running",
                        child_session_key="agent:main:acp:oneshot-busy", started_at=clock.now())
    before = keys(ledger)
    preview = ledger.maintenance(apply=False).diagnostics["acp_sessions"]
    assert preview == {"terminal_task_cleanup": 1, "orphaned_parent_task_cleanup": 2}
    assert keys(ledger) == before
    ledger.maintenance(apply=True)
    assert keys(ledger) == ["agent:main:acp:not-parent-owned", "agent:main:acp:oneshot-busy",
                            "agent:main:acp:persistent-bound", "agent:main:subagent:plain"]
