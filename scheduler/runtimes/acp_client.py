"""flowledger's side of one ACP conversation: initialize → session/new → session/prompt (→ session/close).

`converse` speaks to an agent over a transport that refuses anything the protocol does not allow, so a broken
agent ends the conversation at once with one line (`AgentFailedError`) instead of leaving a request unanswered: a line
that is not a JSON object, a protocol version other than ours, the agent's stdout closing mid-conversation.
`AcpClient` is the client half: it streams the agent's message text to the task's stdout log (what `tasks logs`
shows), notes tool calls on its stderr log, and denies every permission request by selecting the agent's own
reject option (the protocol's `cancelled` outcome only when it offers none, as the spec reserves it for
cancelled turns). Every message sent is built from the SDK's typed models, so it is valid against the
protocol's published JSON schema (tests/service/test_acp_conformance.py checks the wire).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

# One JSON-RPC line may carry a whole file; beyond this the agent is not speaking the protocol we can read.
MESSAGE_MAX = 16 * 1024 * 1024
CLOSE_TIMEOUT_S = 2.0
_PERMISSION_DENIALS = ("reject_once", "reject_always")


class AgentFailedError(Exception):
    """The agent broke the protocol or went away; the message is the one line after `ACP agent failed: `."""


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, AgentFailedError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class StrictTransport:
    """Newline-delimited JSON-RPC over the agent's stdio (the SDK's `Transport` protocol), stopping at the first
    line that is not a JSON object: the SDK's own transport logs and skips such lines, leaving the request
    they answered pending for ever."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.error: str | None = None

    async def send(self, message: dict[str, Any]) -> None:
        self.writer.write((json.dumps(message, separators=(",", ":")) + "\n").encode("utf-8"))
        await self.writer.drain()

    async def receive(self) -> dict[str, Any] | None:
        while True:
            try:
                line = await self.reader.readline()
            except ValueError:  # longer than the stream's limit
                self.error = f"a message from the agent exceeds {MESSAGE_MAX} bytes"
                return None
            if not line:
                return None
            line = line.strip()
            if not line:
                continue
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            if not isinstance(message, dict):
                shown = line[:80].decode("utf-8", "replace")
                self.error = f"malformed JSON from the agent: {shown!r}"
                return None
            return message

    async def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()


class AcpClient:
    """The client side the agent talks to (the SDK's typed `Client` handlers)."""

    def __init__(self, out: IO[bytes] | None = None, err: IO[bytes] | None = None) -> None:
        self.chunks: list[str] = []
        self.out = out
        self.err = err

    def reply(self) -> str:
        return "".join(self.chunks).strip()

    def _write(self, stream: IO[bytes] | None, text: str) -> None:
        if stream is not None and text:
            stream.write(text.encode("utf-8"))
            stream.flush()

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        kind = getattr(update, "session_update", None)
        if kind == "agent_message_chunk":
            text = getattr(getattr(update, "content", None), "text", None)
            if isinstance(text, str):
                self.chunks.append(text)
                self._write(self.out, text)
        elif kind in ("tool_call", "tool_call_update"):
            title = getattr(update, "title", None) or getattr(update, "tool_call_id", "")
            status = getattr(update, "status", None)
            self._write(self.err, f"[tool] {title}" + (f": {status}" if status else "") + "\n")

    async def request_permission(self, session_id: str, tool_call: Any, options: Any, **kwargs: Any) -> Any:
        from acp.schema import AllowedOutcome, DeniedOutcome, RequestPermissionResponse

        title = getattr(tool_call, "title", None) or getattr(tool_call, "tool_call_id", "")
        self._write(self.err, f"[permission] {title}: denied\n")
        for kind in _PERMISSION_DENIALS:
            for option in options or []:
                if getattr(option, "kind", None) == kind:
                    return RequestPermissionResponse(
                        outcome=AllowedOutcome(outcome="selected", option_id=option.option_id))
        return RequestPermissionResponse(outcome=DeniedOutcome(outcome="cancelled"))

    def on_connect(self, conn: Any) -> None:
        pass


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flowledger")
    except PackageNotFoundError:
        return "0"


@dataclass
class Conversation:
    """What one turn got to: the phase it is in (for the failure line), the session, how it ended."""

    phase: str = "initialize"
    session_id: str | None = None
    stop_reason: str | None = None
    on_session: Callable[[str], None] | None = field(default=None, repr=False)


async def converse(conn: Any, prompt: str, cwd: str | None, mode: str, state: Conversation) -> str:
    """Run the turn on `conn` (a `ClientSideConnection`); returns the prompt's stop reason."""
    from acp import PROTOCOL_VERSION, text_block
    from acp.schema import ClientCapabilities, Implementation

    state.phase = "initialize"
    init = await conn.initialize(protocol_version=PROTOCOL_VERSION, client_capabilities=ClientCapabilities(),
                                 client_info=Implementation(name="flowledger", version=_version()))
    if init.protocol_version != PROTOCOL_VERSION:
        raise AgentFailedError(f"the agent speaks ACP protocol version {init.protocol_version}; "
                          f"flowledger speaks {PROTOCOL_VERSION}")
    state.phase = "session/new"
    # The protocol wants an absolute working directory.
    session = await conn.new_session(cwd=os.path.abspath(cwd or os.getcwd()), mcp_servers=[])
    state.session_id = session.session_id
    if state.on_session is not None:
        state.on_session(session.session_id)
    state.phase = "session/prompt"
    response = await conn.prompt(session_id=session.session_id, prompt=[text_block(prompt)])
    state.stop_reason = str(response.stop_reason)
    capabilities = getattr(init, "agent_capabilities", None)
    can_close = getattr(getattr(capabilities, "session_capabilities", None), "close", None) is not None
    if mode == "oneshot" and can_close:  # only an agent that offers session/close is sent it
        state.phase = "session/close"
        # The turn is over and its answer in: a session that will not close is no failure.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close_session(session_id=session.session_id), timeout=CLOSE_TIMEOUT_S)
    return state.stop_reason
