"""Tables for people (CONTRACT §7): they fit the terminal, show ids people can type back, and never let stored
text drive the terminal.

rich lays the columns out in the console's width (`COLUMNS`, else the terminal's, else 80) and cuts the free
text columns with `…`; the id column is never cut below the shortest prefix unique among the rows shown. Cells
are `Text` objects, so `[bold]` in a summary prints literally, and every cell goes through `render.safe` first.
Colour follows the status, only on a terminal and never with `NO_COLOR` set (rich's own detection).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from flowledger.cli.render import safe
from flowledger.tasks.core.states import TaskStatus

# The shortest id shown: long enough to read as an id and to type back (lookups take ≥ 6 characters).
MIN_ID = 8
STATUS_STYLES = {
    TaskStatus.QUEUED.value: "cyan", TaskStatus.RUNNING.value: "blue", TaskStatus.SUCCEEDED.value: "green",
    TaskStatus.FAILED.value: "red", TaskStatus.TIMED_OUT.value: "red", TaskStatus.CANCELLED.value: "yellow",
    TaskStatus.LOST.value: "magenta", "waiting": "cyan", "blocked": "yellow",
}


def short_ids(ids: Sequence[str], minimum: int = MIN_ID) -> dict[str, str]:
    """Each id -> its shortest prefix (at least `minimum`) that no other id in `ids` shares.

    Sorted neighbours bound the shared prefix: an id's prefix is unique once it is one character longer than
    its longest common prefix with either neighbour. A prefix ending in a separator takes one more character.
    """
    ordered = sorted(set(ids))
    out: dict[str, str] = {}
    for index, value in enumerate(ordered):
        shared = max(_common(value, ordered[index - 1]) if index else 0,
                     _common(value, ordered[index + 1]) if index + 1 < len(ordered) else 0)
        length = max(minimum, shared + 1)
        while length < len(value) and value[length - 1] in "-_.:":
            length += 1
        out[value] = value[:length]
    return out


def _common(a: str, b: str) -> int:
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length


def age(start: datetime | None, now: datetime) -> str:
    """`42s`, `5m`, `3h`, `2d`: how long ago; `-` when unknown."""
    if start is None:
        return "-"
    return span_text((now - start).total_seconds())


def duration(started: datetime | None, ended: datetime | None, now: datetime) -> str:
    """Run time: start to end, or to now while running (`-` when it never started)."""
    if started is None:
        return "-"
    return span_text(((ended or now) - started).total_seconds())


def span_text(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    if seconds < 60:
        return f"{int(seconds)}s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m{int(seconds % 60):02d}s" if minutes < 10 else f"{minutes}m"
    hours = minutes // 60
    if hours < 24:
        return f"{hours}h{minutes % 60:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


@dataclass(frozen=True, slots=True)
class Col:
    header: str
    fixed: bool = True  # shown whole (ids, statuses, times); a free column takes what is left, cut with `…`


GAP = 2  # one space of padding each side of a column boundary
MIN_FREE = 8


def widths(columns: Sequence[Col], rows: Sequence[Sequence[str]], total: int) -> list[int]:
    """Fixed columns as wide as their widest cell; free columns share what is left of `total` (at least
    MIN_FREE each, never wider than their widest cell)."""
    natural = [max([len(col.header)] + [len(row[i]) for row in rows]) for i, col in enumerate(columns)]
    free = [i for i, col in enumerate(columns) if not col.fixed]
    left = total - GAP * (len(columns) - 1) - sum(w for i, w in enumerate(natural) if i not in free)
    out = list(natural)
    for n, index in enumerate(free):
        share = max(MIN_FREE, left // (len(free) - n))
        out[index] = min(natural[index], share)
        left -= out[index]
    return out


def render(columns: Sequence[Col], rows: Sequence[Sequence[str]], *, status_column: int | None = None) -> None:
    """Print the table on stdout in the console's width (`COLUMNS`, the terminal's, else 80)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=sys.stdout, highlight=False, markup=False, emoji=False, soft_wrap=False)
    cells = [[safe(cell) for cell in row] for row in rows]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1), header_style="bold",
                  collapse_padding=True)
    for col, width in zip(columns, widths(columns, cells, console.width), strict=True):
        table.add_column(col.header, no_wrap=True, overflow="ellipsis", width=width)
    for row in cells:
        table.add_row(*(Text(cell, style=STATUS_STYLES.get(cell, "") if index == status_column else "")
                        for index, cell in enumerate(row)))
    with console.capture() as captured:
        console.print(table)
    sys.stdout.write("".join(line.rstrip(" ") + "\n" for line in captured.get().splitlines()))
