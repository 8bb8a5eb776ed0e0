"""The `flowledger` console script: the lean read and write paths first (cli/lean.py, cli/lean_writes.py), else the
full typer CLI.

Kept apart from cli/main.py so a command the lean path answers never imports typer, the command modules or
the storage layer: importing cli/main.py alone costs more than the whole lean answer."""

from __future__ import annotations

import logging
import sys

from flowledger.cli.lean import run_lean
from flowledger.cli.lean_writes import run_lean_write
from flowledger.cli.render import LOG_FORMAT, decodable, tolerant_output


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    tolerant_output()
    argv = decodable(sys.argv[1:])
    answered = run_lean(argv)
    if answered is None:
        answered = run_lean_write(argv)
    if answered is not None:
        sys.exit(answered)
    from flowledger.cli.main import run

    sys.exit(run(lean=False))


if __name__ == "__main__":
    main()
