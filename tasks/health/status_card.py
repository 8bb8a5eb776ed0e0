"""The status card of one session (`/status` and `session_status` in the reference; REFERENCE §8, CONTRACT §7).

One line, `📌 Tasks: <headline> · <runtime> · <title> · <detail>`, built from the same cleanup-aware snapshot as
the `/tasks` board (tasks/health/board.py): rows whose cleanup is due are dropped, active tasks come first, terminal
rows show only while recent (ended within 5 minutes), and a recent failure leads only when nothing is active. The
headline is `N active · M total`, `K recent failure(s)` or `recently finished`. With nothing linked to the session
the card falls back to the agent's counts (`A active · T total · agent-local`), never another session's details.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flowledger.tasks.core.models import Task
from flowledger.tasks.core.sessionkeys import parse_agent_id, required_key
from flowledger.tasks.core.states import ACTIVE, FAILURES
from flowledger.tasks.health import board

if TYPE_CHECKING:
    from flowledger.tasks.core.service import TaskService

PIN = "📌"
PIN_FALLBACK = "*"  # for a stdout that cannot encode the pin
SEPARATOR = " · "


@dataclass(frozen=True, slots=True)
class StatusCard:
    session_key: str
    text: str  # without the leading pin: the renderer chooses it for its stdout
    focus: Task | None
    active: int
    recent_failures: int

    @property
    def card(self) -> str:
        return f"{PIN} {self.text}"

    def line(self, encoding: str | None) -> str:
        """The card as a stdout with `encoding` can print it: `* ` for the pin, `?` for anything else it lacks."""
        enc = encoding or "utf-8"
        try:
            PIN.encode(enc)
        except (UnicodeEncodeError, LookupError):
            return f"{PIN_FALLBACK} {self.text}".encode(enc, "replace").decode(enc)
        return self.card.encode(enc, "replace").decode(enc)

    def to_json(self) -> dict[str, Any]:
        return {"session_key": self.session_key, "card": self.card,
                "focus": self.focus.to_json() if self.focus else None, "active": self.active,
                "recent_failures": self.recent_failures}


def build(session_key: str, tasks: Sequence[Task], now: datetime, *, agent_tasks: Sequence[Task] = ()) -> StatusCard:
    """The card of `session_key` from its linked tasks (newest first); `agent_tasks` feeds only the fallback counts."""
    snap = board.snapshot(tasks, now)
    failures = sum(t.status in FAILURES for t in snap.visible)
    if snap.focus is None:
        kept = [t for t in agent_tasks if t.cleanup_after is None or t.cleanup_after > now]
        active = sum(t.status in ACTIVE for t in kept)
        return StatusCard(session_key, f"Tasks: {active} active · {len(kept)} total · agent-local", None, 0, 0)
    if snap.active:
        headline = f"{len(snap.active)} active · {len(snap.visible)} total"
    elif failures:
        headline = f"{failures} recent failure{'s' if failures != 1 else ''}"
    else:
        headline = "recently finished"
    focus = snap.focus
    title = board.truncate(" ".join((focus.label or focus.task).split()), board.TITLE_MAX)
    parts = [headline, board.RUNTIME_LABELS[focus.runtime], title]
    detail = board.detail(focus)
    if detail:
        parts.append(detail)
    return StatusCard(session_key, "Tasks: " + SEPARATOR.join(parts), focus, len(snap.active), failures)


def for_session(service: TaskService, session_key: str) -> StatusCard:
    """Read the session's linked tasks (and, when none is visible, its agent's) and build the card."""
    key = required_key(session_key)
    now = service.clock.now()
    tasks = service.list(related_session=key)
    agent_tasks: list[Task] = []
    if board.snapshot(tasks, now).focus is None:
        agent = parse_agent_id(key)
        agent_tasks = service.list(agent_id=agent) if agent else []
    return build(key, tasks, now, agent_tasks=agent_tasks)
