"""Where a task's captured stdout/stderr live: `<state dir>/logs/<task_id>.out|.err`."""

from __future__ import annotations

from pathlib import Path


def log_dir(state_dir: Path) -> Path:
    path = state_dir / "logs"
    path.mkdir(parents=True, mode=0o700, exist_ok=True)
    return path


def log_paths(state_dir: Path, task_id: str) -> tuple[Path, Path]:
    base = state_dir / "logs"
    return base / f"{task_id}.out", base / f"{task_id}.err"


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
