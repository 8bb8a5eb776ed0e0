"""Options shared by the listing commands, and the parent options that hold for sub-commands (CONTRACT §7).

`flowledger tasks --json show X`, `tasks --runtime cron list`, `tasks --json flow list`: what is given to
`tasks` before the sub-command holds for it (REFERENCE §10), unless the sub-command says otherwise itself.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

JsonFlag = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]
OwnerOpt = Annotated[str | None, typer.Option("--owner", metavar="KEY", help="Only records of this owner key.")]
SinceOpt = Annotated[str | None, typer.Option(
    "--since", metavar="DURATION|ISO",
    help="Created at or after: a duration back from now (30m, 2h, 7d) or an ISO time with a zone.")]
LimitOpt = Annotated[int | None, typer.Option("--limit", metavar="N", help="Show at most N, newest first "
                                                                           "(default 100; 0 = all).")]
OffsetOpt = Annotated[int | None, typer.Option("--offset", metavar="N", help="Skip the newest N matches.")]
FlowOpt = Annotated[str | None, typer.Option("--flow", metavar="FLOW",
                                             help="Only tasks of this flow (flow id, prefix or owner key).")]


def inherited(ctx: typer.Context, name: str, value: Any) -> Any:
    """`value` when the sub-command was given it, else what a parent command was given under `name`."""
    if value not in (None, False):
        return value
    parent = ctx.parent
    while parent is not None:
        given = parent.params.get(name)
        if given not in (None, False):
            return given
        parent = parent.parent
    return value


def wants_json(ctx: typer.Context, json_out: bool) -> bool:
    return bool(inherited(ctx, "json_out", json_out))


def parse_since(raw: str | None, now: datetime | None = None) -> datetime | None:
    """`--since 2h` (back from now) or `--since 2026-12-03T10:00:00Z`; a time without a zone is refused."""
    if raw is None:
        return None
    if now is None:
        from flowledger.tasks.core.clock import SystemClock

        now = SystemClock().now()
    from flowledger.flows.listing import parse_since as parse  # one grammar for the CLI and the web board

    return parse(raw, now)
