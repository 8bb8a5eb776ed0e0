"""Does a task still have runtime backing? (REFERENCE §6.3 with CONTRACT §4 and §6.7.)

Every answer comes from durable rows — gateway leases, the run contexts they own, the session registry and
cron job state — so the offline CLI and every gateway judge alike. A process without authority for a
runtime (cron, acp) never reads "nothing known" as "gone": it answers backed.

`BackingView.load` prefetches what one batch of tasks needs (live run ids, the batch's session rows, running
cron jobs), so judging a batch costs a handful of queries, not one per task.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from flowledger.tasks.core import generation_kinds as generation
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.sessionkeys import ChatType, chat_type
from flowledger.tasks.core.states import ACTIVE, Runtime, TaskStatus

if TYPE_CHECKING:
    from sqlalchemy import Connection

# The loaders below import SQLAlchemy and the tables when called: the rules (`judge`, `should_mark_lost`) are
# shared with the lean read path (tasks/health/sqlite_reads.py), which must not pay for the storage layer's imports.

LOST_GRACE = timedelta(minutes=5)
CODEX_NATIVE_GRACE = timedelta(minutes=30)
GRACES = (LOST_GRACE, CODEX_NATIVE_GRACE)  # every grace `grace_for` gives (a count by class buckets by each)

# What the rules below — `should_mark_lost` (with `grace_for` and `judge`) and cron_recovery.parse_run, which
# answers None for every runtime but cron — read of a task that is not cron, besides the view. Rows that agree on
# all of these (and on the view's answers about their ids) get the same projected status, so a count of projected
# statuses may judge one task of each such class and weigh it by the class's size (tasks/health/sqlite_reads.py
# `count_by_status`). tests/store/test_verdict_classes.py records what the rules read and keeps this list exact:
# a rule that starts reading another field must be named here, and the class key grows with it.
JUDGED_FIELDS = frozenset({"status", "runtime", "task_kind", "scope_kind", "requester_session_key",
                           "child_session_key", "run_id", "source_id", "task_id", "last_activity_at"})

LOST_REASON = "backing session missing"
CODEX_NATIVE_REASON = "Codex native subagent stopped reporting progress"

_IN_CHUNK = 500  # bind-parameter lists stay well inside every engine's limit


@dataclass(frozen=True, slots=True)
class SessionState:
    session_key: str
    tombstone: str | None
    acp: bool
    gateway_id: str | None
    ended: bool = False


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a task is backed, the diagnostics reason (REFERENCE §6.7), and the lost error text."""

    backed: bool
    reason: str
    lost_error: str = LOST_REASON


@dataclass
class BackingView:
    """Everything `judge` reads, fetched once per batch."""

    now: datetime
    authoritative: bool
    live_runs: set[str] = field(default_factory=set)
    fresh_gateways: set[str] = field(default_factory=set)
    sessions: dict[str, SessionState] = field(default_factory=dict)  # exact key and lower-cased key
    active_cron_jobs: set[str] = field(default_factory=set)
    active_acp_sessions: set[str] | None = None
    # Queued `cli` tasks whose command waits, unclaimed, for the next gateway (`run --detach` with none running).
    waiting_for_gateway: set[str] = field(default_factory=set)

    @classmethod
    def load(
        cls,
        conn: Connection,
        tasks: Iterable[Task],
        now: datetime,
        *,
        authoritative: bool,
        live_runs: set[str] | None = None,
        active_cron_jobs: set[str] | None = None,
        active_acp_sessions: set[str] | None = None,
    ) -> BackingView:
        batch = [t for t in tasks if t.status in ACTIVE]
        view = cls(now=now, authoritative=authoritative, active_acp_sessions=active_acp_sessions)
        if not batch:
            return view
        from flowledger.tasks.runs import liveness

        view.live_runs = live_runs if live_runs is not None else liveness.live_run_ids(conn, now)
        view.fresh_gateways = liveness.fresh_gateways(conn, now)
        keys = {t.child_session_key for t in batch if t.child_session_key}
        keys |= {t.requester_session_key for t in batch if generation.is_generation(t)}
        if keys:
            view.sessions = load_sessions(conn, keys)
        queued_cli = [t.task_id for t in batch if t.runtime == Runtime.CLI and t.status == TaskStatus.QUEUED]
        if queued_cli:
            view.waiting_for_gateway = unclaimed_payloads(conn, queued_cli)
        if active_cron_jobs is not None:
            view.active_cron_jobs = {j.lower() for j in active_cron_jobs}
        elif authoritative and any(t.runtime == Runtime.CRON for t in batch):
            view.active_cron_jobs = running_cron_jobs(conn)
        return view

    def session(self, key: str) -> SessionState | None:
        return self.sessions.get(key) or self.sessions.get(key.lower())


def unclaimed_payloads(conn: Connection, task_ids: list[str]) -> set[str]:
    """Which of `task_ids` have a command payload no gateway has claimed yet."""
    from sqlalchemy import select

    from flowledger.tasks.core.tables import task_payloads

    found: set[str] = set()
    for start in range(0, len(task_ids), _IN_CHUNK):
        chunk = task_ids[start:start + _IN_CHUNK]
        stmt = select(task_payloads.c.task_id).where(task_payloads.c.task_id.in_(chunk),
                                                     task_payloads.c.claimed_by.is_(None))
        found.update(str(r[0]) for r in conn.execute(stmt))
    return found


def load_sessions(conn: Connection, keys: Iterable[str]) -> dict[str, SessionState]:
    """Session rows for `keys`, matched exactly, then case-insensitively for the misses."""
    from sqlalchemy import func, select

    from flowledger.tasks.core.tables import sessions

    wanted = sorted(set(keys))
    found: dict[str, SessionState] = {}
    cols = (sessions.c.session_key, sessions.c.tombstone, sessions.c.acp_json, sessions.c.gateway_id,
            sessions.c.ended_at)
    for start in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[start:start + _IN_CHUNK]
        for row in conn.execute(select(*cols).where(sessions.c.session_key.in_(chunk))):
            found[row[0]] = SessionState(row[0], row[1], row[2] is not None, row[3], row[4] is not None)
    missing = sorted({k.lower() for k in wanted if k not in found})
    for start in range(0, len(missing), _IN_CHUNK):
        chunk = missing[start:start + _IN_CHUNK]
        lowered = func.lower(sessions.c.session_key)
        for lowered_row in conn.execute(select(*cols, lowered).where(lowered.in_(chunk))):
            key, tombstone, acp, gateway, ended, low = lowered_row
            found.setdefault(low, SessionState(key, tombstone, acp is not None, gateway, ended is not None))
    return found


def running_cron_jobs(conn: Connection) -> set[str]:
    """Lower-cased ids of cron jobs the cron runtime has marked running (`cron_jobs.running_at`)."""
    from sqlalchemy import select

    from flowledger.tasks.core.tables import cron_jobs

    rows = conn.execute(select(cron_jobs.c.job_id).where(cron_jobs.c.running_at.is_not(None)))
    return {str(r[0]).lower() for r in rows}


def is_codex_native(task: Task) -> bool:
    ident = task.run_id or task.source_id or ""
    return task.runtime == Runtime.SUBAGENT and task.task_kind == "codex-native" and ident.startswith("codex-thread:")


def grace_for(task: Task) -> timedelta:
    return CODEX_NATIVE_GRACE if is_codex_native(task) and not task.child_session_key else LOST_GRACE


def judge(task: Task, view: BackingView) -> Verdict:
    """The rules of REFERENCE §6.3, in order; the first that applies decides."""
    if task.runtime == Runtime.CRON:
        if not view.authoritative:
            return Verdict(True, "cron_runtime_not_authoritative")
        if task.run_id and task.run_id in view.live_runs:
            return Verdict(True, "backing_session_present")
        job = (task.source_id or "").lower()
        return Verdict(bool(job) and job in view.active_cron_jobs,
                       "backing_session_present" if job in view.active_cron_jobs else "backing_session_missing")
    if generation.is_generation(task):  # backed by the session that asked for it, while that session lives
        entry = view.session(task.requester_session_key)
        alive = entry is not None and not entry.tombstone and not entry.ended
        return Verdict(alive, "backing_session_present" if alive else "backing_session_missing")
    if task.runtime == Runtime.CLI and task.status == TaskStatus.QUEUED and task.task_id in view.waiting_for_gateway:
        return Verdict(True, "queued_for_gateway")  # docs/runtimes.md: it stays queued for the next gateway
    if task.runtime == Runtime.CLI and (task.run_id or task.source_id):
        live = (task.run_id in view.live_runs) or (task.source_id in view.live_runs)
        return Verdict(live, "active_cli_run" if live else "backing_session_missing")
    if not task.child_session_key:
        if is_codex_native(task):
            return Verdict(False, "backing_session_missing", CODEX_NATIVE_REASON)
        return Verdict(True, "backing_session_present")
    key = task.child_session_key
    if task.runtime == Runtime.ACP:
        if not view.authoritative:
            return Verdict(True, "acp_runtime_not_authoritative")
        return Verdict(_acp_turn_live(task, key, view),
                       "backing_session_present" if _acp_turn_live(task, key, view) else "backing_session_missing")
    if task.runtime == Runtime.CLI and chat_type(key) in (ChatType.CHANNEL, ChatType.GROUP, ChatType.DIRECT):
        return Verdict(False, "backing_session_missing")
    if task.runtime in (Runtime.SUBAGENT, Runtime.CLI):
        entry = view.session(key)
        if entry is None:
            return Verdict(False, "backing_session_missing")
        if task.runtime == Runtime.SUBAGENT and entry.tombstone:
            return Verdict(False, "subagent_recovery_wedged", f"subagent recovery wedged: {entry.tombstone}")
        return Verdict(True, "backing_session_present")
    return Verdict(True, "backing_session_present")


def _acp_turn_live(task: Task, key: str, view: BackingView) -> bool:
    """A live ACP turn: named by the gateway, or a run/session row owned by a gateway with a fresh lease."""
    if view.active_acp_sessions is not None and (key in view.active_acp_sessions):
        return True
    if task.run_id and task.run_id in view.live_runs:
        return True
    entry = view.session(key)
    return entry is not None and entry.acp and entry.gateway_id is not None and entry.gateway_id in view.fresh_gateways


def should_mark_lost(task: Task, view: BackingView) -> Verdict | None:
    """The lost verdict when `task` is active, past its grace (≥) and unbacked; else None."""
    if task.status not in ACTIVE:
        return None
    if view.now - task.last_activity_at < grace_for(task):
        return None
    verdict = judge(task, view)
    return None if verdict.backed else verdict


def has_backing(
    conn: Connection,
    task: Task,
    now: datetime,
    *,
    authoritative: bool,
    live_runs: set[str] | None = None,
    active_cron_jobs: set[str] | None = None,
    active_acp_sessions: set[str] | None = None,
) -> bool:
    """One task's backing, read from the database (batches use `BackingView.load` + `judge`)."""
    probe = task if task.status in ACTIVE else task.replace(status=next(iter(ACTIVE)))
    view = BackingView.load(conn, [probe], now, authoritative=authoritative, live_runs=live_runs,
                            active_cron_jobs=active_cron_jobs, active_acp_sessions=active_acp_sessions)
    return judge(task, view).backed
