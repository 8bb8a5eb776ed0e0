"""Release what a child session tracked when its run ends (SPEC §5; tasks/sessions/resources.py holds the registry).

Best effort and bounded: a tracked process is killed only when one of its process group still carries the run
marker it was registered with (flows/processes.py's check, so a reused pid is left alone); a cleanup command gets
`timeout` seconds, then its process group is killed and the failure logged. Release always runs after the run's
terminal status is recorded, on a thread of its own (`release_in_background`), so a failing or hanging cleanup
never delays or masks the task's outcome.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import subprocess
import threading
from dataclasses import dataclass

from flowledger.flows.ledger import Ledger
from flowledger.flows.processes import carries_marker, kill_run
from flowledger.tasks.core.errors import FlowledgerError
from flowledger.tasks.sessions import resources as session_resources
from flowledger.tasks.sessions.resources import COMMAND, PROCESS, Resource

log = logging.getLogger(__name__)
CLEANUP_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Released:
    resource: Resource
    outcome: str
    ok: bool


def release_session(ledger: Ledger, session_key: str, *, timeout_s: float = CLEANUP_TIMEOUT_S) -> list[Released]:
    """Release every unreleased resource of the session, each claimed first so two releasers never both act."""
    try:
        with ledger.db.read() as conn:
            resources = session_resources.pending(conn, session_key)
    except FlowledgerError:
        log.exception("session %s: could not read its tracked resources", session_key)
        return []
    done = []
    for resource in resources:
        claim = functools.partial(session_resources.claim_release, resource_id=resource.resource_id,
                                  now=ledger.clock.now())
        try:
            if not ledger.db.transact(claim):
                continue
        except FlowledgerError:
            log.exception("session %s: could not claim resource %s", session_key, resource.resource_id)
            continue
        outcome, ok = _release(resource, timeout_s)
        (log.info if ok else log.warning)("session %s: %s %s released: %s", session_key, resource.kind,
                                         resource.label or resource.resource_id, outcome)
        record = functools.partial(session_resources.record_outcome, resource_id=resource.resource_id,
                                   outcome=outcome, now=ledger.clock.now())
        with contextlib.suppress(FlowledgerError):
            ledger.db.transact(record)
        done.append(Released(resource, outcome, ok))
    return done


def _release(resource: Resource, timeout_s: float) -> tuple[str, bool]:
    try:
        if resource.kind == PROCESS and resource.pid is not None and resource.run_marker:
            return _stop_process(resource.pid, resource.run_marker)
        if resource.kind == COMMAND and resource.argv:
            return _run_cleanup(list(resource.argv), timeout_s)
        return "nothing to release", True
    except Exception as exc:  # best effort: a cleanup bug is logged, never raised into the completion
        log.exception("resource %s release failed", resource.resource_id)
        return f"error: {type(exc).__name__}", False


def _stop_process(pid: int, run_marker: str) -> tuple[str, bool]:
    if kill_run(pid, run_marker):
        return f"killed pid {pid}", True
    if carries_marker(pid, run_marker):  # still there and ours, yet the kill did not go through
        return f"could not kill pid {pid}", False
    return f"pid {pid} already gone", True


def _run_cleanup(argv: list[str], timeout_s: float) -> tuple[str, bool]:
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    except OSError as exc:
        return f"cannot start {argv[0]!r}: {exc.strerror or exc}", False
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return f"timed out after {timeout_s:g}s; killed", False
    return ("ok", True) if code == 0 else (f"exit {code}", False)


def finish_session(ledger: Ledger, session_key: str | None, *, timeout_s: float = CLEANUP_TIMEOUT_S
                   ) -> threading.Thread | None:
    """A run of `session_key` ended (its terminal status already recorded): mark the session ended and release
    its resources on a daemon thread, returned so a caller may wait for it."""
    if not session_key:
        return None
    with contextlib.suppress(FlowledgerError):
        now = ledger.clock.now()
        ledger.db.transact(lambda conn: session_resources.mark_session_ended(conn, session_key, now))
    thread = threading.Thread(target=release_session, args=(ledger, session_key), kwargs={"timeout_s": timeout_s},
                              name=f"release:{session_key}", daemon=True)
    thread.start()
    return thread
