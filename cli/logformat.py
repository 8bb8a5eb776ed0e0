"""The gateway's log lines: UTC ISO-8601 times ending in `Z` (as every time the CLI prints), as text for people
or one JSON object per line for log shippers (`flowledger gateway --log-format json`)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

LOG_FORMATS = ("text", "json")


def utc_stamp(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class UtcTextFormatter(logging.Formatter):
    """`2026-12-03T11:15:02.123Z INFO flowledger.scheduler.gateway: message`"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's name)
        return utc_stamp(record.created)


class JsonFormatter(logging.Formatter):
    """`{"ts": "…Z", "level": "info", "logger": "…", "message": "…"}` plus `exc` when there is a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        document = {"ts": utc_stamp(record.created), "level": record.levelname.lower(), "logger": record.name,
                    "message": record.getMessage()}
        if record.exc_info:
            document["exc"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False)


def formatter(kind: str) -> logging.Formatter:
    return JsonFormatter() if kind == "json" else UtcTextFormatter()
