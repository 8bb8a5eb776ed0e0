"""The `flowledger` command: one root callback builds the configuration; command modules register."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from flowledger.cli import flow_cmd, gateway_cmd, health_cmd, helpstyle, sessions_cmd, tasks_cmd, web_cmd
from flowledger.cli.context import AppContext
from flowledger.cli.lean import run_lean
from flowledger.cli.lean_writes import run_lean_write
from flowledger.cli.render import LOG_FORMAT, decodable, err, internal_error, safe, tolerant_output
from flowledger.tasks.core.errors import EXIT_NOT_FOUND_OR_REFUSED, EXIT_USAGE, FlowledgerError

helpstyle.install()
app = typer.Typer(
    name="flowledger",
    help="A durable ledger of background work, and Task Flow on top of it.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish and PowerShell
    pretty_exceptions_enable=False,
    # Plain click help: rich's help renderer (rich + markdown-it) costs ~0.1 s of start-up on every `--help`.
    rich_markup_mode=None,
)
tasks_app = tasks_cmd.build()
app.add_typer(tasks_app, name="tasks")
flow_cmd.register(app, tasks_app)
health_cmd.register(app, tasks_app)
sessions_cmd.register(app, tasks_app)
gateway_cmd.register(app, tasks_app)
web_cmd.register(app)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("flowledger")
        except PackageNotFoundError:  # run from a source tree without installing
            text = "unknown"
        sys.stdout.write(f"flowledger {text}\n")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    state_dir: Annotated[str | None, typer.Option("--state-dir", metavar="DIR",
                                                  help="State directory (env FLOWLEDGER_STATE_DIR).",
                                                  show_default="~/.flowledger")] = None,
    database_url: Annotated[str | None, typer.Option("--database-url", metavar="URL",
                                                     help="Database URL (env FLOWLEDGER_DATABASE_URL).")] = None,
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="Print `flowledger <version>` and exit.")] = False,
) -> None:
    """A durable ledger of background work, and Task Flow on top of it.

    Example: flowledger --state-dir ~/.flowledger tasks list --since 1h
    """
    context = AppContext(state_dir=state_dir, database_url=database_url)
    ctx.obj = context
    ctx.call_on_close(context.close)


def run(argv: list[str] | None = None, *, lean: bool = True) -> int:
    """Entry point: every failure becomes one line on stderr and a documented exit code (CONTRACT §3).

    The read commands operators run all day are answered by the lean path first (cli/lean.py) when it can;
    `lean=False` when the caller already tried it (cli/entry.py)."""
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    tolerant_output()
    if lean:
        lean_argv = decodable(sys.argv[1:] if argv is None else argv)
        answered = run_lean(lean_argv)
        if answered is None:
            answered = run_lean_write(lean_argv)
        if answered is not None:
            return answered
    command = typer.main.get_command(app)
    try:
        args = decodable(sys.argv[1:] if argv is None else argv)
        result = command.main(args=args, prog_name="flowledger", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        err("Aborted.")
        return 130
    except typer.TyperException as exc:  # click's usage errors (exit 2) and other click exceptions
        code = int(getattr(exc, "exit_code", EXIT_USAGE))
        if type(exc).__name__ == "NoArgsIsHelpError":
            err(exc.format_message())
            return EXIT_USAGE
        err(f"flowledger: error: {safe(_one_line(exc.format_message()))}")
        return code
    except FlowledgerError as exc:
        err(safe(exc.message))  # messages echo user input (a lookup, a path): never let it drive the terminal
        for line in exc.details:
            err(safe(line))
        return exc.exit_code
    except KeyboardInterrupt:
        err("Interrupted.")
        return 130
    except Exception as exc:  # never a traceback: one line, and the details at debug level
        logging.getLogger(__name__).debug("unexpected error", exc_info=True)
        err(internal_error(exc))
        return EXIT_NOT_FOUND_OR_REFUSED
    return int(result) if isinstance(result, int) else 0


def _one_line(message: str) -> str:
    return " ".join(message.split())


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
