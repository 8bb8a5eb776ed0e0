"""ACP agents written the way the `agent-client-protocol` SDK documents them: a class with typed handlers run by
`acp.run_agent`. The first argument picks one:

- `stream`: answers a prompt in several message chunks around a tool call (started, updated, completed);
  advertises `session/close`.
- `permission`: asks the client for permission to run a tool and says in its reply which outcome it got.
- `newer-protocol`: answers `initialize` with a protocol version above the SDK's.
- `malformed`: answers `initialize` with a line that is not JSON, then waits for ever.
- `exit-in-initialize`: exits while handling `initialize`.
"""

from __future__ import annotations

import asyncio
import os
import sys
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
    start_tool_call,
    update_agent_message_text,
    update_tool_call,
)
from acp.schema import (
    AcpMcpServer,
    AgentCapabilities,
    AudioContentBlock,
    ClientCapabilities,
    EmbeddedResourceContentBlock,
    HttpMcpServer,
    ImageContentBlock,
    Implementation,
    McpServerStdio,
    PermissionOption,
    ResourceContentBlock,
    SessionCapabilities,
    SessionCloseCapabilities,
    SseMcpServer,
    TextContentBlock,
    ToolCallUpdate,
)

PromptBlocks = list[TextContentBlock | ImageContentBlock | AudioContentBlock | ResourceContentBlock
                    | EmbeddedResourceContentBlock]


class TypedAgent(Agent):
    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.conn: Client | None = None

    def on_connect(self, conn: Client) -> None:
        self.conn = conn

    async def initialize(self, protocol_version: int, client_capabilities: ClientCapabilities | None = None,
                         client_info: Implementation | None = None, **kwargs: Any) -> InitializeResponse:
        if self.behaviour == "exit-in-initialize":
            print("agent: giving up during initialize", file=sys.stderr, flush=True)
            os._exit(4)
        if self.behaviour == "malformed":
            os.write(1, b"{this is not json\n")
            await asyncio.Event().wait()
        version = PROTOCOL_VERSION + 1 if self.behaviour == "newer-protocol" else PROTOCOL_VERSION
        capabilities = AgentCapabilities(session_capabilities=SessionCapabilities(close=SessionCloseCapabilities()))
        return InitializeResponse(protocol_version=version, agent_capabilities=capabilities,
                                  agent_info=Implementation(name="typed-agent", version="1.0"))

    async def new_session(self, cwd: str, additional_directories: list[str] | None = None,
                          mcp_servers: list[HttpMcpServer | SseMcpServer | AcpMcpServer | McpServerStdio] | None = None,
                          **kwargs: Any) -> NewSessionResponse:
        return NewSessionResponse(session_id=f"typed-{uuid.uuid4().hex[:8]}")

    async def prompt(self, session_id: str, prompt: PromptBlocks, **kwargs: Any) -> PromptResponse:
        assert self.conn is not None
        text = " ".join(block.text for block in prompt if isinstance(block, TextContentBlock))
        if self.behaviour == "permission":
            call = ToolCallUpdate(tool_call_id="call-1", title="rm -rf build", kind="execute", status="pending")
            await self.conn.session_update(session_id, start_tool_call("call-1", "rm -rf build", kind="execute"))
            answer = await self.conn.request_permission(
                options=[PermissionOption(option_id="allow", name="Allow", kind="allow_once"),
                         PermissionOption(option_id="reject", name="Reject", kind="reject_once")],
                session_id=session_id, tool_call=call)
            outcome = answer.outcome
            chosen = getattr(outcome, "option_id", None) or outcome.outcome
            await self.conn.session_update(session_id, update_tool_call("call-1", status="failed"))
            await self.conn.session_update(session_id, update_agent_message_text(f"permission: {chosen}"))
            return PromptResponse(stop_reason="end_turn")
        await self.conn.session_update(session_id, update_agent_message_text("Reading "))
        await self.conn.session_update(session_id, start_tool_call("read-1", "Read notes.txt", kind="read",
                                                                   status="pending"))
        await self.conn.session_update(session_id, update_tool_call("read-1", status="in_progress"))
        await self.conn.session_update(session_id, update_agent_message_text("your prompt: "))
        await self.conn.session_update(session_id, update_tool_call("read-1", status="completed"))
        await self.conn.session_update(session_id, update_agent_message_text(text))
        return PromptResponse(stop_reason="end_turn")

    async def cancel(self, session_id: str, **kwargs: Any) -> None:
        return None

    async def close_session(self, session_id: str, **kwargs: Any) -> None:
        return None


if __name__ == "__main__":
    # session/close is stable in the v1 schema; this SDK release still files it under its unstable flag.
    asyncio.run(run_agent(TypedAgent(sys.argv[1] if len(sys.argv) > 1 else "stream"), use_unstable_protocol=True))
