"""A minimal ACP agent, written the way the `agent-client-protocol` SDK documents it (typed handlers run by
`acp.run_agent`): it answers every prompt in two message chunks, `Hello! You asked: <prompt>`.

Try it: `flowledger run --runtime acp --prompt "hello" -- python3 examples/acp_hello_agent.py`
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from acp import (
    PROTOCOL_VERSION,
    Agent,
    Client,
    InitializeResponse,
    NewSessionResponse,
    PromptResponse,
    run_agent,
    update_agent_message_text,
)
from acp.schema import (
    AcpMcpServer,
    AudioContentBlock,
    ClientCapabilities,
    EmbeddedResourceContentBlock,
    HttpMcpServer,
    ImageContentBlock,
    Implementation,
    McpServerStdio,
    ResourceContentBlock,
    SseMcpServer,
    TextContentBlock,
)


class HelloAgent(Agent):
    def __init__(self) -> None:
        self.conn: Client | None = None

    def on_connect(self, conn: Client) -> None:
        self.conn = conn

    async def initialize(self, protocol_version: int, client_capabilities: ClientCapabilities | None = None,
                         client_info: Implementation | None = None, **kwargs: Any) -> InitializeResponse:
        return InitializeResponse(protocol_version=PROTOCOL_VERSION)

    async def new_session(self, cwd: str, additional_directories: list[str] | None = None,
                          mcp_servers: list[HttpMcpServer | SseMcpServer | AcpMcpServer | McpServerStdio] | None = None,
                          **kwargs: Any) -> NewSessionResponse:
        return NewSessionResponse(session_id=f"hello-{uuid.uuid4().hex[:8]}")

    async def prompt(self, session_id: str,
                     prompt: list[TextContentBlock | ImageContentBlock | AudioContentBlock | ResourceContentBlock
                                  | EmbeddedResourceContentBlock],
                     **kwargs: Any) -> PromptResponse:
        assert self.conn is not None
        text = " ".join(block.text for block in prompt if isinstance(block, TextContentBlock))
        await self.conn.session_update(session_id, update_agent_message_text("Hello! "))
        await self.conn.session_update(session_id, update_agent_message_text(f"You asked: {text}"))
        return PromptResponse(stop_reason="end_turn")

    async def cancel(self, session_id: str, **kwargs: Any) -> None:
        return None


if __name__ == "__main__":
    asyncio.run(run_agent(HelloAgent()))
