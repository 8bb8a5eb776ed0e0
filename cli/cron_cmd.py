"""`flowledger cron add|list|remove|runs`: jobs persist in the database; a running gateway fires them."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from flowledger.cli.context import app_context
from flowledger.cli.render import emit_json, err, out, table, when
from flowledger.cli.tables import Col, render
from flowledger.tasks.durations import format_duration, parse_duration
from flowledger.tasks.errors import EXIT_NOT_FOUND_OR_REFUSED

if TYPE_CHECKING:
    from flowledger.scheduler import cron

JsonFlag = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]


def register(app: typer.Typer, tasks_app: typer.Typer) -> None:
    _ = tasks_app
    cron_app = typer.Typer(help="Cron jobs: each execution is recorded as a `cron` task.", no_args_is_help=True)
    cron_app.command("add", context_settings={"allow_interspersed_args": False})(add_cmd)
    cron_app.command("list")(list_cmd)
    cron_app.command("remove")(remove_cmd)
    cron_app.command("runs")(runs_cmd)
    app.add_typer(cron_app, name="cron")


def add_cmd(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="Unique job name.")],
    argv: Annotated[list[str] | None, typer.Argument(help="The command, after `--`.", show_default=False)] = None,
    schedule: Annotated[str | None, typer.Option("--schedule", help='5-field cron, e.g. "*/5 * * * *".')] = None,
    every: Annotated[str | None, typer.Option("--every", help="Interval, e.g. 1s, 5m, 2h.")] = None,
    tz: Annotated[str | None, typer.Option("--tz", help="IANA time zone of --schedule (default UTC).")] = None,
    isolated: Annotated[bool, typer.Option("--isolated", help="Each run gets its own session row.")] = False,
    timeout: Annotated[str | None, typer.Option("--timeout", help="Stop a run after this long, e.g. 90s, 2h "
                                                                  "(default 1h).")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Add a cron job."""
    from flowledger.scheduler import cron

    interval = parse_duration(every, what="--every") if every is not None else None
    limit = parse_duration(timeout, what="--timeout") if timeout is not None else None
    ledger = app_context(ctx).ledger()
    job = cron.add_job(ledger, name, argv or [], schedule=schedule, every=interval, tz=tz, isolated=isolated,
                       timeout=limit)
    if json_out:
        emit_json(job.to_json(ledger.clock.now()))
    else:
        out(f"Added cron job {job.name} ({job.job_id}): {cron.format_every(job)}, "
            f"timeout {format_duration(job.effective_timeout)}.")


def list_cmd(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Cron jobs with their next and last runs."""
    from flowledger.scheduler import cron

    ledger = app_context(ctx).ledger()
    now = ledger.clock.now()
    jobs = cron.list_jobs(ledger)
    if json_out:
        emit_json({"jobs": [j.to_json(now) for j in jobs]})
        return
    if not jobs:
        err("No cron jobs.")
        return
    columns = [Col("Name"), Col("Schedule"), Col("Next run"), Col("Last"), Col("Command", fixed=False)]
    rows = [[j.name, cron.format_every(j), _next_text(j, now), j.last_status or "-", j.describe()] for j in jobs]
    render(columns, rows, status_column=3)


def _next_text(job: cron.CronJob, now: datetime) -> str:
    """`2026-12-03T14:00:00.000Z`, and the job's own zone's clock when that is not UTC: `(09:00 -05:00)`."""
    moment = job.next_run_at(now)
    text = when(moment)
    local = job.local_text(moment)
    if local is not None and job.zone != "UTC":
        text += f" ({local[11:16]} {local[19:]})"
    return text


def remove_cmd(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Job name or id.")]) -> None:
    """Remove a cron job (its run records stay)."""
    from flowledger.scheduler import cron

    job = cron.remove_job(app_context(ctx).ledger(), name)
    if job is None:
        err(f"Cron job not found: {name}.")
        raise typer.Exit(EXIT_NOT_FOUND_OR_REFUSED)
    out(f"Removed cron job {job.name} ({job.job_id}).")


def runs_cmd(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Job name or id.")],
             json_out: JsonFlag = False) -> None:
    """The job's executions, newest first, each a `cron` task."""
    from flowledger.scheduler import cron

    ledger = app_context(ctx).ledger()
    job = cron.get_job(ledger, name)
    if job is None:
        err(f"Cron job not found: {name}.")
        raise typer.Exit(EXIT_NOT_FOUND_OR_REFUSED)
    runs = cron.job_runs(ledger, job)
    if json_out:
        emit_json({"job": job.name, "runs": [t.to_json() for t in runs]})
        return
    headers = [("Task ID", 36), ("Status", 10), ("Started", 24), ("Ended", 24), ("Run ID", 0)]
    for line in table(headers, [[t.task_id, t.status.value, when(t.started_at), when(t.ended_at), t.run_id or ""]
                                for t in runs]):
        out(line)
