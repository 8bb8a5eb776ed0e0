"""A tiny ACP agent over stdio, written with the `agent-client-protocol` package, for the acp runtime tests.

The prompt text picks the behaviour: `refuse …` → stop reason `refusal`; `sleep N …` → waits N seconds
(a protocol cancel ends the turn with `cancelled`); `crash` → exits mid-turn; anything else is echoed back
as an agent message (`echo: <text>`) and the turn ends with `end_turn`.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from typing import Any

from acp import (
    PROTOCOL_VERSION,
    InitializeResponse,
    NewSessionResponse,
    PromptResponse,
    run_agent,
    update_agent_message_text,
)
from acp.schema import AgentCapabilities, SessionCapabilities, SessionCloseCapabilities


class EchoAgent:
    def __init__(self) -> None:
        self.conn: Any = None
        self.cancels: dict[str, asyncio.Event] = {}

    def on_connect(self, conn: Any) -> None:
        self.conn = conn

    async def initialize(self, protocol_version: int, client_capabilities: Any = None, client_info: Any = None,
                         **kwargs: Any) -> InitializeResponse:
        return InitializeResponse(protocol_version=min(protocol_version, PROTOCOL_VERSION),
                                  agent_capabilities=AgentCapabilities(
                                      session_capabilities=SessionCapabilities(close=SessionCloseCapabilities())))

    async def new_session(self, cwd: str, additional_directories: Any = None, mcp_servers: Any = None,
                          **kwargs: Any) -> NewSessionResponse:
        session_id = f"echo-{uuid.uuid4().hex[:8]}"
        self.cancels[session_id] = asyncio.Event()
        return NewSessionResponse(session_id=session_id)

    async def prompt(self, session_id: str, prompt: list[Any], **kwargs: Any) -> PromptResponse:
        text = " ".join(getattr(block, "text", "") for block in prompt).strip()
        words = text.split()
        if words and words[0] == "refuse":
            return PromptResponse(stop_reason="refusal")
        if words and words[0] == "crash":
            os._exit(3)
        if len(words) >= 2 and words[0] == "sleep":
            await self.conn.session_update(session_id, update_agent_message_text("working"))
            try:
                await asyncio.wait_for(self.cancels[session_id].wait(), timeout=float(words[1]))
                return PromptResponse(stop_reason="cancelled")
            except TimeoutError:
                pass
        await self.conn.session_update(session_id, update_agent_message_text(f"echo: {text}"))
        return PromptResponse(stop_reason="end_turn")

    async def cancel(self, session_id: str, **kwargs: Any) -> None:
        event = self.cancels.get(session_id)
        if event is not None:
            event.set()

    async def close_session(self, session_id: str, **kwargs: Any) -> None:
        self.cancels.pop(session_id, None)


if __name__ == "__main__":
    sys.exit(asyncio.run(run_agent(EchoAgent(), use_unstable_protocol=True)))  # type: ignore[func-returns-value]
