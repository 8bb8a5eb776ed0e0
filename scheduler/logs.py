"""Where a task's captured stdout/stderr live: `<state dir>/logs/<task_id>.out|.err`, private to the user.

The file name comes from the task id, which is stored in a database others may write to (a shared PostgreSQL
ledger). Ids are checked where they enter (CONTRACT §7), but the path is built so that it stays inside the logs
directory whatever the stored value is: an id outside the id rule is named by its hash instead.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import BinaryIO

from flowledger.tasks.core.limits import is_safe_id

LOG_FILE_MODE = 0o600


def log_dir(state_dir: Path) -> Path:
    """`<state dir>/logs`, created 0700 (the state dir too, when missing: never with the umask's looser mode)."""
    path = state_dir / "logs"
    if not state_dir.exists():
        state_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def log_name(task_id: str) -> str:
    """The file stem for a task id: the id itself when it obeys the id rule, else `unsafe-<sha256>`."""
    if is_safe_id(task_id):
        return task_id
    return "unsafe-" + hashlib.sha256(task_id.encode("utf-8", "surrogatepass")).hexdigest()


def log_paths(state_dir: Path, task_id: str) -> tuple[Path, Path]:
    base = state_dir / "logs"
    stem = log_name(task_id)
    out, err = base / f"{stem}.out", base / f"{stem}.err"
    # Belt and braces: the stem has no separator, so both files are direct children of `base`.
    assert out.parent == base and err.parent == base
    return out, err


def open_log(path: Path) -> BinaryIO:
    """Open a log file for appending, created 0600 (and tightened if an older run left it looser)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, LOG_FILE_MODE)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, LOG_FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return os.fdopen(fd, "ab")


def tail(path: Path, *, max_bytes: int = 2000, max_lines: int = 10) -> str:
    """The last lines of a file, as text: enough to say why a command failed."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return ""
    lines = data.decode("utf-8", "replace").strip().splitlines()
    return "\n".join(lines[-max_lines:])


def read_since(path: Path, offset: int, *, whole: bool = True) -> tuple[str, int]:
    """The text `path` gained since byte `offset` and the new offset, for readers that follow a log. Unless
    `whole`, a trailing partial line is left for the next call (it is still being written). A log that cannot be
    read (not yet created) yields nothing."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return "", offset
    if not whole:
        data = data[: data.rfind(b"\n") + 1]
    return data.decode("utf-8", "replace"), offset + len(data)
