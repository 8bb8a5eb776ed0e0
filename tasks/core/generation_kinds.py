"""Which tasks are generation jobs (tasks/core/generation.py): the tools and the test, without the SQL.

Kept apart so the pure backing rules (tasks/health/backing.py) can tell a generation job without importing the
storage layer: the lean read path (tasks/health/sqlite_reads.py) judges with the same rules and no SQLAlchemy.
"""

from __future__ import annotations

from flowledger.tasks.core.models import Task
from flowledger.tasks.core.states import Runtime, ScopeKind

IMAGE = "image_generate"
MUSIC = "music_generate"
VIDEO = "video_generate"
TOOLS = (IMAGE, MUSIC, VIDEO)


def is_generation(task: Task) -> bool:
    return task.runtime == Runtime.CLI and task.task_kind in TOOLS and task.scope_kind == ScopeKind.SESSION
