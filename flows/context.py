"""Where and with what environment a detached flow's steps run (CONTRACT §7): the submission context.

`flowledger tasks flow run --detach` captures the submitter's absolute working directory and an allow-listed
environment (`PATH`, `HOME`, `LANG`, `LC_*`, `TZ`, and the variables the flow names in `[flow] pass_env`),
never a `FLOWLEDGER_*` variable, never anything else. The context is stored in the flow's state next to its
definition, so whichever gateway drives (or adopts) the flow runs each step in that directory with exactly that
environment plus the step's own `env`. Relative paths in `run` and `cwd` then resolve against the submitter's
directory, as they do in the foreground. Pure: the caller passes the directory and environment in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ALLOWED = ("PATH", "HOME", "LANG", "TZ")
ALLOWED_PREFIX = "LC_"
# Our own settings (database URL, state dir, web token) must never leak into a step the gateway runs.
NEVER_PREFIX = "FLOWLEDGER_"


@dataclass(frozen=True, slots=True)
class SubmissionContext:
    """The absolute directory a detached flow was submitted from and the environment captured with it."""

    cwd: str
    env: Mapping[str, str] = field(default_factory=dict)

    def to_document(self) -> dict[str, Any]:
        return {"cwd": self.cwd, "env": dict(self.env)}

    def step_cwd(self, step_cwd: str | None) -> str:
        """A step's working directory: its own `cwd` resolved against the submitter's, else the submitter's."""
        if not step_cwd:
            return self.cwd
        return os.path.normpath(os.path.join(self.cwd, os.path.expanduser(step_cwd)))

    def step_env(self, step_env: Mapping[str, str]) -> dict[str, str]:
        """The whole environment of a step: the captured variables, then the step's own `env` on top."""
        return {**self.env, **step_env}


def allowed(name: str, pass_env: Sequence[str] = ()) -> bool:
    if name.startswith(NEVER_PREFIX):
        return False
    return name in ALLOWED or name.startswith(ALLOWED_PREFIX) or name in pass_env


def capture(cwd: str, environ: Mapping[str, str], pass_env: Sequence[str] = ()) -> SubmissionContext:
    """The context of a submission from `cwd` (made absolute) with `environ` filtered by the allow-list."""
    env = {name: value for name, value in environ.items() if allowed(name, pass_env)}
    return SubmissionContext(cwd=os.path.abspath(cwd), env=env)


def from_document(document: object) -> SubmissionContext | None:
    """The context stored in a flow's state; None when the flow has none (a foreground flow) or it is unusable."""
    if not isinstance(document, Mapping):
        return None
    cwd, env = document.get("cwd"), document.get("env")
    if not isinstance(cwd, str) or not os.path.isabs(cwd) or not isinstance(env, Mapping):
        return None
    return SubmissionContext(cwd=cwd, env={str(k): str(v) for k, v in env.items() if allowed(str(k), (str(k),))})
