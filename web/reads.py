"""What the board reads: the same service calls and JSON serialisers as the CLI, nothing of its own.

Pages and the JSON API both come here, so `/api/tasks` and the tasks page can never disagree, and both agree
with `flowledger tasks list --json` (flows/documents.py builds every document).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from flowledger.flows import health, listing
from flowledger.flows.documents import flow_document, flow_list_document, task_list_document
from flowledger.flows.models import Flow, FlowStatus
from flowledger.flows.steps import StepView, step_views, why_not_succeeded
from flowledger.scheduler import cron
from flowledger.scheduler.logs import log_paths, tail
from flowledger.tasks.core.errors import TaskNotFoundError
from flowledger.tasks.core.models import Task, TaskEvent
from flowledger.tasks.core.states import FAILURES
from flowledger.web.queries import FlowQuery, TaskQuery

if TYPE_CHECKING:
    from flowledger.flows.ledger import Ledger

RECENT_WINDOW = 200  # the overview looks for failures among this many newest tasks
RECENT_FAILURES = 10
LOG_TAIL_LINES = 40
LOG_TAIL_BYTES = 16_384
LINKED_SHOWN = 100  # a flow page lists this many linked tasks; its steps table covers every step


@dataclass(frozen=True, slots=True)
class TaskPage:
    page: listing.TaskPage
    query: TaskQuery

    @property
    def tasks(self) -> list[Task]:
        return self.page.tasks

    @property
    def more(self) -> bool:
        paging = self.query.paging
        return paging.limit is not None and paging.offset + len(self.page.tasks) < self.page.total

    def document(self) -> dict[str, Any]:
        filters = self.page.filters
        return task_list_document(self.page.tasks, runtime=filters["runtime"], status=filters["status"],
                                  total=self.page.total, filters=filters)


def task_page(ledger: Ledger, query: TaskQuery) -> TaskPage:
    """Newest first, reconciled, with `total` over every match: `tasks list`'s own listing."""
    return TaskPage(listing.task_page(ledger, runtime=query.runtime, status=query.status, owner_key=query.owner,
                                      flow=query.flow, since=query.since, paging=query.paging), query)


def task(ledger: Ledger, lookup: str) -> Task:
    """One task as `tasks show` prints it: the reconciled projection."""
    found = ledger.tasks.get(lookup)
    if found is None:
        raise TaskNotFoundError(lookup)
    return health.project_one(ledger, found)


def task_events(ledger: Ledger, task_id: str) -> list[TaskEvent]:
    return list(ledger.tasks.events(task_id))


def log_tail(ledger: Ledger, task_id: str) -> dict[str, Any]:
    """The end of a task's captured stdout and stderr (`tasks logs`), as text."""
    out_path, err_path = log_paths(ledger.state_dir, task_id)
    return {"task_id": task_id,
            "stdout": tail(out_path, max_bytes=LOG_TAIL_BYTES, max_lines=LOG_TAIL_LINES),
            "stderr": tail(err_path, max_bytes=LOG_TAIL_BYTES, max_lines=LOG_TAIL_LINES),
            "captured": out_path.exists() or err_path.exists()}


class FlowView:
    """One flow with its linked tasks; the JSON document (`tasks flow show --json`) and the step view are each
    built on first use: the page needs only the steps, the API only the document."""

    def __init__(self, flow: Flow, tasks: list[Task]) -> None:
        self.flow = flow
        self.tasks = tasks

    @cached_property
    def document(self) -> dict[str, Any]:
        return flow_document(self.flow, self.tasks)

    @cached_property
    def views(self) -> list[StepView] | None:
        return step_views(self.flow, self.tasks)

    @cached_property
    def steps(self) -> list[dict[str, Any]] | None:
        """The document's `steps` (the same serialiser), without building the rest of the document."""
        return [v.to_json() for v in self.views] if self.views is not None else None

    @property
    def why(self) -> str | None:
        """`flow show`'s line for a flow that ended without succeeding."""
        return why_not_succeeded(self.flow, self.views)

    def newest_tasks(self, limit: int = LINKED_SHOWN) -> list[Task]:
        return self.tasks[:limit]


def flow(ledger: Ledger, lookup: str) -> FlowView:
    found = ledger.flows.require(lookup)
    return FlowView(found, list(ledger.flows.linked_tasks(found.flow_id)))


@dataclass(frozen=True, slots=True)
class FlowPage:
    page: listing.FlowPage
    query: FlowQuery

    @property
    def flows(self) -> list[Flow]:
        return self.page.flows

    @property
    def linked(self) -> dict[str, list[Task]]:
        return self.page.linked

    @property
    def more(self) -> bool:
        paging = self.query.paging
        return paging.limit is not None and paging.offset + len(self.page.flows) < self.page.total

    def document(self) -> dict[str, Any]:
        return flow_list_document(self.page.flows, self.page.linked, status=self.query.status,
                                  total=self.page.total, filters=self.page.filters)


def flow_page(ledger: Ledger, query: FlowQuery) -> FlowPage:
    return FlowPage(listing.flow_page(ledger, status=query.status, owner_key=query.owner, since=query.since,
                                      paging=query.paging), query)


@dataclass(frozen=True, slots=True)
class Overview:
    """`status`'s report (task and flow pressure, audit counts), recent failures and the flows running now."""

    status: health.StatusReport
    recent_failures: list[Task]
    live_flows: list[Flow]


def overview(ledger: Ledger) -> Overview:
    newest = health.project_list(ledger, limit=RECENT_WINDOW)
    failures = [t for t in newest if t.status in FAILURES][:RECENT_FAILURES]
    live = [*ledger.flows.list(FlowStatus.RUNNING), *ledger.flows.list(FlowStatus.QUEUED)][:RECENT_FAILURES]
    return Overview(health.status(ledger), failures, live)


@dataclass(frozen=True, slots=True)
class CronRow:
    job: dict[str, Any]  # `cron list --json` item
    runs: list[Task]


def cron_jobs(ledger: Ledger) -> list[dict[str, Any]]:
    """`cron list --json`'s jobs."""
    now = ledger.clock.now()
    return [job.to_json(now) for job in cron.list_jobs(ledger)]


def cron_board(ledger: Ledger, runs_per_job: int = 10) -> list[CronRow]:
    now = ledger.clock.now()
    return [CronRow(job.to_json(now), cron.job_runs(ledger, job, limit=runs_per_job))
            for job in cron.list_jobs(ledger)]
