"""The limits of CONTRACT §7 "Limits", the same on every engine and checked before the database.

Values a caller chooses (ids, task text, goals, labels, session keys) are refused when they break a limit
(`InvalidInputError`, exit 2): refusing is honest, and a caller can shorten its own input. Text that programs produce
(summaries, errors, progress) is not the caller's to shorten: it is cut, ending `…[truncated]`, and a NUL in it
is shown as `\\x00` rather than failing the task that printed it.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from typing import Any

from flowledger.tasks.core.errors import InvalidInputError

MAX_ID_CHARS = 128
MAX_TASK_TEXT_BYTES = 64 * 1024  # task text and flow goals
MAX_LABEL_CHARS = 256
MAX_SESSION_KEY_CHARS = 512
MAX_PROGRAM_TEXT_BYTES = 16 * 1024  # summaries, errors, progress
TRUNCATED = "…[truncated]"
# Counts a user gives (--limit, --offset): beyond any ledger, and within every engine's 64-bit integers.
MAX_COUNT = 10**12
MAX_FILE_BYTES = 1024 * 1024  # flow files and config.toml
MAX_NESTING = 32

# Letters, digits and `-_.:` — never a path separator, so an id can name a file inside a directory.
_ID = re.compile(r"[A-Za-z0-9_.:-]+")


def is_safe_id(value: str) -> bool:
    """Whether `value` obeys the id rule: the charset, the length, and not `.`/`..`."""
    return (len(value) <= MAX_ID_CHARS and _ID.fullmatch(value) is not None
            and value.strip(".") != "")


def check_id(value: str | None, what: str) -> str | None:
    """`value` (already trimmed) when it is a valid id, None when absent; else InvalidInputError naming `what`."""
    if value is None:
        return None
    if not is_safe_id(value):
        shown = value if len(value) <= 40 else value[:40] + "…"
        raise InvalidInputError(f"Invalid {what} {shown!r}: use at most {MAX_ID_CHARS} letters, digits and -_.: "
                           "(no paths).")
    return value


def check_text(value: str | None, what: str, *, max_bytes: int = MAX_TASK_TEXT_BYTES) -> str | None:
    """Caller text (task text, a goal) within `max_bytes` of UTF-8, else InvalidInputError."""
    if value is not None and not _fits(value, max_bytes):
        raise InvalidInputError(f"{what} is too long: at most {max_bytes // 1024} KiB.")
    return value


def check_chars(value: str | None, what: str, max_chars: int) -> str | None:
    """A label, a session key, an owner key: at most `max_chars` characters, else InvalidInputError."""
    if value is not None and len(value) > max_chars:
        raise InvalidInputError(f"{what} is too long: at most {max_chars} characters.")
    return value


def check_session_key(value: str | None, what: str = "Session key") -> str | None:
    return check_chars(value, what, MAX_SESSION_KEY_CHARS)


def check_label(value: str | None) -> str | None:
    return check_chars(value, "Label", MAX_LABEL_CHARS)


def program_text(value: str | None) -> str | None:
    """Text a program produced, made storable: NUL shown as `\\x00`, longer than 16 KiB cut (CONTRACT §7)."""
    if value is None:
        return None
    if "\x00" in value:
        value = value.replace("\x00", "\\x00")
    if _fits(value, MAX_PROGRAM_TEXT_BYTES):
        return value
    room = MAX_PROGRAM_TEXT_BYTES - len(TRUNCATED.encode("utf-8"))
    head = value.encode("utf-8", "surrogatepass")[:room].decode("utf-8", "ignore")
    return head + TRUNCATED


def escape_undecodable(value: str) -> str:
    """Bytes that were not UTF-8 (kept by Python as lone surrogates, e.g. in argv) written as `\\xNN`.

    Such a str cannot be encoded for the database, a JSON document or a strict terminal; escaped, it can be
    shown and stored, and a lookup made of it simply finds nothing."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") \
            if _only_escapes(value) else value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _only_escapes(value: str) -> bool:
    """Whether every surrogate in `value` is one surrogateescape made (U+DC80..U+DCFF)."""
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in value)


def _fits(value: str, max_bytes: int) -> bool:
    """Whether `value` takes at most `max_bytes` as UTF-8; most texts are decided without encoding them."""
    if len(value) * 4 <= max_bytes:
        return True
    if len(value) > max_bytes:
        return False
    return len(value.encode("utf-8", "surrogatepass")) <= max_bytes


# --- files a user points us at: flow files and config.toml ---------------------------------------------------


def read_regular_file(path: str | os.PathLike[str], *, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most `max_bytes`; InvalidInputError (a short reason) for anything else.

    Opened non-blocking and checked on the open descriptor: a FIFO would block the open (and every command with
    it) and `/dev/zero` would be read forever; neither is a file a user meant. OSError passes through.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInputError("not a regular file")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InvalidInputError(f"larger than {max_bytes // 1024} KiB")
    return data


def load_toml(text: str) -> dict[str, Any]:
    """tomllib.loads, refusing documents nested deeper than MAX_NESTING (InvalidInputError, a short reason).

    tomllib recurses once per level of inline arrays and tables, so a deep enough document ends in RecursionError;
    dotted table headers nest without recursing. Both are refused with the same reason. TOMLDecodeError passes.
    """
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise InvalidInputError(f"nested deeper than {MAX_NESTING} levels") from None
    if _depth(data) > MAX_NESTING:
        raise InvalidInputError(f"nested deeper than {MAX_NESTING} levels")
    return data


def _depth(document: Any) -> int:
    """Levels of tables and arrays below the root (`a = 1` is 0, `[a]` is 1), walked without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(document, 0)]
    while stack:
        value, level = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if level > MAX_NESTING:
            return level
        stack.extend((child, level + 1) for child in children)
    return deepest

