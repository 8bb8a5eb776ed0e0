"""Every error the flow layer raises of its own, in one place.

The flow-file errors are `InvalidInputError` (exit code 2: the user's file is wrong); the step-tracker errors are
`FlowledgerError` (a controller bug or a damaged snapshot, never user input). `definitions.py` and `graph.py`
raise them and still export them under their old import paths.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from flowledger.tasks.core.errors import FlowledgerError, InvalidInputError


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """` (did you mean 'x'?)` for the closest of `choices`, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- flow files ------------------------------------------------------------------------------------------


class FlowFileError(InvalidInputError):
    """A flow file (or document) that cannot be used; the message is one line, prefixed by its source."""

    def __init__(self, detail: str, source: str | None = None) -> None:
        detail = " ".join(detail.split())
        super().__init__(f"{source}: {detail}" if source else detail)
        self.detail = detail
        self.source = source


class FlowCycleError(FlowFileError):
    """The steps' `needs` form a cycle; `cycle` lists it in order, first step repeated at the end."""

    def __init__(self, cycle: Sequence[str], source: str | None = None) -> None:
        super().__init__("Flow has a cycle: " + " -> ".join(cycle), source)
        self.cycle = tuple(cycle)


class UnknownStepError(FlowFileError):
    """A step `needs` a step id that the flow does not define."""

    def __init__(self, step_id: str, unknown: str, known: Sequence[str], source: str | None = None) -> None:
        super().__init__(f"Step {step_id!r} needs unknown step {unknown!r}{did_you_mean(unknown, known)}", source)
        self.step_id = step_id
        self.unknown = unknown


# --- the step tracker (graph.Readiness) ------------------------------------------------------------------


class StepTransitionError(FlowledgerError):
    """The controller reported a step change the tracker cannot accept (a bug in the caller, never user input).

    `current` is the step's status value (a `graph.StepStatus` is a str), None when the step does not exist."""

    def __init__(self, step_id: str, current: str | None, requested: str) -> None:
        where = f"is {current}" if current is not None else "does not exist"
        super().__init__(f"Step {step_id!r} cannot become {requested}: it {where}.")
        self.step_id = step_id
        self.current = current
        self.requested = requested


class InvalidSnapshotError(FlowledgerError):
    """A persisted readiness snapshot does not fit the flow definition."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"Invalid flow step snapshot: {detail}")
        self.detail = detail


# The name before errors ended in `Error` (issue 13); kept importable.
InvalidSnapshot = InvalidSnapshotError
