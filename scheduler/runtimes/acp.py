"""The `acp` runtime: an agent speaking the Agent Client Protocol over stdio (`agent-client-protocol`).

initialize → new session → prompt with the task text. The live turn is the task's backing: a session row
(kind `acp`, ACP metadata, mode `oneshot` or `persistent`) and a run context under the gateway while the
prompt is in flight. The stop reason maps to the task status; cancel sends the protocol's cancel (and
kills the agent if it does not stop within the grace); a one-shot session is closed — and its ACP metadata
cleared — once the task ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flowledger.flows.ledger import Ledger
from flowledger.scheduler.lease import LeaseKeeper, new_gateway_id
from flowledger.scheduler.logs import log_dir, log_paths
from flowledger.scheduler.runtimes import orphans
from flowledger.scheduler.runtimes.base import SHUTDOWN_REASON
from flowledger.scheduler.runtimes.launch import LaunchFailed, check_launchable, child_environment, refuse_options
from flowledger.scheduler.runtimes.orphans import RUN_MARKER
from flowledger.scheduler.runtimes.process import cancelled_in_db, wait_for_end
from flowledger.tasks.errors import InvalidInput
from flowledger.tasks.ids import new_id
from flowledger.tasks.models import Task
from flowledger.tasks.service import CANCELLED_BY_OPERATOR
from flowledger.tasks.states import Runtime, TaskStatus

log = logging.getLogger(__name__)
MODES = ("oneshot", "persistent")
RESULT_MAX = 4000
# Stop reason → (status, error). `cancelled` is refined to timed_out when the runtime cancelled on timeout.
STOP_REASONS: dict[str, tuple[TaskStatus, str | None]] = {
    "end_turn": (TaskStatus.SUCCEEDED, None),
    "cancelled": (TaskStatus.CANCELLED, CANCELLED_BY_OPERATOR),
    "refusal": (TaskStatus.FAILED, "ACP agent refused the prompt"),
    "max_tokens": (TaskStatus.FAILED, "ACP agent stopped: max_tokens"),
    "max_turn_requests": (TaskStatus.FAILED, "ACP agent stopped: max_turn_requests"),
}


class _Client:
    """The client side: collects the agent's message text and denies permission requests."""

    def __init__(self) -> None:
        self.chunks: list[str] = []

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        if getattr(update, "session_update", None) == "agent_message_chunk":
            text = getattr(getattr(update, "content", None), "text", None)
            if isinstance(text, str):
                self.chunks.append(text)

    async def request_permission(self, session_id: str, tool_call: Any, options: Any, **kwargs: Any) -> Any:
        from acp.schema import DeniedOutcome, RequestPermissionResponse

        return RequestPermissionResponse(outcome=DeniedOutcome(outcome="cancelled"))

    def on_connect(self, conn: Any) -> None:
        pass


@dataclass
class _Turn:
    task: Task
    run_id: str
    argv: list[str]
    mode: str
    deadline: float | None
    cwd: str | None
    env: dict[str, str]
    done: threading.Event = field(default_factory=threading.Event)
    stop_reason: str | None = None  # "cancel" | "timeout" | "shutdown"
    stop_text: str | None = None
    session_id: str | None = None


class AcpRuntime:
    def __init__(self, ledger: Ledger, *, gateway_id: str | None = None,
                 kill_grace: timedelta = timedelta(seconds=5)) -> None:
        self.ledger = ledger
        self.kill_grace = kill_grace
        self.gateway_id = gateway_id or new_gateway_id("run")
        self._lease = LeaseKeeper(ledger, self.gateway_id) if gateway_id is None else None
        self._lease_started = False
        self._turns: dict[str, _Turn] = {}
        self._done: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def spawn(self, *, task: str, agent: list[str], requester_session_key: str, agent_id: str = "main",
              label: str | None = None, timeout: timedelta | None = None, mode: str = "oneshot") -> Task:
        """Record an acp task for `requester_session_key` and start the agent's turn at once."""
        ident = new_id()
        created = self.ledger.tasks.create(
            runtime=Runtime.ACP, task=task, task_id=ident, run_id=f"acp:{ident}", source_id=ident,
            owner_key=requester_session_key, child_session_key=f"agent:{agent_id}:acp:{ident}", agent_id=agent_id,
            label=label)
        try:
            self.start(created, agent, timeout=timeout, mode=mode)
        except LaunchFailed as exc:
            self.ledger.tasks.fail(f"acp:{ident}", error=exc.message, runtime=Runtime.ACP)
        return self.ledger.tasks.require(ident)

    def start(self, task: Task, argv: list[str], *, shell: bool = False, timeout: timedelta | None = None,
              cwd: str | None = None, env: dict[str, str] | None = None, inherit_env: bool = True,
              mode: str = "oneshot", **options: Any) -> None:
        """Start the agent's turn in a thread and return; LaunchFailed (nothing recorded) when the agent's
        program or the directory is not there."""
        refuse_options("acp", options)
        if mode not in MODES:
            raise InvalidInput(f"Invalid ACP session mode {mode!r}: expected oneshot or persistent.")
        if not task.child_session_key or not task.run_id or not argv:
            raise InvalidInput(f"ACP task {task.task_id} needs a child session key, a run id and an agent command.")
        check_launchable(argv, cwd=cwd, env=env, inherit_env=inherit_env)
        if self._lease is not None and not self._lease_started:
            self._lease.start()
            self._lease_started = True
        run_id = task.run_id
        self.ledger.runs.begin_child(task, self.gateway_id, kind="acp", mode=mode,
                                     acp={"agent": list(argv), "state": "starting", "session_id": None})
        self.ledger.tasks.start(run_id, runtime=Runtime.ACP)
        turn = _Turn(task=task, run_id=run_id, argv=list(argv), mode=mode, cwd=cwd,
                     env=child_environment(env, inherit=inherit_env),
                     deadline=time.monotonic() + timeout.total_seconds() if timeout else None)
        with self._lock:
            self._turns[task.task_id] = turn
            self._done[task.task_id] = turn.done
        threading.Thread(target=self._run_turn, args=(turn,), name=f"acp-{task.task_id[:8]}", daemon=True).start()

    # --- the turn -----------------------------------------------------------------------------------

    def _run_turn(self, turn: _Turn) -> None:
        try:
            try:
                reason, text = asyncio.run(self._turn(turn))
            except Exception as exc:  # agent crashed, protocol error, cannot start
                detail = str(exc).splitlines()[0] if str(exc) else ""
                reason, text = None, f"ACP agent failed: {type(exc).__name__}: {detail}".rstrip(": ")
            self._record_end(turn, reason, text)
        except Exception:
            log.exception("task %s acp turn bookkeeping failed", turn.task.task_id)
        finally:
            self.ledger.runs.release_run(turn.run_id)
            with self._lock:
                self._turns.pop(turn.task.task_id, None)
            turn.done.set()

    async def _turn(self, turn: _Turn) -> tuple[str | None, str]:
        from acp import PROTOCOL_VERSION, spawn_agent_process, text_block

        client = _Client()
        handler: Any = client  # satisfies acp's Client protocol structurally
        log_dir(self.ledger.state_dir)
        _, err_path = log_paths(self.ledger.state_dir, turn.task.task_id)
        env = {**turn.env, "FLOWLEDGER_TASK_ID": turn.task.task_id, RUN_MARKER: turn.run_id}
        with err_path.open("ab") as err_fh:
            async with spawn_agent_process(handler, turn.argv[0], *turn.argv[1:], env=env, cwd=turn.cwd,
                                           transport_kwargs={"stderr": err_fh.fileno()}) as (conn, proc):
                await conn.initialize(protocol_version=PROTOCOL_VERSION)
                session = await conn.new_session(cwd=turn.cwd or os.getcwd(), mcp_servers=[])
                turn.session_id = session.session_id
                self._update_session(turn, state="running")
                log.info("task %s acp session %s prompting", turn.task.task_id, session.session_id)
                prompt = asyncio.ensure_future(conn.prompt(session_id=session.session_id,
                                                           prompt=[text_block(turn.task.task)]))
                cancel_sent_at: float | None = None
                next_check = time.monotonic()
                while not prompt.done():
                    await asyncio.wait({prompt}, timeout=0.05)
                    now_m = time.monotonic()
                    if turn.stop_reason is None and turn.deadline is not None and now_m >= turn.deadline:
                        turn.stop_reason = "timeout"
                    if turn.stop_reason is None and now_m >= next_check:
                        next_check = now_m + 0.2
                        if cancelled_in_db(self.ledger, turn.task.task_id):
                            turn.stop_reason = "cancel"
                    if turn.stop_reason is not None and cancel_sent_at is None:
                        cancel_sent_at = now_m
                        with contextlib.suppress(Exception):
                            await conn.cancel(session_id=session.session_id)
                    if cancel_sent_at is not None and now_m - cancel_sent_at >= self.kill_grace.total_seconds():
                        proc.kill()
                        prompt.cancel()
                        return "cancelled", ""
                response = prompt.result()
                if turn.mode == "oneshot":
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close_session(session_id=session.session_id), timeout=2)
                return str(response.stop_reason), "".join(client.chunks).strip()

    def _update_session(self, turn: _Turn, *, state: str | None) -> None:
        key = turn.task.child_session_key or ""
        acp = None if state is None else {"agent": turn.argv, "state": state, "session_id": turn.session_id}
        self.ledger.runs.update_session(key, acp=acp)

    def _record_end(self, turn: _Turn, stop_reason: str | None, text: str) -> None:
        run_id = turn.run_id
        if stop_reason is None:
            self.ledger.tasks.fail(run_id, error=text, runtime=Runtime.ACP)
        elif stop_reason == "cancelled" or turn.stop_reason is not None:
            if turn.stop_reason == "timeout":
                self.ledger.tasks.fail(run_id, error="ACP turn timed out", status=TaskStatus.TIMED_OUT,
                                       runtime=Runtime.ACP)
            else:
                self.ledger.tasks.fail(run_id, error=turn.stop_text or CANCELLED_BY_OPERATOR,
                                       status=TaskStatus.CANCELLED, runtime=Runtime.ACP)
        else:
            status, error = STOP_REASONS.get(stop_reason, (TaskStatus.FAILED, f"ACP agent stopped: {stop_reason}"))
            if status == TaskStatus.SUCCEEDED:
                self.ledger.tasks.complete(run_id, summary=text[:RESULT_MAX] or None, runtime=Runtime.ACP)
            else:
                self.ledger.tasks.fail(run_id, error=error, status=status, runtime=Runtime.ACP)
        # One-shot sessions close with their task: the metadata goes, so nothing is left to repair.
        self._update_session(turn, state=None if turn.mode == "oneshot" else "idle")
        log.info("task %s acp turn ended (%s)", turn.task.task_id, stop_reason or "error")

    # --- control ------------------------------------------------------------------------------------

    def cancel(self, task: Task, reason: str | None) -> str | None:
        """cancelSession: the protocol's cancel on the live turn; a turn not running here has nothing to
        cancel, so the registry records it."""
        with self._lock:
            turn = self._turns.get(task.task_id)
        if turn is not None and turn.stop_reason is None:
            turn.stop_reason = "cancel"
            turn.stop_text = reason
        return None

    def stop_orphan(self, run_id: str) -> bool:
        """Stop `run_id`'s process left behind by a dead supervisor, when provably that run (orphans.py)."""
        return orphans.stop_orphan(self.ledger, run_id)

    def running_count(self) -> int:
        with self._lock:
            return len(self._turns)

    def wait(self, task_id: str, timeout: float | None = None) -> Task | None:
        return wait_for_end(self.ledger, self._lock, self._done, task_id, timeout)

    def shutdown(self, reason: str = SHUTDOWN_REASON) -> None:
        with self._lock:
            turns = list(self._turns.values())
        for turn in turns:
            if turn.stop_reason is None:
                turn.stop_reason = "shutdown"
                turn.stop_text = reason
        for turn in turns:
            turn.done.wait(self.kill_grace.total_seconds() + 5)
        if self._lease is not None and self._lease_started:
            self._lease.stop(release=True)
