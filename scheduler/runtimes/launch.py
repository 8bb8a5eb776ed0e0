"""Before a runtime records that it started anything: can the work start at all here?

A program that does not exist, a relative program that is not executable, a working directory that vanished:
`check_launchable` raises `LaunchFailedError` with one line saying which, and the runtime's `start` lets it
propagate having recorded nothing. The caller records the failure in its own words (a flow names the step,
the queue the task), so nothing is left `queued` or `running` for want of a process. The checks read the
same PATH the child would (the environment it gets), the way `subprocess` resolves the program.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence

from flowledger.tasks.core.childenv import child_environment
from flowledger.tasks.core.errors import FlowledgerError


class LaunchFailedError(FlowledgerError):
    """The work cannot start here (no such program, no such directory); nothing was recorded."""


def refuse_options(runtime: str, options: Mapping[str, object]) -> None:
    """A runtime given options it does not know refuses rather than run something other than asked."""
    if options:
        raise LaunchFailedError(f"the {runtime} runtime takes no {', '.join(sorted(options))}")


def check_launchable(argv: Sequence[str], *, shell: bool = False, cwd: str | None = None,
                     env: Mapping[str, str] | None = None, inherit_env: bool = True) -> None:
    """Raise LaunchFailedError when `argv[0]` cannot be found or `cwd` is not a directory."""
    if not argv or not argv[0].strip():
        raise LaunchFailedError("nothing to run")
    if cwd is not None and not os.path.isdir(cwd):
        raise LaunchFailedError(f"working directory {cwd!r} does not exist")
    if shell:
        return  # the shell reports a missing command itself, as it would in a terminal
    program = argv[0]
    if os.sep in program:
        path = os.path.join(cwd or os.getcwd(), program)
        if not os.path.isfile(path):
            raise LaunchFailedError(f"program {program!r} not found" + (f" in {cwd!r}" if cwd else ""))
        if not os.access(path, os.X_OK):
            raise LaunchFailedError(f"program {program!r} is not executable")
        return
    search = child_environment(env, base=None if inherit_env else {}).get("PATH", os.defpath)
    if shutil.which(program, path=search) is None:
        raise LaunchFailedError(f"program {program!r} not found on PATH")


LaunchFailed = LaunchFailedError  # the name before the `Error` rule (issue 13), kept importable
