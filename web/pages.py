"""The pages people look at. Each one reads through web/reads.py (the CLI's calls) and renders a template;
scripts in static/board.js then keep them current by polling `/api/…`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from flowledger.flows import health
from flowledger.flows.graph import build_graph
from flowledger.flows.listing import Paging
from flowledger.flows.models import FlowStatus
from flowledger.tasks.core.states import Runtime, TaskStatus
from flowledger.tasks.health.findings import Severity
from flowledger.web import reads
from flowledger.web.api import ledger_of
from flowledger.web.graph import layout
from flowledger.web.queries import AuditQuery, FlowQuery, TaskQuery, check_known
from flowledger.web.steps import definition_of
from flowledger.web.svg import render_svg

PAGE_SIZE = 50


def render(request: Request, template: str, context: dict[str, Any], status: int = 200) -> Response:
    templates: Jinja2Templates = request.app.state.templates
    base = {"allow_actions": request.app.state.access.allow_actions, "nav": template.removesuffix(".html")}
    return templates.TemplateResponse(request, template, {**base, **context}, status_code=status)


def page_links(path: str, params: Mapping[str, str], paging: Paging, more: bool) -> dict[str, str | None]:
    """Previous/next links that keep the filters."""
    kept = {k: v for k, v in params.items() if k not in ("offset", "limit") and v}
    offset, limit = paging.offset, paging.limit or 0

    def link(at: int) -> str:
        return f"{path}?{urlencode({**kept, 'limit': limit, 'offset': at})}"

    return {"previous": link(max(0, offset - limit)) if offset > 0 else None,
            "next": link(offset + limit) if more else None}


def _paged(params: Mapping[str, str]) -> dict[str, str]:
    """The page's own default size (the API's is the CLI's 100)."""
    return {"limit": str(PAGE_SIZE), **{k: v for k, v in params.items()}}


def overview(request: Request) -> Response:
    check_known(request.query_params, ())
    data = reads.overview(ledger_of(request))
    return render(request, "overview.html", {"o": data, "task_statuses": [s.value for s in TaskStatus],
                                             "flow_statuses": [s.value for s in FlowStatus]})


def flows(request: Request) -> Response:
    params = _paged(request.query_params)
    ledger = ledger_of(request)
    query = FlowQuery.parse(params, ledger.clock.now())
    page = reads.flow_page(ledger, query)
    return render(request, "flows.html", {
        "page": page, "statuses": [s.value for s in FlowStatus], "params": params,
        "links": page_links("/flows", params, query.paging, page.more)})


def flow(request: Request) -> Response:
    check_known(request.query_params, ())
    view = reads.flow(ledger_of(request), request.path_params["flow_id"])
    definition = definition_of(view.flow)
    graph = None
    if definition is not None and view.steps is not None:
        graph = layout(build_graph(definition), view.steps)
    return render(request, "flow.html", {"view": view, "graph": graph,
                                         "graph_svg": render_svg(graph) if graph is not None else None})


def tasks(request: Request) -> Response:
    params = _paged(request.query_params)
    ledger = ledger_of(request)
    query = TaskQuery.parse(params, ledger.clock.now())
    page = reads.task_page(ledger, query)
    return render(request, "tasks.html", {
        "page": page, "runtimes": [r.value for r in Runtime], "statuses": [s.value for s in TaskStatus],
        "params": params, "links": page_links("/tasks", params, query.paging, page.more)})


def task(request: Request) -> Response:
    check_known(request.query_params, ())
    ledger = ledger_of(request)
    found = reads.task(ledger, request.path_params["task_id"])
    return render(request, "task.html", {"task": found, "doc": found.to_json(),
                                         "events": reads.task_events(ledger, found.task_id),
                                         "logs": reads.log_tail(ledger, found.task_id)})


def audit(request: Request) -> Response:
    query = AuditQuery.parse(request.query_params)
    report = health.run_audit(ledger_of(request), severity=query.severity, code=query.code, limit=query.limit)
    return render(request, "audit.html", {"report": report, "query": query,
                                          "severities": [s.value for s in Severity]})


def cron(request: Request) -> Response:
    check_known(request.query_params, ())
    return render(request, "cron.html", {"rows": reads.cron_board(ledger_of(request))})


def routes() -> list[Route]:
    return [
        Route("/", overview),
        Route("/flows", flows),
        Route("/flows/{flow_id}", flow),
        Route("/tasks", tasks),
        Route("/tasks/{task_id}", task),
        Route("/audit", audit),
        Route("/cron", cron),
    ]
