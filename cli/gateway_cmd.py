"""Commands registered by this module (filled in by its issue)."""

from __future__ import annotations

import typer


def register(app: typer.Typer, tasks_app: typer.Typer) -> None:
    _ = (app, tasks_app)
