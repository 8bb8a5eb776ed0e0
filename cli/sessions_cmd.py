"""`flowledger sessions events <session key> [--drain] [--json]`: a session's queued system events."""

from __future__ import annotations

from typing import Annotated

import typer

from flowledger.cli.context import app_context
from flowledger.cli.render import emit_json, err, out, safe, when
from flowledger.tasks.session_events import SessionEvents


def register(app: typer.Typer, tasks_app: typer.Typer) -> None:
    _ = tasks_app
    sessions_app = typer.Typer(help="Inspect sessions: their queued system events.", no_args_is_help=True)
    app.add_typer(sessions_app, name="sessions")

    @sessions_app.command("events")
    def events_cmd(
        ctx: typer.Context,
        session_key: Annotated[str, typer.Argument(help="The session key, e.g. agent:main:main.")],
        drain: Annotated[bool, typer.Option("--drain", help="Remove the events shown.")] = False,
        json_out: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
    ) -> None:
        """Events queued for a session (delivery fallbacks, blocked follow-ups), oldest first."""
        ledger = app_context(ctx).ledger()
        queue = SessionEvents(ledger.db, ledger.clock)
        key = session_key.strip()
        events = queue.drain(key) if drain else queue.list(key)
        if json_out:
            emit_json({"session_key": key, "events": [e.to_json() for e in events]})
            return
        if not events:
            err(f"No queued system events for {safe(key)}.")
            return
        for event in events:
            out(f"{when(event.created_at)}  {safe(event.context_key)}  {safe(event.text)}")
        if drain:
            err(f"Drained {len(events)} event(s) from {safe(key)}.")
