"""What flowledger keeps private on disk: the state dir and the database's directory `0700` (any parents it
creates too), database files `0600`, and one start-up warning when something loosened them.

Only directories flowledger owns are judged: a database the user put elsewhere (say /tmp) says nothing about
its directory, only its file is kept private. The checks run once the database opened, so a failed open prints
its one error line and nothing else (issue 12 item 13).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import warnings
from pathlib import Path

from flowledger.tasks.core.errors import StorageUnavailableError

log = logging.getLogger("flowledger.tasks.core.db")  # the name operators already filter on


def make_private_dir(path: Path, *, required: bool) -> None:
    """Create `path` 0700 with any missing parents 0700 too (mkdir's `mode` applies to the last one only).

    `required`: failing is fatal (the database's own directory); the state dir itself holds logs and config
    only, so a command that needs neither still runs where it cannot be created (logs say so when needed)."""
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    try:
        for directory in reversed(missing):
            directory.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        if required:
            raise StorageUnavailableError(f"Storage unavailable: cannot create {path}: {exc.strerror}") from exc
        log.debug("state dir %s not created: %s", path, exc)


def prepare_sqlite_file(path: Path) -> None:
    make_private_dir(path.parent, required=True)
    if not path.exists():
        # Create the file 0600 before SQLite does, so it is never briefly world-readable.
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def check_private(state_dir: Path | None, sqlite_path: Path | None) -> None:
    """Warn about our directories found looser than 0700; tighten database files found looser than 0600."""
    for directory in _own_directories(state_dir, sqlite_path):
        with contextlib.suppress(OSError):
            mode = stat.S_IMODE(directory.stat().st_mode)
            if mode & 0o077:
                log.warning("%s is accessible by others (mode %o); flowledger expects 0700", directory, mode)
    if sqlite_path is None:
        return
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{sqlite_path}{suffix}")
        with contextlib.suppress(FileNotFoundError):
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                try:
                    path.chmod(0o600)
                except OSError:
                    warnings.warn(f"{path} is readable by others (mode {mode:o})", stacklevel=3)
                else:  # say so at start-up: something (a copy, a restore) loosened it while we were away
                    log.warning("%s was readable by others (mode %o); tightened to 0600", path, mode)


def _own_directories(state_dir: Path | None, sqlite_path: Path | None) -> list[Path]:
    if state_dir is None:
        return []
    found = [state_dir]
    if sqlite_path is not None and sqlite_path.parent.is_relative_to(state_dir) and sqlite_path.parent != state_dir:
        found.append(sqlite_path.parent)
    return found
