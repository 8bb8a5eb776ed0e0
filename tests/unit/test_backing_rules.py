"""Pure rules: the backing table of REFERENCE §6.3, cron run-id parsing and recovery decisions (§6.4)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flowledger.tasks.core.clock import to_ms
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import DeliveryStatus, NotifyPolicy, Runtime, ScopeKind, TaskStatus
from flowledger.tasks.health import cron_recovery
from flowledger.tasks.health.backing import (
    CODEX_NATIVE_REASON,
    BackingView,
    SessionState,
    judge,
    should_mark_lost,
)
from flowledger.tasks.health.cron_recovery import JobState, RunLogEntry

NOW = datetime(2026, 3, 30, 1, 0, tzinfo=UTC)
STARTED = NOW - timedelta(minutes=5)


def task(runtime: Runtime, **kw: Any) -> Task:
    fields: dict[str, Any] = {
        "task_id": "t1", "runtime": runtime, "requester_session_key": "agent:main:main", "owner_key": "agent:main:main",
        "scope_kind": ScopeKind.SESSION, "task": "x", "status": TaskStatus.RUNNING,
        "delivery_status": DeliveryStatus.PENDING, "notify_policy": NotifyPolicy.DONE_ONLY,
        "created_at": STARTED, "started_at": STARTED,
    }
    fields.update(kw)
    return Task(**fields)


def view(*, authoritative: bool = False, **kw: Any) -> BackingView:
    return BackingView(now=NOW, authoritative=authoritative, **kw)


def test_judge_table() -> None:
    assert judge(task(Runtime.CRON, source_id="j"), view()).reason == "cron_runtime_not_authoritative"
    assert not judge(task(Runtime.CRON), view(authoritative=True)).backed
    assert judge(task(Runtime.CRON, source_id="J"), view(authoritative=True, active_cron_jobs={"j"})).backed
    assert judge(task(Runtime.CLI, run_id="r"), view(live_runs={"r"})).reason == "active_cli_run"
    assert judge(task(Runtime.CLI, source_id="s"), view(live_runs={"s"})).backed
    assert not judge(task(Runtime.CLI, run_id="r", child_session_key="agent:main:x"),
                     view(sessions={"agent:main:x": SessionState("agent:main:x", None, False, None)})).backed
    assert judge(task(Runtime.SUBAGENT), view()).backed
    assert judge(task(Runtime.ACP, child_session_key="k"), view()).reason == "acp_runtime_not_authoritative"
    assert not judge(task(Runtime.ACP, child_session_key="k"), view(authoritative=True)).backed
    acp_row = {"k": SessionState("k", None, True, "gw")}
    assert judge(task(Runtime.ACP, child_session_key="k"),
                 view(authoritative=True, sessions=acp_row, fresh_gateways={"gw"})).backed
    assert not judge(task(Runtime.ACP, child_session_key="k"), view(authoritative=True, sessions=acp_row)).backed
    assert not judge(task(Runtime.CLI, child_session_key="agent:main:discord:group:g"), view()).backed
    legacy = task(Runtime.CLI, child_session_key="agent:main:worker")
    assert not judge(legacy, view()).backed
    assert judge(legacy, view(sessions={"agent:main:worker": SessionState("agent:main:worker", None, False, None)}
                              )).backed


def test_codex_native_childless_subagent_has_a_thirty_minute_grace() -> None:
    native = task(Runtime.SUBAGENT, task_kind="codex-native", run_id="codex-thread:1",
                  started_at=NOW - timedelta(minutes=30) + timedelta(milliseconds=1),
                  created_at=NOW - timedelta(hours=1))
    assert should_mark_lost(native, view()) is None
    verdict = should_mark_lost(native.replace(started_at=NOW - timedelta(minutes=30)), view())
    assert verdict is not None and verdict.lost_error == CODEX_NATIVE_REASON


def test_grace_is_measured_from_the_last_event() -> None:
    t = task(Runtime.CLI, run_id="r", started_at=NOW - timedelta(hours=1),
             created_at=NOW - timedelta(hours=1),
             last_event_at=NOW - timedelta(minutes=4, seconds=59, milliseconds=999))
    assert should_mark_lost(t, view()) is None
    assert should_mark_lost(t.replace(last_event_at=NOW - timedelta(minutes=5)), view()) is not None
    assert should_mark_lost(t.replace(status=TaskStatus.SUCCEEDED, last_event_at=STARTED), view()) is None


def cron_task(run_id: str, **kw: Any) -> Task:
    return task(Runtime.CRON, run_id=run_id, **kw)


def entry(status: str, run_at: datetime = STARTED, **kw: Any) -> RunLogEntry:
    fields: dict[str, Any] = {"job_id": "job-1", "action": "finished", "run_at": run_at, "status": status,
                              "error": None, "summary": None, "duration_ms": None, "ts": NOW}
    fields.update(kw)
    return RunLogEntry(**fields)


def test_parse_run_rules() -> None:
    ms = to_ms(STARTED)
    assert cron_recovery.parse_run(cron_task(f"cron:job-1:{ms}")) == ("job-1", STARTED)
    assert cron_recovery.parse_run(cron_task(f"cron:a:b:{ms}")) == ("a:b", STARTED)
    assert cron_recovery.parse_run(cron_task(f"cron:job-1:{ms}", source_id="other")) is None
    assert cron_recovery.parse_run(cron_task("cron:job-1:-5")) is None
    assert cron_recovery.parse_run(cron_task(f"cron::{ms}")) is None
    assert cron_recovery.parse_run(cron_task(f"run:{ms}")) is None
    assert cron_recovery.parse_run(cron_task(f"cron:job-1:{ms}", status=TaskStatus.FAILED)) is None


def test_decide_prefers_the_last_log_entry_then_job_state() -> None:
    t = cron_task(f"cron:job-1:{to_ms(STARTED)}")
    got = cron_recovery.decide(t, [entry("error", error="boom"), entry("ok", duration_ms=250)], None)
    assert got is not None and got.status == TaskStatus.SUCCEEDED
    assert got.ended_at == STARTED + timedelta(milliseconds=250)
    timeout = cron_recovery.decide(t, [entry("error", error="cron: job execution timed out")], None)
    assert timeout is not None and timeout.status == TaskStatus.TIMED_OUT
    assert cron_recovery.decide(t, [entry("running")], None) is None
    assert cron_recovery.decide(t, [entry("ok", run_at=NOW)], None) is None
    state = JobState("job-1", STARTED, "error", "exit 1", None)
    by_state = cron_recovery.decide(t, [], state)
    assert by_state is not None and (by_state.status, by_state.ended_at, by_state.error) == (
        TaskStatus.FAILED, STARTED, "exit 1")
    assert cron_recovery.decide(t, [], JobState("job-1", NOW, "ok", None, None)) is None


def test_a_generation_job_is_backed_by_its_requester_session() -> None:
    job = task(Runtime.CLI, task_kind="video_generate", run_id="video_generate:t1", source_id="video_generate")
    key = "agent:main:main"
    assert judge(job, view(sessions={key: SessionState(key, None, False, None)})).backed  # no gateway run needed
    assert not judge(job, view()).backed  # row missing
    assert not judge(job, view(sessions={key: SessionState(key, "gateway died", False, None)})).backed
    assert not judge(job, view(sessions={key: SessionState(key, None, False, None, ended=True)})).backed
    assert should_mark_lost(job, view()) is not None  # at the 5-minute grace, exactly
    plain = task(Runtime.CLI, task_kind="export", run_id="r")
    assert not judge(plain, view(sessions={key: SessionState(key, None, False, None)})).backed
