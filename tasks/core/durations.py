"""Duration strings as users type them: `500ms`, `1s`, `5m`, `2h`, `7d`, and combinations such as `1h30m`.

One grammar for every place that takes a duration (flow step timeouts, `run --timeout`, `cron add --every`).
Parts are whole numbers with a unit, largest unit first, each unit at most once. Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from datetime import timedelta

from flowledger.tasks.core.errors import InvalidInputError

# Largest first: the order a combined duration must follow, and the order `format_duration` writes.
_UNITS: tuple[tuple[str, int], ...] = (
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
)
_UNIT_MS = dict(_UNITS)
_UNIT_RANK = {unit: rank for rank, (unit, _) in enumerate(_UNITS)}
_PART = re.compile(r"(\d+)(ms|d|h|m|s)")
_EXAMPLES = "e.g. 500ms, 1s, 5m, 2h, 7d or 1h30m"
# timedelta's own ceiling is 999,999,999 days; stay far below it so arithmetic on the result never overflows.
_MAX_MS = 100 * 365 * 86_400_000


def parse_duration(text: str, *, what: str = "duration", allow_zero: bool = False) -> timedelta:
    """Parse `text` into a timedelta (millisecond precision); raise InvalidInputError with one line otherwise.

    `what` names the value in the message (`timeout`, `--every`…). Zero is refused unless `allow_zero`.
    """
    if not isinstance(text, str):
        raise InvalidInputError(f"Invalid {what} {text!r}: expected a string such as {_EXAMPLES}.")
    cleaned = text.strip().lower()
    if not cleaned:
        raise InvalidInputError(f"Invalid {what} {text!r}: expected {_EXAMPLES}.")
    total_ms = 0
    last_rank = -1
    pos = 0
    while pos < len(cleaned):
        match = _PART.match(cleaned, pos)
        if match is None:
            raise InvalidInputError(f"Invalid {what} {text!r}: expected {_EXAMPLES}.")
        number, unit = match.groups()
        rank = _UNIT_RANK[unit]
        if rank <= last_rank:
            raise InvalidInputError(f"Invalid {what} {text!r}: write units once each, largest first ({_EXAMPLES}).")
        last_rank = rank
        total_ms += int(number) * _UNIT_MS[unit]
        pos = match.end()
    if total_ms > _MAX_MS:
        raise InvalidInputError(f"Invalid {what} {text!r}: longer than 100 years.")
    if total_ms == 0 and not allow_zero:
        raise InvalidInputError(f"Invalid {what} {text!r}: must be longer than zero.")
    return timedelta(milliseconds=total_ms)


def format_duration(value: timedelta) -> str:
    """Compact form that `parse_duration` reads back: `1h2m`, `45s`, `1d3h`, `500ms`, `0s`.

    Sub-millisecond parts are dropped; a negative duration is written with a leading `-`.
    """
    if value < timedelta(0):
        return "-" + format_duration(-value)
    total_ms = (value.days * 86_400 + value.seconds) * 1000 + value.microseconds // 1000
    if total_ms == 0:
        return "0s"
    parts: list[str] = []
    for unit, size in _UNITS:
        count, total_ms = divmod(total_ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
