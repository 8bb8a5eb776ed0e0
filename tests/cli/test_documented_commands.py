"""Every command line the docs show, and every `Example:` in `--help`, parses and runs against a scratch ledger:
a lookup miss (exit 1) or the command's own exit status is fine, a usage error (2), a storage error (3) or a
traceback means the docs and the CLI have drifted apart."""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from flowledger import Ledger
from flowledger.cli.main import app, run

DOCS = Path(__file__).resolve().parents[2] / "docs"
# Commands that serve until stopped: their examples are checked for parsing only (`--help` appended).
LONG_RUNNING = {"gateway", "web"}


def _doc_lines() -> list[str]:
    found = []
    for page in sorted(DOCS.glob("*.md")):
        for line in page.read_text(encoding="utf-8").splitlines():
            if line.startswith("$ flowledger "):
                found.append(line[2:].split("  #")[0].strip())
    return found


def _help_examples() -> list[str]:
    found: list[str] = []

    def walk(command: Any) -> None:
        for match in re.finditer(r"Example: (flowledger [^\n]+)", command.help or ""):
            found.append(match.group(1).strip())
        if hasattr(command, "commands"):
            for sub in command.commands.values():
                walk(sub)

    walk(typer.main.get_command(app))
    return found


def test_every_command_has_an_example() -> None:
    missing = []

    def walk(command: Any, path: str) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, f"{path} {name}")
        elif "Example: flowledger" not in (command.help or ""):
            missing.append(path.strip())

    walk(typer.main.get_command(app), "")
    assert missing == []


@pytest.mark.parametrize("line", _doc_lines() + _help_examples())
def test_documented_command_runs(line: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # The docs assume the venv is active: `python3` in an example is the one flowledger is installed in.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    state = tmp_path / "state"
    Ledger.open(state_dir=state).close()
    argv = shlex.split(line)[1:]
    if argv[0] in LONG_RUNNING:
        argv.append("--help")
    code = run(["--state-dir", str(state), *argv])
    err = capsys.readouterr().err
    assert code not in (2, 3), (line, err)
    assert "Traceback" not in err and "internal error" not in err, (line, err)
