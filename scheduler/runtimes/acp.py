"""The `acp` runtime: an agent speaking the Agent Client Protocol over stdio (`agent-client-protocol`).

initialize → new session → prompt with the task text (acp_client.py speaks the protocol). The live turn is the
task's backing: a session row (kind `acp`, ACP metadata, mode `oneshot` or `persistent`) and a run context under
the gateway while the prompt is in flight. The stop reason maps to the task status; cancel sends the protocol's
cancel (and kills the agent if it does not stop within the grace); a one-shot session is closed — and its ACP
metadata cleared — once the task ends; a persistent one stays, idle, for session repair (each task has a child
session of its own, so no other task reuses it). The agent's message text is streamed to the task's stdout log and
is the task's terminal summary; a broken agent (malformed JSON, another protocol version, gone mid-conversation)
ends the task `failed` with `ACP agent failed: <one line>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flowledger.flows.ledger import Ledger
from flowledger.scheduler.lease import LeaseKeeper, new_gateway_id
from flowledger.scheduler.logs import log_dir, log_paths, open_log, tail
from flowledger.scheduler.runtimes import orphans
from flowledger.scheduler.runtimes.acp_client import (
    MESSAGE_MAX,
    AcpClient,
    AgentFailedError,
    Conversation,
    StrictTransport,
    converse,
    one_line,
)
from flowledger.scheduler.runtimes.base import SHUTDOWN_REASON
from flowledger.scheduler.runtimes.launch import LaunchFailedError, check_launchable, refuse_options
from flowledger.scheduler.runtimes.orphans import RUN_MARKER
from flowledger.scheduler.runtimes.process import cancelled_in_db, wait_for_end
from flowledger.tasks.core.childenv import child_environment
from flowledger.tasks.core.errors import InvalidInputError
from flowledger.tasks.core.ids import new_id
from flowledger.tasks.core.models import Task
from flowledger.tasks.core.service import CANCELLED_BY_OPERATOR
from flowledger.tasks.core.states import Runtime, TaskStatus

log = logging.getLogger(__name__)
MODES = ("oneshot", "persistent")
# Stop reason → (status, error). `cancelled` is refined to timed_out when the runtime cancelled on timeout.
STOP_REASONS: dict[str, tuple[TaskStatus, str | None]] = {
    "end_turn": (TaskStatus.SUCCEEDED, None),
    "cancelled": (TaskStatus.CANCELLED, CANCELLED_BY_OPERATOR),
    "refusal": (TaskStatus.FAILED, "ACP agent refused the prompt"),
    "max_tokens": (TaskStatus.FAILED, "ACP agent stopped: max_tokens"),
    "max_turn_requests": (TaskStatus.FAILED, "ACP agent stopped: max_turn_requests"),
}


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


def reserve_session(ledger: Ledger, task: Task, mode: str) -> None:
    """Record a queued acp task's child session and its mode before any runtime starts it, so the runtime that
    claims it (this process's or a gateway's) runs it in that mode."""
    if mode not in MODES:
        raise InvalidInputError(f"Invalid ACP session mode {mode!r}: expected oneshot or persistent.")
    if not task.child_session_key:
        raise InvalidInputError(f"ACP task {task.task_id} needs a child session key.")
    ledger.runs.update_session(task.child_session_key, agent_id=task.agent_id, kind="acp", mode=mode,
                               spawned_by=task.owner_key,
                               parent_session_key=task.requester_session_key or task.owner_key)


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
        except LaunchFailedError as exc:
            self.ledger.tasks.fail(f"acp:{ident}", error=exc.message, runtime=Runtime.ACP)
        return self.ledger.tasks.require(ident)

    def start(self, task: Task, argv: list[str], *, shell: bool = False, timeout: timedelta | None = None,
              cwd: str | None = None, env: dict[str, str] | None = None, inherit_env: bool = True,
              mode: str | None = None, **options: Any) -> None:
        """Start the agent's turn in a thread and return; LaunchFailedError (nothing recorded) when the agent's
        program or the directory is not there. Without a `mode`, the one `reserve_session` recorded for the task
        (a run handed to a gateway), else `oneshot`."""
        refuse_options("acp", options)
        if mode is None:
            mode = self._reserved_mode(task) or "oneshot"
        if mode not in MODES:
            raise InvalidInputError(f"Invalid ACP session mode {mode!r}: expected oneshot or persistent.")
        if not task.child_session_key or not task.run_id or not argv:
            raise InvalidInputError(
                f"ACP task {task.task_id} needs a child session key, a run id and an agent command.")
        check_launchable(argv, cwd=cwd, env=env, inherit_env=inherit_env)
        if self._lease is not None and not self._lease_started:
            self._lease.start()
            self._lease_started = True
        run_id = task.run_id
        self.ledger.runs.begin_child(task, self.gateway_id, kind="acp", mode=mode,
                                     acp={"agent": list(argv), "state": "starting", "session_id": None})
        self.ledger.tasks.start(run_id, runtime=Runtime.ACP)
        turn = _Turn(task=task, run_id=run_id, argv=list(argv), mode=mode, cwd=cwd,
                     env=child_environment(env, base=None if inherit_env else {}),
                     deadline=time.monotonic() + timeout.total_seconds() if timeout else None)
        with self._lock:
            self._turns[task.task_id] = turn
            self._done[task.task_id] = turn.done
        threading.Thread(target=self._run_turn, args=(turn,), name=f"acp-{task.task_id[:8]}", daemon=True).start()

    def _reserved_mode(self, task: Task) -> str | None:
        if not task.child_session_key:
            return None
        mode = self.ledger.runs.session_mode(task.child_session_key)
        return mode if mode in MODES else None

    # --- the turn -----------------------------------------------------------------------------------

    def _run_turn(self, turn: _Turn) -> None:
        try:
            try:
                reason, text = asyncio.run(self._turn(turn))
            except Exception as exc:  # agent crashed, protocol error, cannot start
                reason, text = None, f"ACP agent failed: {one_line(exc)}"
            self._record_end(turn, reason, text)
        except Exception:
            log.exception("task %s acp turn bookkeeping failed", turn.task.task_id)
        finally:
            self.ledger.runs.release_run(turn.run_id)
            with self._lock:
                self._turns.pop(turn.task.task_id, None)
            turn.done.set()

    async def _turn(self, turn: _Turn) -> tuple[str | None, str]:
        from acp import connect_to_agent
        from acp.transports import spawn_stdio_transport

        log_dir(self.ledger.state_dir)
        out_path, err_path = log_paths(self.ledger.state_dir, turn.task.task_id)
        env = {**turn.env, "FLOWLEDGER_TASK_ID": turn.task.task_id, RUN_MARKER: turn.run_id}
        with open_log(out_path) as out_fh, open_log(err_path) as err_fh:
            client = AcpClient(out_fh, err_fh)
            handler: Any = client  # satisfies acp's Client protocol structurally
            async with contextlib.AsyncExitStack() as stack:
                try:
                    reader, writer, proc = await stack.enter_async_context(spawn_stdio_transport(
                        turn.argv[0], *turn.argv[1:], env=env, cwd=turn.cwd, stderr=err_fh.fileno(),
                        limit=MESSAGE_MAX))
                except OSError as exc:  # as the cli and subagent runtimes say it
                    raise AgentFailedError(f"cannot start {turn.argv[0]!r}: {exc.strerror or exc}") from None
                transport = StrictTransport(reader, writer)
                conn = connect_to_agent(handler, transport)
                state = Conversation(on_session=lambda sid: self._on_session(turn, sid))
                talk = asyncio.ensure_future(converse(conn, turn.task.task, turn.cwd, turn.mode, state))
                try:
                    stopped = await self._watch(turn, talk, conn, proc, state)
                    if stopped:
                        return "cancelled", ""
                    try:
                        return talk.result(), client.reply()
                    except AgentFailedError:
                        raise
                    except Exception as exc:
                        raise AgentFailedError(await self._why(transport, state, proc, err_path, exc)) from None
                finally:
                    await conn.close()

    async def _watch(self, turn: _Turn, talk: asyncio.Future[str], conn: Any, proc: Any,
                     state: Conversation) -> bool:
        """Wait for the conversation, sending the protocol's cancel on a timeout, a cancel or a shutdown (the
        agent is killed if it has not answered within the grace); True when the turn was stopped that way."""
        cancel_sent_at: float | None = None
        next_check = time.monotonic()
        while not talk.done():
            await asyncio.wait({talk}, timeout=0.05)
            now_m = time.monotonic()
            if turn.stop_reason is None and turn.deadline is not None and now_m >= turn.deadline:
                turn.stop_reason = "timeout"
            if turn.stop_reason is None and now_m >= next_check:
                next_check = now_m + 0.2
                if cancelled_in_db(self.ledger, turn.task.task_id):
                    turn.stop_reason = "cancel"
            if turn.stop_reason is not None and cancel_sent_at is None:
                cancel_sent_at = now_m
                if state.session_id is None:  # nothing to cancel yet: the handshake is simply abandoned
                    break
                with contextlib.suppress(Exception):
                    await conn.cancel(session_id=state.session_id)
            if cancel_sent_at is not None and now_m - cancel_sent_at >= self.kill_grace.total_seconds():
                break
        if talk.done() and turn.stop_reason is None:
            return False
        if not talk.done():
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            talk.cancel()
            with contextlib.suppress(BaseException):
                await talk
        return turn.stop_reason is not None

    @staticmethod
    async def _why(transport: StrictTransport, state: Conversation, proc: Any, err_path: Any,
                   exc: BaseException) -> str:
        """One line saying why the conversation broke: the transport's finding, else the agent's exit."""
        if transport.error is not None:
            return f"{transport.error} (during {state.phase})"
        if isinstance(exc, ConnectionError):
            code = None
            with contextlib.suppress(TimeoutError):
                code = await asyncio.wait_for(proc.wait(), timeout=1)
            lines = tail(err_path).splitlines()
            said = lines[-1] if lines else ""
            gone = f"the agent exited during {state.phase}" + (f" (exit code {code})" if code is not None else "")
            return gone + (f": {said}" if said else "")
        return f"{one_line(exc)} (during {state.phase})"

    def _on_session(self, turn: _Turn, session_id: str) -> None:
        turn.session_id = session_id
        self._update_session(turn, state="running")
        log.info("task %s acp session %s prompting", turn.task.task_id, session_id)

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
                # The whole reply: the task service bounds what programs produce (CONTRACT §7 "Limits").
                self.ledger.tasks.complete(run_id, summary=text or None, runtime=Runtime.ACP)
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

    def running_count(self) -> int:
        with self._lock:
            return len(self._turns)

    def wait(self, task_id: str, timeout: float | None = None) -> Task | None:
        return wait_for_end(self.ledger, self._lock, self._done, task_id, timeout)

    def stop_orphan(self, run_id: str) -> bool:
        """Stop `run_id`'s process left behind by a dead supervisor, when provably that run (orphans.py)."""
        return orphans.stop_orphan(self.ledger, run_id)

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
