"""Jinja filters: times, durations and short ids as people read them. Values only; escaping stays Jinja's."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import jinja2

from flowledger.tasks.core.clock import iso_z


def when(value: Any) -> str:
    """`2026-03-30 01:00:05Z` from a datetime or an ISO string; `–` for none."""
    if value is None:
        return "–"
    text = iso_z(value) if isinstance(value, datetime) else str(value)
    return (text or "–").replace("T", " ").replace(".000Z", "Z")


def duration(ms: Any) -> str:
    if ms is None:
        return "–"
    value = int(ms)
    if value < 1000:
        return f"{value} ms"
    seconds = value / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def short(value: Any, width: int = 80) -> str:
    text = "" if value is None else " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def install(env: jinja2.Environment) -> None:
    env.filters["when"] = when
    env.filters["duration"] = duration
    env.filters["short"] = short
