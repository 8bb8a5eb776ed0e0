"""SIGKILL real writer (and sweeper) processes at random points; after each storm the ledger must still tell the
truth: integrity_check ok, every history a legal path, no terminal status downgraded, no record vanished that was
not due for pruning, and nothing left running past the lost grace once maintenance runs.

Smoke mode in CI (a few dozen kills per engine); FLOWLEDGER_STRESS=1 for a few hundred."""

from __future__ import annotations

import collections
import contextlib
import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import harness
import pytest
from conftest import STRESS
from pytest_httpserver import HTTPServer
from sqlalchemy import select
from werkzeug import Request, Response

from flowledger import FrozenClock, Ledger
from flowledger.tasks.core.clock import SystemClock
from flowledger.tasks.core.states import ACTIVE, DeliveryStatus, TaskStatus
from flowledger.tasks.core.tables import task_runs
from flowledger.tasks.delivery.dispatch import CLAIM_TTL, delivery_hooks

HARNESS = Path(harness.__file__)
KILLS = 300 if STRESS else 20
PRUNE_SEED = 2000 if STRESS else 250
LOST_GRACE = timedelta(minutes=5)


@dataclass
class Zygote:
    proc: subprocess.Popen[str]
    events_dir: Path

    def storm(self, kills: int, modes: str, *, seed: int, max_delay_ms: float = 150.0,
              min_delay_ms: float = 0.0) -> dict[str, int]:
        """`kills` rounds of fork → work for a random moment → SIGKILL. Returns how the children ended."""
        rng = random.Random(seed)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        tally = {"killed": 0, "exited": 0}
        for n in range(kills):
            self.proc.stdin.write(f"{seed * 1000 + n} {rng.uniform(min_delay_ms, max_delay_ms):.1f} {modes}\n")
            self.proc.stdin.flush()
            answer = json.loads(self.proc.stdout.readline())
            assert answer["ready"], answer
            for child in answer["children"]:
                if child["killed"]:
                    tally["killed"] += 1
                else:  # a writer only stops on its own when an operation failed; 5 = no maintenance yet
                    assert child["exit"] == 5, (f"a {modes} child died on its own (exit {child['exit']}):\n"
                                                f"{child.get('stderr', '(no stderr)')}")
                    tally["exited"] += 1
        return tally


@pytest.fixture
def zygote(database_url: str, state_dir: Path, tmp_path: Path) -> Iterator[Zygote]:
    yield from spawn_zygote(database_url, state_dir, tmp_path)


def spawn_zygote(database_url: str, state_dir: Path, tmp_path: Path) -> Iterator[Zygote]:
    events_dir = tmp_path / "events"
    events_dir.mkdir()
    proc = subprocess.Popen(
        [sys.executable, str(HARNESS), "zygote", "--url", database_url, "--state-dir", str(state_dir),
         "--events-dir", str(events_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
    try:
        yield Zygote(proc, events_dir)
    finally:
        _, errs = proc.communicate(timeout=60)  # closing stdin ends the zygote's loop
        assert "Traceback" not in errs, errs


def test_a_child_that_stops_on_its_own_reports_its_traceback(zygote: Zygote) -> None:
    """A crash child that exits with an unexpected error (exit 4) brings its stderr along, traceback included:
    a failure of a long storm can then be explained after the fact."""
    with pytest.raises(AssertionError) as failed:
        zygote.storm(1, "raise", seed=3, min_delay_ms=3000.0, max_delay_ms=3000.0)  # time to fail on a loaded machine
    message = str(failed.value)
    assert "died on its own (exit 4)" in message
    assert "Traceback (most recent call last)" in message
    assert "RuntimeError: an unexpected error in a crash child" in message


def snapshot(ledger: Ledger) -> dict[str, tuple[str, object]]:
    with ledger.db.read() as conn:
        rows = conn.execute(select(task_runs.c.task_id, task_runs.c.status, task_runs.c.cleanup_after))
        return {r.task_id: (r.status, r.cleanup_after) for r in rows}


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        sys.stderr.write(f"\n[crash] {line}\n")


def test_killed_writers_leave_a_truthful_ledger(
    database_url: str, state_dir: Path, zygote: Zygote, capsys: pytest.CaptureFixture[str]
) -> None:
    tally = zygote.storm(KILLS, "write", seed=7)
    reported = harness.read_reported(zygote.events_dir)
    with Ledger.open(state_dir=state_dir, database_url=database_url) as ledger:
        assert harness.integrity_ok(ledger) == "ok"
        verdict = harness.verify(ledger, reported)
        stored = snapshot(ledger)
    assert verdict.ok, verdict.violations[:20]
    # Nothing a caller was told was committed has vanished (no sweeper ran, so nothing was due for pruning).
    vanished = {e["task"] for e in reported} - set(stored)
    assert vanished == set()
    assert verdict.tasks > 0
    engine = "sqlite" if database_url.startswith("sqlite") else "postgres"
    report(capsys, f"{engine}: writers killed={tally['killed']} tasks={verdict.tasks} events={verdict.events} "
                   f"committed-and-reported={len(reported)} violations={len(verdict.violations)}")


def test_killed_batch_writers_leave_whole_batches_and_a_truthful_ledger(
    database_url: str, state_dir: Path, zygote: Zygote, capsys: pytest.CaptureFixture[str]
) -> None:
    """Batch writers (a flow controller's create/start/complete of many tasks in one transaction each) killed at
    random beside single-task writers on the same run ids: every history stays legal, and every batch committed
    whole or not at all (a batch round's fresh group is always all there, all in one status)."""
    tally = zygote.storm(KILLS, "batch+write", seed=23)
    reported = harness.read_reported(zygote.events_dir)
    with Ledger.open(state_dir=state_dir, database_url=database_url) as ledger:
        assert harness.integrity_ok(ledger) == "ok"
        verdict = harness.verify(ledger, reported)
        stored = snapshot(ledger)
        with ledger.db.read() as conn:
            rows = conn.execute(select(task_runs.c.run_id, task_runs.c.status)).all()
    assert verdict.ok, verdict.violations[:20]
    assert {e["task"] for e in reported} - set(stored) == set()
    groups: dict[str, list[str]] = collections.defaultdict(list)
    for run_id, status in rows:
        group = harness.batch_group(run_id or "")
        if group is not None:
            groups[group].append(status)
    assert groups, "the storm should have committed some batches"
    torn = {g: s for g, s in groups.items() if len(s) != harness.BATCH_GROUP or len(set(s)) != 1}
    assert torn == {}
    engine = "sqlite" if database_url.startswith("sqlite") else "postgres"
    report(capsys, f"{engine}: batch+single writers killed={tally['killed']} batch rounds={len(groups)} "
                   f"tasks={verdict.tasks} events={verdict.events} violations={len(verdict.violations)}")


def test_after_kills_nothing_stays_running_past_the_lost_grace(
    database_url: str, state_dir: Path, zygote: Zygote
) -> None:
    zygote.storm(KILLS // 2, "write", seed=11)
    clock = FrozenClock(SystemClock().now())
    with Ledger.open(state_dir=state_dir, database_url=database_url, clock=clock) as ledger:
        active = [t for t in ledger.tasks.list() if t.status in ACTIVE]
        assert active, "the storm should leave interrupted work behind"
        newest = max(active, key=lambda t: t.last_activity_at)
        clock.set(newest.last_activity_at + LOST_GRACE - timedelta(milliseconds=1))
        ledger.maintenance(apply=True)
        assert ledger.tasks.get(newest.task_id).status == newest.status  # 1 ms short of the grace: still live
        clock.advance(timedelta(milliseconds=1))
        ledger.maintenance(apply=True)
        after = snapshot(ledger)
        assert {t for t, (s, _) in after.items() if TaskStatus(s) in ACTIVE} == set()
        assert {after[t.task_id][0] for t in active} == {TaskStatus.LOST}
        verdict = harness.verify(ledger, harness.read_reported(zygote.events_dir))
    assert verdict.ok, verdict.violations[:20]


def test_killed_sweeps_racing_writers_never_downgrade_or_lose_records(
    database_url: str, state_dir: Path, zygote: Zygote, capsys: pytest.CaptureFixture[str]
) -> None:
    zygote.storm(KILLS // 3, "write", seed=13)
    # A sweeper 6 minutes ahead marks interrupted work lost while a live writer races it on the same rows.
    mixed = zygote.storm(KILLS // 3, f"write+sweep:{6 * 60}", seed=17)
    with Ledger.open(state_dir=state_dir, database_url=database_url) as ledger:
        # Enough finished records that a prune pass spans several write batches (maintenance.WRITE_BATCH).
        ledger.tasks.create_many([{"runtime": "cli", "task": f"old {n}", "owner_key": harness.OWNER,
                                   "run_id": f"old-{n}", "status": "succeeded"} for n in range(PRUNE_SEED)])
        before = snapshot(ledger)
    # A sweeper 8 days ahead prunes in batches and is killed part-way through; the last round runs to the end.
    pruned = zygote.storm(KILLS // 3, f"sweep:{8 * 86400}", seed=19, max_delay_ms=400.0)
    reported = harness.read_reported(zygote.events_dir)
    with Ledger.open(state_dir=state_dir, database_url=database_url) as ledger:
        assert harness.integrity_ok(ledger) == "ok"
        verdict = harness.verify(ledger, reported)  # also: no orphaned events from a half-done prune
        after_kills = snapshot(ledger)
    assert verdict.ok, verdict.violations[:20]
    vanished = set(before) - set(after_kills)
    # Only terminal records were due: the +8 d sweeper sees every ended task past its 7 d retention.
    assert {t for t in vanished if TaskStatus(before[t][0]) in ACTIVE} == set()
    # A sweep that is allowed to finish after all those interruptions completes the job: nothing was wedged.
    future = FrozenClock(SystemClock().now() + timedelta(days=8))
    with Ledger.open(state_dir=state_dir, database_url=database_url, clock=future) as ledger:
        ledger.maintenance(apply=True)
        final = snapshot(ledger)
        assert harness.verify(ledger).ok
    assert {t for t, (st, _) in before.items() if TaskStatus(st) not in ACTIVE} & set(final) == set()
    engine = "sqlite" if database_url.startswith("sqlite") else "postgres"
    report(capsys, f"{engine}: mixed kills={mixed['killed']} prune kills={pruned['killed']} "
                   f"pruned-before-kills={len(vanished)} of {len(before)} violations={len(verdict.violations)}")


def test_killed_mid_delivery_every_notice_settles_with_one_idempotency_key(
    database_url: str, state_dir: Path, tmp_path: Path, httpserver: HTTPServer, capsys: pytest.CaptureFixture[str]
) -> None:
    received: dict[str, list[str]] = collections.defaultdict(list)

    def slow_ok(request: Request) -> Response:
        body = json.loads(request.get_data())
        received[body["task_id"]].append(request.headers["Idempotency-Key"])
        time.sleep(0.05)  # the far end is slow, so a kill often lands while the send is in flight
        return Response("ok", status=200)

    httpserver.expect_request("/hook").respond_with_handler(slow_ok)
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "config.toml").write_text(f'[channels.webhook]\nurl = "{httpserver.url_for("/hook")}"\n')
    spawned = spawn_zygote(database_url, state_dir, tmp_path)
    zyg = next(spawned)
    try:
        tally = zyg.storm(max(6, KILLS // 3), "deliver", seed=29, max_delay_ms=300.0)
    finally:
        with contextlib.suppress(StopIteration):
            next(spawned)
    # Past the claim TTL, the catch-up pass (the gateway's sweep runs it) settles what the kills interrupted.
    later = FrozenClock(SystemClock().now() + CLAIM_TTL + timedelta(seconds=1))
    with Ledger.open(state_dir=state_dir, database_url=database_url, clock=later) as ledger:
        hooks = delivery_hooks(ledger.tasks)
        assert hooks is not None
        while hooks.deliver_pending():
            pass
        tasks = [t for t in ledger.tasks.list() if t.run_id and t.run_id.startswith("dl-")]
        verdict = harness.verify(ledger)
    assert verdict.ok, verdict.violations[:20]
    finished = [t for t in tasks if t.status == TaskStatus.SUCCEEDED]
    assert finished
    assert {t.delivery_status for t in finished} == {DeliveryStatus.DELIVERED}  # nothing stuck pending
    assert all(received[t.task_id] for t in finished)  # at least once…
    assert all(len(set(received[t.task_id])) == 1 for t in finished)  # …with one key the far end can dedupe on
    repeats = sum(len(received[t.task_id]) - 1 for t in finished)
    engine = "sqlite" if database_url.startswith("sqlite") else "postgres"
    report(capsys, f"{engine}: delivery kills={tally['killed']} delivered={len(finished)} "
                   f"resent-after-kill={repeats} violations={len(verdict.violations)}")
