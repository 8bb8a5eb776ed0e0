"""`flowledger web`: the board (flowledger.web) on a local port; this module only parses the options."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from flowledger.cli.context import app_context


def register(app: typer.Typer) -> None:
    app.command("web")(web_cmd)


def web_cmd(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", metavar="HOST",
                                      help="Address to listen on; a non-loopback one needs FLOWLEDGER_WEB_TOKEN.")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="PORT", min=0, max=65535,
                                      help="TCP port (0 = any free port).")] = 8765,
    allow_actions: Annotated[bool, typer.Option("--allow-actions", help="Enable cancel and retry (POST, with "
                                                                        "the bearer token).")] = False,
) -> None:
    """Serve the web board: flows with their live graphs, tasks, audit, cron, JSON API and /metrics.

    Example: flowledger web --port 9000 --allow-actions
    """
    from flowledger.web.server import serve  # Starlette and uvicorn load only for this command

    config = app_context(ctx)
    code = serve(host=host, port=port, allow_actions=allow_actions, env_token=os.environ.get("FLOWLEDGER_WEB_TOKEN"),
                 state_dir=config.state_dir, database_url=config.database_url)
    raise typer.Exit(code)
