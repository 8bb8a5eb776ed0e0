"""`flowledger sessions events <session key> [--drain] [--json]`: a session's queued system events;
`flowledger sessions route <session key> [--channel C --to T [--account A] [--thread X]] [--json]`: its stored
chat route; `flowledger sessions ack <session key> <task> <item…>`: generated media the session received."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from flowledger.cli.context import app_context
from flowledger.cli.render import emit_json, err, out, safe, when
from flowledger.tasks.core.errors import InvalidInputError

if TYPE_CHECKING:
    from flowledger.tasks.core.models import DeliveryOrigin


def register(app: typer.Typer, tasks_app: typer.Typer) -> None:
    sessions_app = typer.Typer(help="Inspect sessions: their queued system events and stored routes.",
                               no_args_is_help=True)
    app.add_typer(sessions_app, name="sessions")

    @sessions_app.command("events")
    def events_cmd(
        ctx: typer.Context,
        session_key: Annotated[str, typer.Argument(help="The session key, e.g. agent:main:main.")],
        drain: Annotated[bool, typer.Option("--drain", help="Remove the events shown.")] = False,
        json_out: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
    ) -> None:
        """Events queued for a session (delivery fallbacks, blocked follow-ups), oldest first.

        Example: flowledger sessions events agent:main:main --drain
        """
        from flowledger.tasks.sessions.events import SessionEvents  # SQLAlchemy: only when the command runs

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

    @sessions_app.command("route")
    def route_cmd(
        ctx: typer.Context,
        session_key: Annotated[str, typer.Argument(help="The session key, e.g. agent:main:main.")],
        channel: Annotated[str | None, typer.Option("--channel", help="Set the route: the channel name.")] = None,
        to: Annotated[str | None, typer.Option("--to", help="Set the route: the target on that channel.")] = None,
        account: Annotated[str | None, typer.Option("--account", help="Set the route: the account id.")] = None,
        thread: Annotated[str | None, typer.Option("--thread", help="Set the route: the thread/topic id.")] = None,
        json_out: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
    ) -> None:
        """The session's stored chat route, which fills a sub-agent completion's missing `to`/account.
        With --channel and --to, set it first.

        Example: flowledger sessions route agent:main:main
        """
        setting = any(value is not None for value in (channel, to, account, thread))
        if setting and (channel is None or to is None):
            raise InvalidInputError("Setting a route needs both --channel and --to.")
        ledger = app_context(ctx).ledger()
        key = session_key.strip()
        route: DeliveryOrigin | None
        if setting:
            route = ledger.sessions.record_route(key, channel=channel or "", to=to or "", account_id=account,
                                                 thread_id=thread)
        else:
            route = ledger.sessions.route(key)
        if json_out:
            emit_json({"session_key": key, "route": route.to_json() if route else None})
        elif route is None:
            err(f"No stored route for {safe(key)}.")
        else:
            if setting:
                out(f"Updated {safe(key)} route.")
            out(f"channel: {safe(route.channel)}")
            out(f"to: {safe(route.to)}")
            out(f"accountId: {safe(route.account_id or 'n/a')}")
            out(f"threadId: {safe(route.thread_id or 'n/a')}")

    @sessions_app.command("ack")
    def ack_cmd(
        ctx: typer.Context,
        session_key: Annotated[str, typer.Argument(help="The session that received the items.")],
        task: Annotated[str, typer.Argument(help="The generation job: task id or run id.")],
        items: Annotated[list[str], typer.Argument(help="The paths or URLs the session received.")],
        json_out: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
    ) -> None:
        """Acknowledge generated media: a direct fallback message never carries these items (CONTRACT §7).

        Example: flowledger sessions ack agent:main:main 01a23b43-5c fox.png
        """
        ledger = app_context(ctx).ledger()
        acked = ledger.sessions.ack_media(session_key, task, items)
        if json_out:
            emit_json({"session_key": session_key.strip(), "task": task.strip(), "acknowledged": acked})
        else:
            out(f"Acknowledged {acked} item(s) of {safe(task.strip())} for {safe(session_key.strip())}.")
