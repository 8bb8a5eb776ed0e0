"""`flowledger cron add|list|remove|runs`: jobs persist in the database; a running gateway fires them."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from flowledger.cli.context import app_context
from flowledger.cli.render import emit_json, err, out, safe, table, when
from flowledger.cli.run_result import exit_code_of
from flowledger.cli.tables import Col, render
from flowledger.tasks.core.durations import format_duration, parse_duration
from flowledger.tasks.core.errors import EXIT_NOT_FOUND_OR_REFUSED

if TYPE_CHECKING:
    from flowledger.flows.ledger import Ledger
    from flowledger.scheduler import cron
    from flowledger.tasks.core.models import Task

JsonFlag = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]


def register(app: typer.Typer, tasks_app: typer.Typer) -> None:
    _ = tasks_app
    cron_app = typer.Typer(help="Cron jobs: each execution is recorded as a `cron` task.", no_args_is_help=True)
    cron_app.command("add", context_settings={"allow_interspersed_args": False})(add_cmd)
    cron_app.command("list")(list_cmd)
    cron_app.command("remove")(remove_cmd)
    cron_app.command("runs")(runs_cmd)
    cron_app.command("pause")(pause_cmd)
    cron_app.command("resume")(resume_cmd)
    cron_app.command("trigger")(trigger_cmd)
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
    """Add a cron job.

    Example: flowledger cron add --name nightly --schedule "0 3 * * *" --timeout 30m -- ./backup.sh
    """
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
    """Cron jobs with their next and last runs.

    Example: flowledger cron list --json
    """
    from flowledger.scheduler import cron, cron_control

    ledger = app_context(ctx).ledger()
    now = ledger.clock.now()
    jobs = cron.list_jobs(ledger)
    paused = cron_control.paused_at(ledger)
    if json_out:
        emit_json({"jobs": [{**j.to_json(now), "paused": j.job_id in paused} for j in jobs]})
        return
    if not jobs:
        err("No cron jobs.")
        return
    columns = [Col("Name"), Col("Schedule"), Col("Timeout"), Col("Next run"), Col("Last"),
               Col("Command", fixed=False)]
    rows = [[j.name, cron.format_every(j), format_duration(j.effective_timeout),
             "paused" if j.job_id in paused else _next_text(j, now), j.last_status or "-", j.describe()]
            for j in jobs]
    render(columns, rows, status_column=3)


JobName = Annotated[str, typer.Argument(metavar="NAME", help="Job name or id.", show_default=False)]


def pause_cmd(ctx: typer.Context, name: JobName) -> None:
    """Stop scheduling a job (it stays defined; a running gateway unloads it within 5 s).

    Example: flowledger cron pause nightly-digest
    """
    from flowledger.scheduler import cron_control

    ledger = app_context(ctx).ledger()
    job = _require_job(ledger, name)
    changed = cron_control.set_paused(ledger, job.job_id, True)
    out(f"Paused cron job {job.name}." if changed else f"Cron job {job.name} is already paused.")


def resume_cmd(ctx: typer.Context, name: JobName) -> None:
    """Schedule a paused job again from its next due time.

    Example: flowledger cron resume nightly-digest
    """
    from flowledger.scheduler import cron_control

    ledger = app_context(ctx).ledger()
    job = _require_job(ledger, name)
    changed = cron_control.set_paused(ledger, job.job_id, False)
    out(f"Resumed cron job {job.name}." if changed else f"Cron job {job.name} is not paused.")


def trigger_cmd(ctx: typer.Context, name: JobName) -> None:
    """Run a job once now, recorded like any run: by the running gateway, else in this process (exits as the
    run did: 0, the command's code, 124 timed out).

    Example: flowledger cron trigger nightly-digest
    """
    from flowledger.scheduler import cron_control
    from flowledger.scheduler.lease import gateway_running

    ledger = app_context(ctx).ledger()
    job = _require_job(ledger, name)
    if gateway_running(ledger):
        cron_control.request_trigger(ledger, job.job_id)
        out(f"Triggered cron job {job.name}: the running gateway starts it within 5 s "
            f"(flowledger cron runs {job.name}).")
        return
    task = _run_here(ledger, job)
    if task is None:
        err(f"Cron job not found: {safe(name)}.")
        raise typer.Exit(EXIT_NOT_FOUND_OR_REFUSED)
    out(f"Ran cron job {job.name} as task {task.task_id}: {task.status.value}.")
    code = exit_code_of(task)
    if code:
        raise typer.Exit(code)


def _run_here(ledger: Ledger, job: cron.CronJob) -> Task | None:
    from flowledger.scheduler.lease import LeaseKeeper, new_gateway_id
    from flowledger.scheduler.runtimes.cron import CronRunner

    runner_id = new_gateway_id("run")  # a short-lived lease backs the run while it lasts, as for `run`
    lease = LeaseKeeper(ledger, runner_id)
    lease.start()
    try:
        return CronRunner(ledger, runner_id).run_job(job.job_id)
    finally:
        lease.stop(release=True)


def _require_job(ledger: Ledger, name: str) -> cron.CronJob:
    from flowledger.scheduler import cron

    job = cron.get_job(ledger, name)
    if job is None:
        err(f"Cron job not found: {safe(name)}.")
        raise typer.Exit(EXIT_NOT_FOUND_OR_REFUSED)
    return job


def _next_text(job: cron.CronJob, now: datetime) -> str:
    """`2026-12-03T14:00:00.000Z`, and the job's own zone's clock when that is not UTC: `(09:00 -05:00)`."""
    moment = job.next_run_at(now)
    text = when(moment)
    local = job.local_text(moment)
    if local is not None and job.zone != "UTC":
        text += f" ({local[11:16]} {local[19:]})"
    return text


def remove_cmd(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Job name or id.")]) -> None:
    """Remove a cron job (its run records stay).

    Example: flowledger cron remove nightly-digest
    """
    from flowledger.scheduler import cron, cron_control

    ledger = app_context(ctx).ledger()
    job = cron.remove_job(ledger, name)
    if job is None:
        err(f"Cron job not found: {safe(name)}.")
        raise typer.Exit(EXIT_NOT_FOUND_OR_REFUSED)
    cron_control.forget(ledger, job.job_id)
    out(f"Removed cron job {job.name} ({job.job_id}).")


def runs_cmd(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Job name or id.")],
             json_out: JsonFlag = False) -> None:
    """The job's executions, newest first, each a `cron` task.

    Example: flowledger cron runs nightly
    """
    from flowledger.scheduler import cron

    ledger = app_context(ctx).ledger()
    job = cron.get_job(ledger, name)
    if job is None:
        err(f"Cron job not found: {safe(name)}.")
        raise typer.Exit(EXIT_NOT_FOUND_OR_REFUSED)
    runs = cron.job_runs(ledger, job)
    if json_out:
        emit_json({"job": job.name, "runs": [t.to_json() for t in runs]})
        return
    headers = [("Task ID", 36), ("Status", 10), ("Started", 24), ("Ended", 24), ("Run ID", 0)]
    for line in table(headers, [[t.task_id, t.status.value, when(t.started_at), when(t.ended_at), t.run_id or ""]
                                for t in runs]):
        out(line)
