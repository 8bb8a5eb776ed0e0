"""The schema of the one ledger database: tasks, delivery, events, flows, sessions, leases and cron.

All times are stored as integer epoch milliseconds (BIGINT) through `UTCMillis`, which refuses naive
datetimes and hands back timezone-aware UTC: identical on SQLite and PostgreSQL, and cheap to index.
Enum-valued columns are plain strings, parsed strictly on load (see store.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from flowledger.tasks.core.clock import require_aware, to_ms
from flowledger.tasks.core.quiet_rows import ACTIVE_DUE, ACTIVE_DUE_INDEX, ACTIVE_ROWS, QUIET_ROW_KINDS
from flowledger.tasks.core.task_rows import stored_time

# 2: no task_runs.last_event_at index, (cleanup_after, seq) instead of cleanup_after; cron_jobs.timeout_ms;
#    sessions.last_route_json
# 3: task and flow id columns VARCHAR(128) (CONTRACT §7 "Limits"; only PostgreSQL enforces the width); the run
#    queue's task_payloads created by the migrations, no longer by the queue itself
# 4: notice_outbox (notices are sent off the writer's path, tasks/delivery/outbox.py)
# 5: task_runs.media_json, sessions.ended_at, generation_media, session_resources (generation jobs, resource cleanup)
# 6: cron_controls (cron pause/resume/trigger), created by the migrations, no longer on first use
# 7: task_counts, kept by triggers on task_runs (tasks/core/counts.py), backfilled from the rows already there; three
#    partial indexes over the rows an audit flags (QUIET_ROW_KINDS), empty on a healthy ledger
# 8: the active rows by the time from which they need a look (quiet_rows.ACTIVE_DUE): the stale, cron and ended
#    active rows are one index range, not a walk of every active row
SCHEMA_VERSION = 8
# Task and flow ids are at most this long (flowledger.tasks.core.limits.MAX_ID_CHARS checks it before the database).
ID_CHARS = 128


class UTCMillis(TypeDecorator[datetime]):
    """Aware UTC datetime <-> BIGINT epoch milliseconds."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if isinstance(value, int):
            return value
        return to_ms(require_aware(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return stored_time(value)  # one conversion for the ORM store and the lean reader (tasks/core/task_rows.py)


def _ts(*, nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCMillis(), nullable=nullable, index=index))


def _text(*, nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(Text, nullable=nullable))


class TaskRow(SQLModel, table=True):
    __tablename__ = "task_runs"
    __table_args__ = (
        # Covers the status counts. The plain status index stays too: its (status, seq) order is what the
        # sweep's and the projection's keyset batches walk without sorting.
        Index("idx_task_runs_runtime_status", "runtime", "status"),
        Index("idx_task_runs_created", "created_at", "seq"),
        # The prune walks due rows in this order, keyset-style (seq breaks ties: on PostgreSQL an index on
        # cleanup_after alone orders equal stamps by physical position, so a keyset could not resume inside them).
        Index("idx_task_runs_cleanup", "cleanup_after", "seq"),
        *(Index(name, "seq", sqlite_where=text(where), postgresql_where=text(where))
          for name, where in QUIET_ROW_KINDS.items()),
        Index(ACTIVE_DUE_INDEX, "status", text(f"({ACTIVE_DUE})"), sqlite_where=text(ACTIVE_ROWS),
              postgresql_where=text(ACTIVE_ROWS)),
    )

    # seq orders ties in "newest first" by insertion and lets the sweep stream rows in keyset batches.
    seq: int | None = Field(default=None, sa_column=Column(Integer().with_variant(BigInteger, "postgresql"),
                                                           primary_key=True, autoincrement=True))
    task_id: str = Field(sa_column=Column(String(ID_CHARS), nullable=False, unique=True))
    runtime: str = Field(sa_column=Column(String(16), nullable=False))
    task_kind: str | None = _text()
    source_id: str | None = _text()
    requester_session_key: str = Field(default="", sa_column=Column(Text, nullable=False))
    owner_key: str = Field(sa_column=Column(Text, nullable=False, index=True))
    scope_kind: str = Field(sa_column=Column(String(16), nullable=False))
    child_session_key: str | None = Field(default=None, sa_column=Column(Text, index=True))
    parent_flow_id: str | None = Field(default=None, sa_column=Column(String(ID_CHARS), index=True))
    parent_task_id: str | None = _text()
    agent_id: str | None = Field(default=None, sa_column=Column(Text, index=True))
    requester_agent_id: str | None = _text()
    run_id: str | None = Field(default=None, sa_column=Column(Text, index=True))
    label: str | None = _text()
    task: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False, index=True))
    delivery_status: str = Field(sa_column=Column(String(24), nullable=False))
    notify_policy: str = Field(sa_column=Column(String(24), nullable=False))
    created_at: datetime = Field(sa_column=Column(UTCMillis(), nullable=False))
    started_at: datetime | None = _ts()
    ended_at: datetime | None = _ts()
    last_event_at: datetime | None = _ts()  # not indexed: no query can use it (activity is a coalesce)
    cleanup_after: datetime | None = _ts()
    error: str | None = _text()
    progress_summary: str | None = _text()
    terminal_summary: str | None = _text()
    terminal_outcome: str | None = Field(default=None, sa_column=Column(String(16)))
    media_json: str | None = _text()  # a generation job's items (paths or URLs), a JSON list


class DeliveryRow(SQLModel, table=True):
    """0..1 per task: where to deliver, how far state-change notices got, and the delivery claim."""

    __tablename__ = "task_delivery_state"

    task_id: str = Field(sa_column=Column(String(ID_CHARS), primary_key=True))
    requester_origin_json: str | None = _text()
    last_notified_event_at: datetime | None = _ts()
    # Exactly-once terminal delivery: a process claims the send in the database before making it.
    claimed_by: str | None = _text()
    claimed_at: datetime | None = _ts()
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    last_error: str | None = _text()


class TaskEventRow(SQLModel, table=True):
    """Append-only history: every status a task entered and every progress report, in commit order."""

    __tablename__ = "task_events"

    id: int | None = Field(default=None, sa_column=Column(Integer().with_variant(BigInteger, "postgresql"),
                                                          primary_key=True, autoincrement=True))
    task_id: str = Field(sa_column=Column(String(ID_CHARS), nullable=False, index=True))
    at: datetime = Field(sa_column=Column(UTCMillis(), nullable=False))
    kind: str = Field(sa_column=Column(String(16), nullable=False))
    previous_status: str | None = Field(default=None, sa_column=Column(String(16)))
    summary: str | None = _text()


class FlowRow(SQLModel, table=True):
    __tablename__ = "flow_runs"
    __table_args__ = (Index("idx_flow_runs_created", "created_at", "seq"),)

    seq: int | None = Field(default=None, sa_column=Column(Integer().with_variant(BigInteger, "postgresql"),
                                                           primary_key=True, autoincrement=True))
    flow_id: str = Field(sa_column=Column(String(ID_CHARS), nullable=False, unique=True))
    sync_mode: str = Field(default="managed", sa_column=Column(String(16), nullable=False))
    owner_key: str = Field(sa_column=Column(Text, nullable=False, index=True))
    requester_origin_json: str | None = _text()
    controller_id: str | None = _text()
    revision: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False, index=True))
    notify_policy: str = Field(sa_column=Column(String(24), nullable=False))
    goal: str = Field(sa_column=Column(Text, nullable=False))
    current_step: str | None = _text()
    blocked_task_id: str | None = _text()
    blocked_summary: str | None = _text()
    # JSON documents as text: an explicit JSON null is stored as the text 'null', absent as SQL NULL.
    state_json: str | None = _text()
    wait_json: str | None = _text()
    cancel_requested_at: datetime | None = _ts()
    created_at: datetime = Field(sa_column=Column(UTCMillis(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCMillis(), nullable=False, index=True))
    ended_at: datetime | None = _ts()


class SessionRow(SQLModel, table=True):
    """The durable session registry: child sessions (subagent, acp, isolated cron runs) and their state."""

    __tablename__ = "sessions"

    session_key: str = Field(sa_column=Column(String(512), primary_key=True))
    agent_id: str | None = Field(default=None, sa_column=Column(Text, index=True))
    kind: str = Field(default="session", sa_column=Column(String(24), nullable=False))
    parent_session_key: str | None = _text()
    spawned_by: str | None = _text()
    acp_json: str | None = _text()  # ACP metadata; present only for ACP sessions
    mode: str | None = Field(default=None, sa_column=Column(String(16)))  # oneshot | persistent
    bindings_json: str | None = _text()
    tombstone: str | None = _text()  # restart-recovery tombstone: why the gateway could not resume it
    gateway_id: str | None = _text()
    protected: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default="0"))
    created_at: datetime = Field(sa_column=Column(UTCMillis(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCMillis(), nullable=False, index=True))
    # The session's last known chat route, JSON {"channel","to","account_id","thread_id"}: fills a sub-agent
    # completion's missing `to`/account (SPEC §3).
    last_route_json: str | None = _text()
    # Set when the session's run ended (a sub-agent or an isolated cron run): the session is gone for generation
    # completions; cleared when the session runs again.
    ended_at: datetime | None = _ts()


class GenerationMediaRow(SQLModel, table=True):
    """One generated item of a generation job: whether its session acknowledged it, and whether the direct
    fallback message carried it (at most once), with the claim of the process sending it."""

    __tablename__ = "generation_media"

    task_id: str = Field(sa_column=Column(String(128), primary_key=True))  # the width CONTRACT §7 allows ids
    item_key: str = Field(sa_column=Column(String(64), primary_key=True))  # sha256 of the item: long URLs fit
    item: str = Field(sa_column=Column(Text, nullable=False))
    session_key: str = Field(sa_column=Column(String(512), nullable=False))
    acked_at: datetime | None = _ts()
    sent_at: datetime | None = _ts()
    claimed_by: str | None = _text()
    claimed_at: datetime | None = _ts()


class SessionResourceRow(SQLModel, table=True):
    """Something a session holds that must be released when its run ends: a process (pid + run marker) or a
    cleanup command a runtime registered (closing a browser tab)."""

    __tablename__ = "session_resources"

    resource_id: str = Field(sa_column=Column(String(64), primary_key=True))
    session_key: str = Field(sa_column=Column(String(512), nullable=False, index=True))
    kind: str = Field(sa_column=Column(String(16), nullable=False))  # process | command
    pid: int | None = Field(default=None, sa_column=Column(Integer))
    run_marker: str | None = _text()
    argv_json: str | None = _text()
    label: str | None = _text()
    registered_at: datetime = Field(sa_column=Column(UTCMillis(), nullable=False))
    released_at: datetime | None = _ts()
    outcome: str | None = _text()


class RunContextRow(SQLModel, table=True):
    """A live run owned by a gateway; it backs a `cli` task while that gateway's lease is fresh."""

    __tablename__ = "run_contexts"

    run_id: str = Field(sa_column=Column(String(512), primary_key=True))
    gateway_id: str = Field(sa_column=Column(String(64), nullable=False, index=True))
    task_id: str | None = Field(default=None, sa_column=Column(String(ID_CHARS), index=True))
    pid: int | None = Field(default=None, sa_column=Column(Integer))
    started_at: datetime = Field(sa_column=Column(UTCMillis(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCMillis(), nullable=False))


class GatewayLeaseRow(SQLModel, table=True):
    __tablename__ = "gateway_leases"

    gateway_id: str = Field(sa_column=Column(String(64), primary_key=True))
    host: str = Field(default="", sa_column=Column(Text, nullable=False))
    pid: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    started_at: datetime = Field(sa_column=Column(UTCMillis(), nullable=False))
    renewed_at: datetime = Field(sa_column=Column(UTCMillis(), nullable=False))
    expires_at: datetime = Field(sa_column=Column(UTCMillis(), nullable=False, index=True))
    stopped_at: datetime | None = _ts()


class SystemEventRow(SQLModel, table=True):
    """A session's queue of system events (session-queued delivery); one per (session, context key)."""

    __tablename__ = "system_events"
    __table_args__ = (UniqueConstraint("session_key", "context_key", name="uq_system_events_context"),)

    id: int | None = Field(default=None, sa_column=Column(Integer().with_variant(BigInteger, "postgresql"),
                                                          primary_key=True, autoincrement=True))
    session_key: str = Field(sa_column=Column(String(512), nullable=False, index=True))
    context_key: str = Field(sa_column=Column(String(512), nullable=False))
    text: str = Field(sa_column=Column(Text, nullable=False))
    delivery_context_json: str | None = _text()
    created_at: datetime = Field(sa_column=Column(UTCMillis(), nullable=False))


class HeartbeatWakeRow(SQLModel, table=True):
    """An immediate heartbeat wake request, consumed by the gateway's heartbeat hook."""

    __tablename__ = "heartbeat_wakes"

    id: int | None = Field(default=None, sa_column=Column(Integer().with_variant(BigInteger, "postgresql"),
                                                          primary_key=True, autoincrement=True))
    session_key: str = Field(sa_column=Column(String(512), nullable=False, index=True))
    reason: str = Field(sa_column=Column(String(64), nullable=False))
    requested_at: datetime = Field(sa_column=Column(UTCMillis(), nullable=False))
    fired_at: datetime | None = _ts()


class CronJobRow(SQLModel, table=True):
    __tablename__ = "cron_jobs"

    job_id: str = Field(sa_column=Column(String(64), primary_key=True))
    name: str = Field(sa_column=Column(String(256), nullable=False, unique=True))
    schedule: str | None = _text()
    every_ms: int | None = Field(default=None, sa_column=Column(BigInteger))
    tz: str | None = _text()
    isolated: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default="0"))
    argv_json: str = Field(sa_column=Column(Text, nullable=False))
    agent_id: str = Field(default="main", sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=Column(UTCMillis(), nullable=False))
    running_at: datetime | None = _ts()
    last_run_at: datetime | None = _ts()
    last_status: str | None = Field(default=None, sa_column=Column(String(16)))
    last_error: str | None = _text()
    last_duration_ms: int | None = Field(default=None, sa_column=Column(BigInteger))
    # None: the runtime's default (1 h).
    timeout_ms: int | None = Field(default=None, sa_column=Column(BigInteger))


class CronRunLogRow(SQLModel, table=True):
    """The durable cron run log that cron recovery reads before anything is marked lost."""

    __tablename__ = "cron_run_log"
    __table_args__ = (Index("idx_cron_run_log_job_run", "job_id", "run_at"),)

    id: int | None = Field(default=None, sa_column=Column(Integer().with_variant(BigInteger, "postgresql"),
                                                          primary_key=True, autoincrement=True))
    job_id: str = Field(sa_column=Column(String(64), nullable=False))
    action: str = Field(sa_column=Column(String(16), nullable=False))
    run_at: datetime = Field(sa_column=Column(UTCMillis(), nullable=False))
    status: str | None = Field(default=None, sa_column=Column(String(16)))
    error: str | None = _text()
    summary: str | None = _text()
    duration_ms: int | None = Field(default=None, sa_column=Column(BigInteger))
    ts: datetime = Field(sa_column=Column(UTCMillis(), nullable=False))


class TaskPayloadRow(SQLModel, table=True):
    """What a queued `cli` task runs (argv, limits) and which gateway claimed it; 0..1 per task."""

    __tablename__ = "task_payloads"

    task_id: str = Field(sa_column=Column(String(ID_CHARS), primary_key=True))
    argv_json: str = Field(sa_column=Column(Text, nullable=False))
    shell: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default="0"))
    timeout_ms: int | None = Field(default=None, sa_column=Column(BigInteger))
    cwd: str | None = _text()
    claimed_by: str | None = Field(default=None, sa_column=Column(String(64), index=True))
    claimed_at: datetime | None = _ts()


class NoticeRow(SQLModel, table=True):
    """A notice waiting to be sent (or settled) off the writer's path: a ready message for a channel, or a
    task whose terminal delivery is due. Keyed by its idempotency key, so a notice is recorded once."""

    __tablename__ = "notice_outbox"

    notice_key: str = Field(sa_column=Column(String(255), primary_key=True))
    kind: str = Field(sa_column=Column(String(16), nullable=False))  # message | task_terminal
    subject_id: str = Field(sa_column=Column(String(128), nullable=False))  # the flow or task it is about
    subject_status: str = Field(default="", sa_column=Column(String(16), nullable=False))
    session_key: str = Field(default="", sa_column=Column(Text, nullable=False))
    origin_json: str | None = _text()
    text: str = Field(default="", sa_column=Column(Text, nullable=False))
    fallback: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default="0"))
    status: str = Field(sa_column=Column(String(16), nullable=False, index=True))
    created_at: datetime = Field(sa_column=Column(UTCMillis(), nullable=False))
    claimed_by: str | None = _text()
    claimed_at: datetime | None = _ts()
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    last_error: str | None = _text()
    settled_at: datetime | None = _ts()


class CronControlRow(SQLModel, table=True):
    """Operator controls of one cron job (0..1 row per job): paused since when, a trigger waiting to be taken."""

    __tablename__ = "cron_controls"

    job_id: str = Field(sa_column=Column(String(64), primary_key=True))
    paused_at: datetime | None = _ts()
    trigger_requested_at: datetime | None = _ts()


class TaskCountRow(SQLModel, table=True):
    """How many tasks have each (status, runtime), in shards summed on read; only triggers write it (counts.py)."""

    __tablename__ = "task_counts"

    status: str = Field(sa_column=Column(String(16), primary_key=True))
    runtime: str = Field(sa_column=Column(String(16), primary_key=True))
    shard: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    n: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))


class SchemaMetaRow(SQLModel, table=True):
    __tablename__ = "schema_meta"

    meta_key: str = Field(sa_column=Column(String(64), primary_key=True))
    value: str = Field(sa_column=Column(Text, nullable=False))


METADATA = SQLModel.metadata
task_runs = TaskRow.__table__  # type: ignore[attr-defined]
task_delivery_state = DeliveryRow.__table__  # type: ignore[attr-defined]
task_events = TaskEventRow.__table__  # type: ignore[attr-defined]
flow_runs = FlowRow.__table__  # type: ignore[attr-defined]
sessions = SessionRow.__table__  # type: ignore[attr-defined]
run_contexts = RunContextRow.__table__  # type: ignore[attr-defined]
gateway_leases = GatewayLeaseRow.__table__  # type: ignore[attr-defined]
system_events = SystemEventRow.__table__  # type: ignore[attr-defined]
heartbeat_wakes = HeartbeatWakeRow.__table__  # type: ignore[attr-defined]
cron_jobs = CronJobRow.__table__  # type: ignore[attr-defined]
cron_run_log = CronRunLogRow.__table__  # type: ignore[attr-defined]
schema_meta = SchemaMetaRow.__table__  # type: ignore[attr-defined]
task_payloads = TaskPayloadRow.__table__  # type: ignore[attr-defined]
notice_outbox = NoticeRow.__table__  # type: ignore[attr-defined]
generation_media = GenerationMediaRow.__table__  # type: ignore[attr-defined]
session_resources = SessionResourceRow.__table__  # type: ignore[attr-defined]
cron_controls = CronControlRow.__table__  # type: ignore[attr-defined]
task_counts = TaskCountRow.__table__  # type: ignore[attr-defined]
