"""The `subagent` runtime: a child session running a Python callable (`"package.module:function"`, called
with the task text in a fresh `python -c` process) or a command. The task text is the prompt: a command reads it
on stdin (closed after it) and in `FLOWLEDGER_PROMPT`.

The child has a session row (kind `subagent`, parent = the requester) and a run context under the gateway.
Lines it prints starting with `PROGRESS:` feed the task's progress summary; the lines it prints after its
last progress report are its result (the terminal summary). Cancel kills it. A child whose gateway died
cannot be resumed: the next gateway tombstones its session row (registry.tombstone_orphans) so the sweep
marks the task lost.
"""

from __future__ import annotations

import contextlib
import logging
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from flowledger.flows import resources
from flowledger.flows.ledger import Ledger
from flowledger.scheduler.lease import LeaseKeeper, new_gateway_id
from flowledger.scheduler.logs import log_paths, open_log, tail
from flowledger.scheduler.runtimes import orphans
from flowledger.scheduler.runtimes.base import SHUTDOWN_REASON
from flowledger.scheduler.runtimes.launch import LaunchFailedError, check_launchable, refuse_options
from flowledger.scheduler.runtimes.orphans import RUN_MARKER
from flowledger.scheduler.runtimes.process import (
    Stopper,
    cancelled_in_db,
    exit_text,
    open_logs_or_fail,
    spawn,
    start_error,
    supervise,
    wait_for_end,
)
from flowledger.tasks.core.errors import FlowledgerError, InvalidInputError, StorageUnavailableError
from flowledger.tasks.core.ids import new_id
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.service import CANCELLED_BY_OPERATOR
from flowledger.tasks.core.states import Runtime, TaskStatus

log = logging.getLogger(__name__)
PROGRESS_PREFIX = "PROGRESS:"
_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_CALL = (
    "import importlib, sys\n"
    "mod, _, fn = sys.argv[1].partition(':')\n"
    "result = getattr(importlib.import_module(mod), fn)(sys.argv[2])\n"
    "if result is not None:\n"
    "    print(result, flush=True)\n"
)
RESULT_MAX = 4000


def child_argv(target: list[str], task_text: str) -> list[str]:
    """A `module:function` target runs in a fresh interpreter; anything else is a command."""
    if len(target) == 1 and _TARGET.match(target[0]):
        return [sys.executable, "-c", _CALL, target[0], task_text]
    return list(target)


def _write_prompt(proc: subprocess.Popen[bytes], prompt: str) -> None:
    assert proc.stdin is not None
    with contextlib.suppress(OSError):  # the child exited or closed its stdin: it did not want the prompt
        proc.stdin.write(prompt.encode("utf-8"))
    with contextlib.suppress(OSError):
        proc.stdin.close()


@dataclass
class _Child:
    task: Task
    run_id: str
    proc: subprocess.Popen[bytes]
    stopper: Stopper
    deadline: float | None
    done: threading.Event = field(default_factory=threading.Event)
    stop_reason: str | None = None
    stop_text: str | None = None
    result_lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None


class SubagentRuntime:
    def __init__(self, ledger: Ledger, *, gateway_id: str | None = None,
                 kill_grace: timedelta = timedelta(seconds=5),
                 cleanup_timeout: timedelta = timedelta(seconds=resources.CLEANUP_TIMEOUT_S)) -> None:
        self.ledger = ledger
        self.kill_grace = kill_grace
        self.cleanup_timeout = cleanup_timeout
        # The thread releasing each ended child's tracked resources (flows/resources.py), by task id.
        self.releases: dict[str, threading.Thread] = {}
        self.gateway_id = gateway_id or new_gateway_id("run")
        self._lease = LeaseKeeper(ledger, self.gateway_id) if gateway_id is None else None
        self._lease_started = False
        self._children: dict[str, _Child] = {}
        self._done: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def spawn(self, *, task: str, target: list[str], requester_session_key: str, agent_id: str = "main",
              label: str | None = None, timeout: timedelta | None = None) -> Task:
        """Record a subagent task for `requester_session_key` and start its child at once."""
        if not requester_session_key.strip():
            raise InvalidInputError("A subagent task needs the requester's session key.")
        ident = new_id()
        created = self.ledger.tasks.create(
            runtime=Runtime.SUBAGENT, task=task, task_id=ident, run_id=f"subagent:{ident}", source_id=ident,
            owner_key=requester_session_key, child_session_key=f"agent:{agent_id}:subagent:{ident}",
            agent_id=agent_id, label=label)
        try:
            self.start(created, target, timeout=timeout)
        except LaunchFailedError as exc:
            self.ledger.tasks.fail(f"subagent:{ident}", error=exc.message, runtime=Runtime.SUBAGENT)
        return self.ledger.tasks.require(ident)

    def start(self, task: Task, argv: list[str], *, shell: bool = False, timeout: timedelta | None = None,
              cwd: str | None = None, env: dict[str, str] | None = None, inherit_env: bool = True,
              **options: Any) -> None:
        """Start the child and return at once; LaunchFailedError (nothing recorded) when it cannot start here."""
        if not task.child_session_key or not task.run_id:
            raise InvalidInputError(f"Subagent task {task.task_id} needs a child session key and a run id.")
        refuse_options("subagent", options)
        command = child_argv(argv, task.task)
        check_launchable(command, shell=shell, cwd=cwd, env=env, inherit_env=inherit_env)
        if self._lease is not None and not self._lease_started:
            self._lease.start()
            self._lease_started = True
        run_id, child_key = task.run_id, task.child_session_key
        try:
            out_fh, err_fh = open_logs_or_fail(self.ledger, task, run_id, Runtime.SUBAGENT)
        except StorageUnavailableError:
            self._done.setdefault(task.task_id, threading.Event()).set()
            raise
        out_fh.close()  # stdout is the reply, read from a pipe and appended by `_read`
        out_path, _ = log_paths(self.ledger.state_dir, task.task_id)
        try:
            self.ledger.runs.begin_child(task, self.gateway_id, kind="subagent", ended_at=None)
            self.ledger.tasks.start(run_id, runtime=Runtime.SUBAGENT)
        except BaseException:
            err_fh.close()
            raise
        extra = {"FLOWLEDGER_TASK_ID": task.task_id, RUN_MARKER: run_id, "FLOWLEDGER_PROMPT": task.task,
                 "FLOWLEDGER_SESSION_KEY": child_key, "PYTHONUNBUFFERED": "1", **(env or {})}
        try:
            proc = spawn(command, shell=shell, cwd=cwd, env=extra, stdout=subprocess.PIPE, stderr=err_fh,
                         stdin=subprocess.PIPE, inherit_env=inherit_env)
        except OSError as exc:
            err_fh.close()
            self.ledger.tasks.fail(run_id, error=start_error(argv, cwd, exc), runtime=Runtime.SUBAGENT)
            self._release(run_id)
            self._done.setdefault(task.task_id, threading.Event()).set()
            return
        err_fh.close()
        child = _Child(task=task, run_id=run_id, proc=proc, stopper=Stopper(proc, self.kill_grace.total_seconds()),
                       deadline=time.monotonic() + timeout.total_seconds() if timeout else None)
        with self._lock:
            self._children[task.task_id] = child
            self._done[task.task_id] = child.done
        with contextlib.suppress(FlowledgerError):
            self.ledger.runs.register_run(run_id, self.gateway_id, task_id=task.task_id, pid=proc.pid)
        log.info("task %s subagent child %s started pid %s", task.task_id, child_key, proc.pid)
        # A child that never reads its stdin must not block us on a full pipe: the prompt is written aside.
        threading.Thread(target=_write_prompt, args=(proc, task.task), daemon=True).start()
        child.reader = threading.Thread(target=self._read, args=(child, out_path), daemon=True)
        child.reader.start()
        threading.Thread(target=self._supervise, args=(child,), daemon=True).start()

    def _read(self, child: _Child, out_path: Path) -> None:
        assert child.proc.stdout is not None
        with open_log(out_path) as out_fh:
            for raw in child.proc.stdout:
                out_fh.write(raw)
                out_fh.flush()
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line.startswith(PROGRESS_PREFIX):
                    child.result_lines.clear()
                    text = line[len(PROGRESS_PREFIX):].strip()
                    if text:
                        with contextlib.suppress(FlowledgerError):
                            self.ledger.tasks.progress(child.run_id, text, runtime=Runtime.SUBAGENT)
                elif line.strip():
                    child.result_lines.append(line)

    def _supervise(self, child: _Child) -> None:
        def stopped(why: str) -> None:
            child.stop_reason = child.stop_reason or why

        deadline = child.deadline
        try:
            code = supervise(child.proc, child.stopper, on_stop=stopped,
                             expired=None if deadline is None else lambda: time.monotonic() >= deadline,
                             cancelled=lambda: cancelled_in_db(self.ledger, child.task.task_id))
            if child.reader is not None:  # the result is the last lines: let the reader drain the pipe
                child.reader.join(timeout=5)
            self._record_end(child, code)
        except Exception:
            log.exception("task %s subagent supervision failed", child.task.task_id)
        finally:
            self._release(child.run_id)
            # After the terminal status, never before it: a hanging cleanup must not delay or mask the outcome.
            released = resources.finish_session(self.ledger, child.task.child_session_key,
                                                timeout_s=self.cleanup_timeout.total_seconds())
            with self._lock:
                self._children.pop(child.task.task_id, None)
                if released is not None:
                    self.releases[child.task.task_id] = released
            child.done.set()

    def _record_end(self, child: _Child, code: int) -> None:
        run_id, tid = child.run_id, child.task.task_id
        if child.stop_reason == "timeout":
            self.ledger.tasks.fail(run_id, error="subagent timed out", status=TaskStatus.TIMED_OUT,
                                   runtime=Runtime.SUBAGENT)
        elif child.stop_reason is not None:
            self.ledger.tasks.fail(run_id, error=child.stop_text or CANCELLED_BY_OPERATOR,
                                   status=TaskStatus.CANCELLED, runtime=Runtime.SUBAGENT)
        elif code == 0:
            result = "\n".join(child.result_lines).strip()[:RESULT_MAX] or None
            self.ledger.tasks.complete(run_id, summary=result, runtime=Runtime.SUBAGENT)
        else:
            # A failure is announced without replaying the child's reply text (SPEC §5): stderr only.
            err_tail = tail(log_paths(self.ledger.state_dir, tid)[1])
            self.ledger.tasks.fail(run_id, error=exit_text(code) + (f": {err_tail}" if err_tail else ""),
                                   runtime=Runtime.SUBAGENT)
        log.info("task %s subagent ended (%s)", tid, child.stop_reason or exit_text(code))

    def _release(self, run_id: str) -> None:
        self.ledger.runs.release_run(run_id)

    # --- control ------------------------------------------------------------------------------------

    def cancel(self, task: Task, reason: str | None) -> str | None:
        """Admin kill (REFERENCE §3.6): refused when this runtime is not running the child."""
        with self._lock:
            child = self._children.get(task.task_id)
        if child is None:
            return "Subagent was not running."
        child.stop_reason = child.stop_reason or "cancel"
        child.stop_text = reason
        child.stopper.request()
        return None

    def stop_orphan(self, run_id: str) -> bool:
        """Stop `run_id`'s process left behind by a dead supervisor, when provably that run (orphans.py)."""
        return orphans.stop_orphan(self.ledger, run_id)

    def running_count(self) -> int:
        with self._lock:
            return len(self._children)

    def wait(self, task_id: str, timeout: float | None = None) -> Task | None:
        return wait_for_end(self.ledger, self._lock, self._done, task_id, timeout)

    def shutdown(self, reason: str = SHUTDOWN_REASON) -> None:
        with self._lock:
            children = list(self._children.values())
        for child in children:
            child.stop_reason = child.stop_reason or "shutdown"
            child.stop_text = reason
            child.stopper.request()
        for child in children:
            child.done.wait(self.kill_grace.total_seconds() + 5)
        if self._lease is not None and self._lease_started:
            self._lease.stop(release=True)
