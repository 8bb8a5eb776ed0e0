"""Pure pieces of the CLI: short ids, spans, exit codes of finished runs, gateway log formats."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

import pytest

from flowledger.cli.logformat import JsonFormatter, UtcTextFormatter
from flowledger.cli.run_result import exit_code_of
from flowledger.cli.tables import Col, short_ids, span_text, widths
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import DeliveryStatus, NotifyPolicy, Runtime, ScopeKind, TaskStatus

T0 = datetime(2026, 12, 3, 11, 0, tzinfo=UTC)


def test_short_ids_are_unique_among_the_rows_and_at_least_eight() -> None:
    ids = ["01a23b43-5c00-7aaa", "01a23b43-5c00-7aab", "01a23b43-5d11-7000", "ffffffff-0000"]
    short = short_ids(ids)
    assert short == {"01a23b43-5c00-7aaa": "01a23b43-5c00-7aaa", "01a23b43-5c00-7aab": "01a23b43-5c00-7aab",
                     "01a23b43-5d11-7000": "01a23b43-5d", "ffffffff-0000": "ffffffff"}
    assert short_ids(["abc"]) == {"abc": "abc"}
    assert short_ids([]) == {}


def test_span_text_at_each_boundary() -> None:
    assert [span_text(s) for s in (0.25, 1, 59.9, 60, 599, 600, 3599, 3600, 86_399, 86_400)] == [
        "250ms", "1s", "59s", "1m00s", "9m59s", "10m", "59m", "1h00m", "23h59m", "1d00h"]


def test_widths_give_the_free_column_what_is_left() -> None:
    cols = [Col("Task"), Col("Status"), Col("Summary", fixed=False)]
    rows = [["01a23b43", "running", "x" * 200]]
    assert widths(cols, rows, 80) == [8, 7, 80 - 8 - 7 - 4]
    assert widths(cols, [["01a23b43", "running", "short"]], 80)[2] == 7  # never wider than its text ("Summary")


def _task(status: TaskStatus, error: str | None = None) -> Task:
    return Task(task_id="t", runtime=Runtime.CLI, task="x", owner_key="", requester_session_key="",
                scope_kind=ScopeKind.SYSTEM, status=status, delivery_status=DeliveryStatus.NOT_APPLICABLE,
                notify_policy=NotifyPolicy.SILENT, error=error, created_at=T0)


@pytest.mark.parametrize(("status", "error", "code"), [
    (TaskStatus.SUCCEEDED, None, 0), (TaskStatus.FAILED, "exit code 4: nope", 4),
    (TaskStatus.FAILED, "exit code 300", 255), (TaskStatus.FAILED, "killed by SIGKILL", 137),
    (TaskStatus.FAILED, "cannot start 'x': No such file", 127), (TaskStatus.FAILED, "agent said no", 1),
    (TaskStatus.TIMED_OUT, "timed out after 1s", 124), (TaskStatus.CANCELLED, None, 130),
    (TaskStatus.LOST, "backing gone", 1), (TaskStatus.RUNNING, None, None), (TaskStatus.QUEUED, None, None),
])
def test_exit_code_of(status: TaskStatus, error: str | None, code: int | None) -> None:
    assert exit_code_of(_task(status, error)) == code


def test_gateway_log_lines_are_utc_with_z() -> None:
    record = logging.LogRecord("flowledger.x", logging.INFO, __file__, 1, "task %s started", ("t1",), None)
    record.created = T0.timestamp() + 0.5
    assert UtcTextFormatter().format(record) == "2026-12-03T11:00:00.500Z INFO flowledger.x: task t1 started"
    doc = json.loads(JsonFormatter().format(record))
    assert doc == {"ts": "2026-12-03T11:00:00.500Z", "level": "info", "logger": "flowledger.x",
                   "message": "task t1 started"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["ts"])
