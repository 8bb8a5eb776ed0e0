"""`/api/…`: the CLI's JSON documents over HTTP, and, with `--allow-actions`, cancel and retry.

Reads answer exactly what the matching `--json` command prints (CONTRACT §7); the extensions the board's
pages poll (`/logs`, `/events`, `/cron`) reuse the CLI's shapes too (`tasks events --json`, `cron list --json`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flowledger.flows import health, retry
from flowledger.flows.documents import flow_document
from flowledger.tasks.core.errors import FlowNotFoundError, InvalidInputError, TaskNotFoundError
from flowledger.web import reads
from flowledger.web.queries import AuditQuery, FlowQuery, TaskQuery, check_known
from flowledger.web.security import bearer_ok

if TYPE_CHECKING:
    from flowledger.flows.ledger import Ledger

MAX_BODY = 16_384


def ledger_of(request: Request) -> Ledger:
    ledger: Ledger = request.app.state.source.get()
    return ledger


def _json(document: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(document, status_code=status)


def status(request: Request) -> Response:
    check_known(request.query_params, ())
    return _json(health.status(ledger_of(request)).to_json())


def tasks(request: Request) -> Response:
    ledger = ledger_of(request)
    query = TaskQuery.parse(request.query_params, ledger.clock.now())
    return _json(reads.task_page(ledger, query).document())


def task(request: Request) -> Response:
    check_known(request.query_params, ())
    return _json(reads.task(ledger_of(request), request.path_params["lookup"]).to_json())


def task_events(request: Request) -> Response:
    ledger = ledger_of(request)
    found = reads.task(ledger, request.path_params["lookup"])
    return _json({"task_id": found.task_id, "events": [e.to_json() for e in reads.task_events(ledger, found.task_id)]})


def task_logs(request: Request) -> Response:
    ledger = ledger_of(request)
    found = reads.task(ledger, request.path_params["lookup"])
    return _json(reads.log_tail(ledger, found.task_id))


def flows(request: Request) -> Response:
    ledger = ledger_of(request)
    query = FlowQuery.parse(request.query_params, ledger.clock.now())
    return _json(reads.flow_page(ledger, query).document())


def flow(request: Request) -> Response:
    check_known(request.query_params, ())
    return _json(reads.flow(ledger_of(request), request.path_params["lookup"]).document)


def audit(request: Request) -> Response:
    query = AuditQuery.parse(request.query_params)
    report = health.run_audit(ledger_of(request), severity=query.severity, code=query.code, limit=query.limit)
    return _json(report.to_json())


def cron_jobs(request: Request) -> Response:
    check_known(request.query_params, ())
    return _json({"jobs": reads.cron_jobs(ledger_of(request))})


# --- actions ---------------------------------------------------------------------------------------------


def _authorised(request: Request) -> Response | None:
    """None when the request carries the bearer token; else the 401 to answer."""
    if bearer_ok(request.scope, request.app.state.access.token):
        return None
    return JSONResponse({"error": "Actions need the board's token: Authorization: Bearer <token>."},
                        status_code=401, headers={"WWW-Authenticate": 'Bearer realm="flowledger"'})


async def _reason(request: Request) -> str | None:
    body = await request.body()
    if not body.strip():
        return None
    if len(body) > MAX_BODY:
        raise InvalidInputError(f"Request body larger than {MAX_BODY} bytes.")
    try:
        document = json.loads(body)
    except ValueError:
        raise InvalidInputError("Request body must be JSON, for example {\"reason\": \"…\"}.") from None
    reason = document.get("reason") if isinstance(document, dict) else None
    if reason is not None and not isinstance(reason, str):
        raise InvalidInputError("\"reason\" must be a string.")
    return reason


async def cancel_task(request: Request) -> Response:
    if (denied := _authorised(request)) is not None:
        return denied
    lookup, reason = request.path_params["lookup"], await _reason(request)
    ledger = ledger_of(request)
    result = await _in_thread(lambda: ledger.tasks.cancel(lookup, reason))
    if not result.found:
        raise TaskNotFoundError(lookup)
    if not result.cancelled or result.task is None:
        return _json({"error": result.reason or f"Could not cancel task: {lookup}"}, 409)
    done = result.task
    return _json({"message": f"Cancelled {done.task_id} ({done.runtime.value}).", "task": done.to_json()})


async def cancel_flow(request: Request) -> Response:
    if (denied := _authorised(request)) is not None:
        return denied
    lookup = request.path_params["lookup"]
    ledger = ledger_of(request)
    result = await _in_thread(lambda: ledger.flows.cancel(lookup))
    if not result.found:
        raise FlowNotFoundError(lookup)
    if not result.cancelled or result.flow is None:
        return _json({"error": result.reason or f"Could not cancel flow: {lookup}"}, 409)
    done = result.flow
    message = f"Cancelled {done.flow_id} ({done.sync_mode.value}) with status {done.status.value}."
    linked = await _in_thread(lambda: ledger.flows.linked_tasks(done.flow_id))
    return _json({"message": message, "flow": flow_document(done, linked)})


async def retry_flow(request: Request) -> Response:
    """`tasks flow retry --detach`: the flow is queued again and a running gateway drives it (the board runs
    nothing itself). A flow that cannot be retried is refused (409) with the CLI's reason."""
    if (denied := _authorised(request)) is not None:
        return denied
    lookup = request.path_params["lookup"]
    ledger = ledger_of(request)
    plan = await _in_thread(lambda: retry.retry_flow(ledger, lookup))
    queued = plan.flow
    linked = await _in_thread(lambda: ledger.flows.linked_tasks(queued.flow_id))
    message = f"Retrying {queued.flow_id}: {len(plan.to_run)} steps to run, {len(plan.kept)} kept."
    return _json({"message": message, "flow": flow_document(queued, linked)})


async def _in_thread(fn: Callable[[], Any]) -> Any:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn)


def routes(*, allow_actions: bool) -> list[Route]:
    found = [
        Route("/api/status", status),
        Route("/api/tasks", tasks),
        Route("/api/tasks/{lookup}", task),
        Route("/api/tasks/{lookup}/events", task_events),
        Route("/api/tasks/{lookup}/logs", task_logs),
        Route("/api/flows", flows),
        Route("/api/flows/{lookup}", flow),
        Route("/api/audit", audit),
        Route("/api/cron", cron_jobs),
    ]
    if allow_actions:  # without the flag these paths do not exist at all (404), not merely refuse
        found += [
            Route("/api/tasks/{lookup}/cancel", cancel_task, methods=["POST"]),
            Route("/api/flows/{lookup}/cancel", cancel_flow, methods=["POST"]),
            Route("/api/flows/{lookup}/retry", retry_flow, methods=["POST"]),
        ]
    return found
