"""Output is a contract: JSON documents on stdout, messages on stderr, text safe for a terminal."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from flowledger.tasks.core.clock import iso_z

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def safe(value: object) -> str:
    """Strip ANSI escapes and escape control characters: user text must not drive the terminal."""
    text = _ANSI.sub("", "" if value is None else str(value))
    return _CONTROL.sub(lambda m: _ESCAPES.get(m.group(0), f"\\x{ord(m.group(0)):02x}"), text)


def cut(value: object, width: int) -> str:
    text = safe(value)
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def when(value: datetime | None) -> str:
    return iso_z(value) or "n/a"


def emit_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def err(line: str) -> None:
    sys.stderr.write(line + "\n")


def table(headers: Sequence[tuple[str, int]], rows: Sequence[Sequence[object]]) -> list[str]:
    """Fixed-width columns joined by single spaces; the last column is free width; lines right-trimmed."""
    def line(cells: Sequence[object]) -> str:
        parts = []
        for index, ((_, width), cell) in enumerate(zip(headers, cells, strict=True)):
            text = safe(cell)
            parts.append(text if index == len(headers) - 1 else cut(text, width).ljust(width))
        return " ".join(parts).rstrip()

    return [line([h for h, _ in headers]), *(line(r) for r in rows)]
