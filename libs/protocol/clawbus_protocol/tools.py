"""The tool service on the bus: what a gateway asks an agent-runner about its tools.

Tools live in the agent-runner (it owns their code, the agents' tool policies and the
HTTP policy); a gateway asks any runner over NATS request/reply (`Names.tools_list_subject`,
`Names.tools_invoke_subject`, one queue group): the tools an agent is offered, or one
invocation outside any run (001's POST /api/tools/:name/invoke).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field

from clawbus_protocol.errors import ErrorInfo


class ToolDescriptor(BaseModel):
    name: str
    description: str
    parameters: dict[str, Any]
    enabled: bool  # the agent's tool policy offers it
    invokable: bool  # the HTTP policy lets a client invoke it directly


class ToolsListRequest(BaseModel):
    tenant_id: UUID
    agent_key: str


class ToolsListReply(BaseModel):
    tools: list[ToolDescriptor] = Field(default_factory=list)
    error: ErrorInfo | None = None


class ToolInvokeRequest(BaseModel):
    tenant_id: UUID
    agent_key: str
    tool: str
    params: dict[str, Any]
    caller: str  # the principal's name, for the runner's log


class ToolInvokeReply(BaseModel):
    result: str | None = None
    error: ErrorInfo | None = None
