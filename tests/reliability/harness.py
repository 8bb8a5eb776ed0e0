"""Reliability harness: real worker processes hammering one ledger, and the invariants checked afterwards.

Two ways to run workers:
  * `python harness.py worker …` — one process per worker, started together (a stdin "go" line is the barrier),
    doing a fixed number of random operations; the concurrency test.
  * `python harness.py zygote …` — one process that has paid the import cost once and forks a fresh writer per
    command, SIGKILLs it after a random delay and reaps it; the crash test. The zygote does the killing itself so a
    pid is never reused under us (an unreaped child cannot be recycled).

Every worker records what its own callers were told was committed (an `after_commit` TaskHooks member — the
service's own extension point, not a mock) in a JSON-lines file. `verify()` then checks, from the database alone:
every task's `task_events` history is a legal path through `states.should_apply`, each event's `previous_status`
is the status the chain was really in (a lost update breaks the chain), the stored status equals the last status
event, no event is orphaned, and every committed change a caller saw is in the log.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, text

from flowledger import Ledger
from flowledger.tasks.core.clock import SystemClock, truncate_ms
from flowledger.tasks.core.errors import FlowledgerError, OperationRefused, StorageUnavailable, TaskNotFound
from flowledger.tasks.core.hooks import Change, TaskHooks
from flowledger.tasks.core.states import ACTIVE, TaskStatus, should_apply
from flowledger.tasks.core.tables import task_events, task_runs

OWNER = "agent:main:main"
STDERR_KEPT = 8000  # the tail of a crash child's stderr the zygote reports when the child stops on its own
STATUS_KINDS = {s.value for s in TaskStatus}
FAIL_STATUSES = ("failed", "timed_out", "cancelled")
POLICIES = ("done_only", "state_changes", "silent")
# Operation mix: weights chosen so every path is hit often and the pool sees create/transition collisions.
OPS = (("create", 22), ("start", 14), ("progress", 14), ("complete", 12), ("fail", 10), ("cancel", 10),
       ("notify", 10), ("show", 5), ("sweep", 3))


class OffsetClock:
    """The real clock shifted by a fixed offset: a sweeper "in the future" races live writers."""

    def __init__(self, offset: timedelta) -> None:
        self.offset = offset
        self._base = SystemClock()

    def now(self) -> datetime:
        return truncate_ms(self._base.now() + self.offset)


class Recorder(TaskHooks):
    """Writes every committed status/progress event this process's callers were told about."""

    def __init__(self, path: Path) -> None:
        self.handle = path.open("a", encoding="utf-8")

    def after_commit(self, changes: Sequence[Change]) -> None:
        lines = [json.dumps({"task": c.task.task_id, "kind": c.event.kind, "prev": c.event.previous_status})
                 for c in changes if c.event is not None]
        if lines:
            self.handle.write("\n".join(lines) + "\n")
            self.handle.flush()


@dataclass
class WorkerStats:
    ops: int = 0
    by_op: dict[str, int] = field(default_factory=lambda: collections.defaultdict(int))
    misses: int = 0
    refusals: int = 0
    errors: list[str] = field(default_factory=list)
    sweeps_unavailable: bool = False


def _one_op(ledger: Ledger, rng: random.Random, pool: int, stats: WorkerStats, sweep: bool) -> None:
    names, weights = zip(*OPS, strict=True)
    op = rng.choices(names, weights)[0]
    if op == "sweep" and (not sweep or stats.sweeps_unavailable):
        op = "show"
    # A window of `pool` run ids sliding forward with progress: workers moving at similar speeds fight over
    # the same few records (creates collide, transitions race) instead of spreading out over finished ones.
    run_id = f"run-{stats.ops // 8 + rng.randrange(pool)}"
    stats.by_op[op] += 1
    try:
        if op == "create":
            ledger.tasks.create(runtime="cli", task=f"job {run_id} #{rng.randrange(2)}", owner_key=OWNER, run_id=run_id,
                                status=rng.choice(("queued", "running")))
        elif op == "start":
            ledger.tasks.start(run_id)
        elif op == "progress":
            ledger.tasks.progress(run_id, f"step {rng.randrange(1000)}")
        elif op == "complete":
            ledger.tasks.complete(run_id, summary=f"done {rng.randrange(1000)}")
        elif op == "fail":
            ledger.tasks.fail(run_id, error="boom", status=rng.choice(FAIL_STATUSES))
        elif op == "cancel":
            result = ledger.tasks.cancel(run_id, reason="harness cancel")
            if not result.found:
                stats.misses += 1
        elif op == "notify":
            ledger.tasks.set_notify_policy(run_id, rng.choice(POLICIES))
        elif op == "show":
            ledger.tasks.get(run_id)
        elif op == "sweep":
            try:
                ledger.maintenance(apply=True)
            except NotImplementedError:
                stats.sweeps_unavailable = True
    except TaskNotFound:
        stats.misses += 1
    except OperationRefused:
        stats.refusals += 1
    except StorageUnavailable as exc:  # the one thing that must never reach a caller under load
        stats.errors.append(f"{op}: {exc.message}")
    except FlowledgerError as exc:
        stats.errors.append(f"{op}: {type(exc).__name__}: {exc.message}")
    except Exception as exc:
        stats.errors.append(f"{op}: {type(exc).__name__}: {exc}")
    stats.ops += 1


BATCH_GROUP = 4  # fresh run ids each batch round creates, starts and completes together (and no one else touches)


def batch_group(run_id: str) -> str | None:
    """The batch round a `grp-…` run id belongs to, or None."""
    return run_id.rsplit("-", 1)[0] if run_id.startswith("grp-") else None


def _batch_round(ledger: Ledger, rng: random.Random, pool: int, stats: WorkerStats) -> None:
    """One round of the batch writer (tasks/core/batch_transitions.py): a group of fresh tasks plus a few run ids of
    the writers' sliding window, created in one transaction, started in a second and completed in a third. The
    window ids collide with the single-task writers, so the batches meet compare-and-set refusals and terminal
    tasks; the group shows whether each batch committed whole."""
    from flowledger.tasks.core.batch_transitions import complete_many, create_many_in_one, start_many

    window = sorted({f"run-{stats.ops // 8 + rng.randrange(pool)}" for _ in range(3)})
    group = [f"grp-{os.getpid()}-{stats.ops}-{i}" for i in range(BATCH_GROUP)]
    drafts = [ledger.tasks.draft(runtime="cli", task=f"job {run_id} #{rng.randrange(2)}", owner_key=OWNER,
                                 run_id=run_id) for run_id in [*group, *window]]
    stats.by_op["batch"] += 1
    try:
        create_many_in_one(ledger.tasks, drafts)
        start_many(ledger.tasks, [*group, *window])
        complete_many(ledger.tasks, [*group, *window[:1]], summary=f"done {rng.randrange(1000)}")
    except OperationRefused:  # a create merged over a task another writer changed meanwhile
        stats.refusals += 1
    except FlowledgerError as exc:
        stats.errors.append(f"batch: {type(exc).__name__}: {exc.message}")
    except Exception as exc:
        stats.errors.append(f"batch: {type(exc).__name__}: {exc}")
    stats.ops += 1


def open_ledger(url: str, state_dir: Path, events_path: Path, clock_offset_s: float = 0.0) -> Ledger:
    clock = OffsetClock(timedelta(seconds=clock_offset_s))
    ledger = Ledger.open(state_dir=state_dir, database_url=url, clock=clock)
    ledger.tasks.hooks.members.append(Recorder(events_path))
    return ledger


def run_worker(args: argparse.Namespace) -> int:
    """Concurrency worker: open, say ready, wait for go, do `ops` operations, print stats as JSON."""
    rng = random.Random(args.seed)
    stats = WorkerStats()
    with open_ledger(args.url, Path(args.state_dir), Path(args.events)) as ledger:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        sys.stdin.readline()
        started = time.perf_counter()
        for _ in range(args.ops):
            _one_op(ledger, rng, args.pool, stats, args.sweep)
        elapsed = time.perf_counter() - started
    sys.stdout.write(json.dumps({"ops": stats.ops, "by_op": dict(stats.by_op), "misses": stats.misses,
                                 "refusals": stats.refusals, "errors": stats.errors, "elapsed": elapsed}) + "\n")
    return 0


# --- crash mode -------------------------------------------------------------------------------------------


def _writer_child(args: argparse.Namespace, seed: int, ready_fd: int, mode: str) -> None:
    """Runs in a forked child until SIGKILLed: a tight loop of operations, or of sweeps ("sweep:<offset s>")."""
    rng = random.Random(seed)
    events = Path(args.events_dir) / f"events-{os.getpid()}.jsonl"
    sweeping = mode.startswith("sweep")
    offset = float(mode.split(":", 1)[1]) if sweeping and ":" in mode else 0.0
    ledger = open_ledger(args.url, Path(args.state_dir), events, offset)
    stats = WorkerStats(ops=rng.randrange(10_000) * 8)  # a fresh window of run ids per child
    # One operation before "ready", so the kill window is spent working, not warming up (and a loaded machine
    # still gets every child past its first commit).
    if mode in ("write", "batch"):
        ledger.tasks.create(runtime="cli", task=f"job run-{stats.ops}", owner_key=OWNER, run_id=f"run-{stats.ops}")
    elif mode == "deliver":
        _deliver_one(ledger, f"dl-{os.getpid()}-warm")
    os.write(ready_fd, b"r")
    os.close(ready_fd)
    while True:
        if mode == "deliver":
            _deliver_one(ledger, f"dl-{os.getpid()}-{stats.ops}")
            stats.ops += 1
        elif mode == "raise":  # a deliberate unexpected error: the harness's own test of what a failure keeps
            raise RuntimeError("an unexpected error in a crash child")
        elif sweeping:
            try:
                ledger.maintenance(apply=True)
            except NotImplementedError:
                os._exit(5)
            except FlowledgerError as exc:
                sys.stderr.write(f"sweep: {exc.message}\n")
                os._exit(3)
        else:
            if mode == "batch":
                _batch_round(ledger, rng, args.pool, stats)
            else:
                _one_op(ledger, rng, args.pool, stats, sweep=False)
            if stats.errors:
                sys.stderr.write(stats.errors[-1] + "\n")
                os._exit(3)


def _deliver_one(ledger: Ledger, run_id: str) -> None:
    """Finish work whose owner wants a direct notice: the send runs after commit, in this process."""
    ledger.tasks.create(runtime="cli", task=f"deliver {run_id}", owner_key=OWNER, run_id=run_id, status="running",
                        requester_origin={"channel": "webhook", "to": "hook"})
    ledger.tasks.complete(run_id, summary="done")


def _child_stderr(args: argparse.Namespace, pid: int) -> Path:
    return Path(args.events_dir) / f"child-{pid}.err"


def _stderr_to(path: Path) -> None:
    """Point this (forked) process's stderr at a file of its own, so the zygote can report it if it exits."""
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 2)
    os.close(fd)


def run_zygote(args: argparse.Namespace) -> int:
    """Reads `<seed> <delay_ms> <mode>[+<mode>…]` lines; forks one child per mode, lets them work for the delay,
    SIGKILLs and reaps them. Answers one JSON line per command with each child's fate; a child that stopped on its
    own also brings the tail of its stderr (each child writes its own file), its traceback included."""
    with Ledger.open(state_dir=Path(args.state_dir), database_url=args.url) as ledger:  # schema before forks
        ledger.tasks.get("warm-up")  # pay one-off import/compile costs once, not in every child
        ledger.tasks.list(limit=1)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        seed, delay_ms, modes = int(parts[0]), float(parts[1]), parts[2].split("+")
        children: list[tuple[int, int]] = []
        for index, mode in enumerate(modes):
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:  # child: never returns into the zygote's loop
                os.close(read_fd)
                _stderr_to(_child_stderr(args, os.getpid()))
                try:
                    _writer_child(args, seed * 31 + index, write_fd, mode)
                except BaseException:  # kept in the child's stderr file: exit 4 alone says nothing about why
                    traceback.print_exc()
                finally:
                    sys.stderr.flush()
                    os._exit(4)
            os.close(write_fd)
            children.append((pid, read_fd))
        ready = [os.read(fd, 1) == b"r" for _, fd in children]
        for _, fd in children:
            os.close(fd)
        time.sleep(delay_ms / 1000)  # the random kill point: how far into its work each child gets
        fates = []
        for pid, _ in children:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == 0:
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
            fate: dict[str, Any] = {"pid": pid, "killed": done == 0, "exit": os.waitstatus_to_exitcode(status)}
            errors = _child_stderr(args, pid)
            if not fate["killed"] and errors.exists():  # it stopped on its own: say why (its message, traceback)
                fate["stderr"] = errors.read_text(encoding="utf-8", errors="replace")[-STDERR_KEPT:]
            errors.unlink(missing_ok=True)
            fates.append(fate)
        sys.stdout.write(json.dumps({"ready": all(ready), "children": fates}) + "\n")
        sys.stdout.flush()
    return 0


# --- verification -----------------------------------------------------------------------------------------


@dataclass
class Verdict:
    tasks: int = 0
    events: int = 0
    terminal: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def histories(ledger: Ledger) -> tuple[dict[str, str], dict[str, list[tuple[str, str | None]]]]:
    """(task_id → stored status, task_id → [(kind, previous_status)] in commit order), read in one snapshot."""
    with ledger.db.read() as conn:
        stored = {r.task_id: r.status for r in conn.execute(select(task_runs.c.task_id, task_runs.c.status))}
        log: dict[str, list[tuple[str, str | None]]] = collections.defaultdict(list)
        rows = conn.execute(select(task_events.c.task_id, task_events.c.kind, task_events.c.previous_status)
                            .order_by(task_events.c.id))
        for r in rows:
            log[r.task_id].append((r.kind, r.previous_status))
    return stored, log


def verify(ledger: Ledger, reported: Sequence[dict[str, Any]] = ()) -> Verdict:
    stored, log = histories(ledger)
    verdict = Verdict(tasks=len(stored), events=sum(len(v) for v in log.values()))
    for task_id in sorted(set(log) - set(stored)):
        verdict.violations.append(f"{task_id}: {len(log[task_id])} orphaned events (task row gone)")
    for task_id, status in stored.items():
        chain = log.get(task_id, [])
        if not chain:
            verdict.violations.append(f"{task_id}: no history at all")
            continue
        first_kind, first_prev = chain[0]
        if first_kind not in STATUS_KINDS or first_prev is not None:
            verdict.violations.append(f"{task_id}: history starts with {first_kind}/{first_prev}, not a creation")
            continue
        current = first_kind
        for kind, prev in chain[1:]:
            if kind not in STATUS_KINDS:
                continue  # progress reports do not move the status
            if prev != current:
                verdict.violations.append(f"{task_id}: event {kind} claims previous {prev}, chain was {current} "
                                          "(lost update)")
            if not should_apply(TaskStatus(current), TaskStatus(kind)):
                verdict.violations.append(f"{task_id}: illegal transition {current} -> {kind}")
            current = kind
        if status != current:
            verdict.violations.append(f"{task_id}: stored status {status} but last status event {current}")
        if TaskStatus(status) not in ACTIVE:
            verdict.terminal += 1
    with ledger.db.read() as conn:
        scopes = collections.Counter(
            (r.run_id, r.task, r.owner_key) for r in conn.execute(select(task_runs.c.run_id, task_runs.c.task,
                                                                         task_runs.c.owner_key))
            if r.run_id is not None
        )
    for scope, count in scopes.items():
        if count > 1:
            verdict.violations.append(f"run scope {scope}: {count} records for one create (dedupe race)")
    seen = collections.Counter((e["task"], e["kind"], e["prev"]) for e in reported)
    logged = collections.Counter((t, k, p) for t, chain in log.items() for k, p in chain)
    for key, count in (seen - logged).items():
        if key[0] in stored:  # a pruned task takes its history with it
            verdict.violations.append(f"{key[0]}: {count}× committed {key[1]} (from {key[2]}) missing from the log")
    return verdict


def read_reported(directory: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(directory.glob("events-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):  # a SIGKILL may cut the last line short
                out.append(json.loads(line))
    return out


def integrity_ok(ledger: Ledger) -> str:
    if not ledger.db.is_sqlite:
        return "ok"
    with ledger.db.read() as conn:
        return str(conn.execute(text("PRAGMA integrity_check")).scalar())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="harness")
    sub = parser.add_subparsers(dest="mode", required=True)
    worker = sub.add_parser("worker")
    zygote = sub.add_parser("zygote")
    for p in (worker, zygote):
        p.add_argument("--url", required=True)
        p.add_argument("--state-dir", required=True)
        p.add_argument("--pool", type=int, default=4)
    worker.add_argument("--events", required=True)
    worker.add_argument("--seed", type=int, default=0)
    worker.add_argument("--ops", type=int, default=100)
    worker.add_argument("--sweep", action="store_true")
    zygote.add_argument("--events-dir", required=True)
    args = parser.parse_args(argv)
    return run_worker(args) if args.mode == "worker" else run_zygote(args)


if __name__ == "__main__":
    sys.exit(main())
