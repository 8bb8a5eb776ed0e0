"""The board as one Starlette app: pages for people, `/api/…` for programs, `/metrics`, `/healthz`.

Every error is one line: the CLI's message with the HTTP status of its exit code (2 usage → 400, lookup miss →
404, refused → 409, storage unavailable → 503), as `{"error": …}` under `/api/` and as an error page elsewhere.
Handlers are plain functions: Starlette runs them in its thread pool, next to the blocking database calls.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from flowledger.tasks.core.errors import EXIT_STORAGE, EXIT_USAGE, AmbiguousLookupError, FlowledgerError
from flowledger.web import api, filters, pages
from flowledger.web.metrics import CONTENT_TYPE, registry_for, scrape
from flowledger.web.security import Access, ReadGuard, SecurityHeaders
from flowledger.web.source import LedgerSource

log = logging.getLogger(__name__)
HERE = Path(__file__).parent


def http_status(exc: FlowledgerError) -> int:
    if exc.exit_code == EXIT_USAGE:
        return 400
    if exc.exit_code == EXIT_STORAGE:
        return 503
    if isinstance(exc, LookupError):
        return 404
    return 409


def wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path == "/metrics"


def error_response(request: Request, status: int, message: str, **extra: Any) -> Response:
    if wants_json(request):
        return JSONResponse({"error": message, **extra}, status_code=status)
    templates: Jinja2Templates = request.app.state.templates
    context = {"status": status, "message": message, "nav": "error",
               "allow_actions": request.app.state.access.allow_actions}
    return templates.TemplateResponse(request, "error.html", context, status_code=status)


async def on_flowledger_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FlowledgerError)
    status = http_status(exc)
    if status == 503:
        log.warning("%s %s: %s", request.method, request.url.path, exc.message)
    if isinstance(exc, AmbiguousLookupError):  # what the CLI lists on stderr, the API gives as data
        return error_response(request, status, exc.message, candidates=exc.candidates)
    return error_response(request, status, exc.message)


async def on_not_found(request: Request, exc: Exception) -> Response:
    status = int(getattr(exc, "status_code", 404))
    message = "Not found." if status == 404 else str(getattr(exc, "detail", "")) or "Request refused."
    return error_response(request, status, message)


def metrics_endpoint(request: Request) -> Response:
    return Response(scrape(request.app.state.registry), media_type=CONTENT_TYPE)


def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


def make_templates() -> Jinja2Templates:
    # autoescape everything, SVG included: task texts, goals and step ids come from untrusted programs
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    filters.install(env)
    return Jinja2Templates(env=env)


def build_app(source: LedgerSource, access: Access) -> Starlette:
    routes = [
        *api.routes(allow_actions=access.allow_actions),
        Route("/metrics", metrics_endpoint),
        Route("/healthz", healthz),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        *pages.routes(),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders), Middleware(ReadGuard, access=access)],
        exception_handlers={FlowledgerError: on_flowledger_error, 404: on_not_found, 405: on_not_found},
    )
    app.state.source = source
    app.state.access = access
    app.state.templates = make_templates()
    app.state.registry = registry_for(source)
    return app
