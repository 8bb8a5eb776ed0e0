"""Fixtures for the end-to-end tests: real gateway processes (see gateway_support.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from flowledger.tasks.core.tables import METADATA

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from gateway_support import GatewayProc  # noqa: E402


@pytest.fixture
def gateways() -> Iterator[Callable[..., GatewayProc]]:
    started: list[GatewayProc] = []

    def start(state_dir: Path, database_url: str, **kwargs: Any) -> GatewayProc:
        gw = GatewayProc(state_dir, database_url, name=f"gw{len(started)}", **kwargs)
        started.append(gw)
        gw.wait_ready()
        return gw

    yield start
    for gw in started:
        if gw.proc.poll() is None:
            gw.kill()


@pytest.fixture
def clean_pg(pg_url: str) -> str:
    engine = create_engine(pg_url)
    try:
        with engine.begin() as conn:
            existing = [t for t in METADATA.sorted_tables if conn.dialect.has_table(conn, t.name)]
            if existing:
                conn.execute(text(f"TRUNCATE {', '.join(chr(34) + t.name + chr(34) for t in existing)} "
                                  "RESTART IDENTITY"))
            # Advisory locks held by gateways of earlier tests die with their connections; nothing to do.
    finally:
        engine.dispose()
    return pg_url


