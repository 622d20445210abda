"""The OpenClaw HTTP shapes (000): /status, /v1/agent/run (+ SSE /stream), /v1/sessions.

Field names on the wire are camelCase, as 000 writes them; Python uses snake_case.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictBool
from pydantic.alias_generators import to_camel

from clawbus_protocol.runs import Usage

MAX_KEY_CHARS = 256


class _Wire(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True
    )


# --- /status ----------------------------------------------------------------------------------


class GatewayInfo(_Wire):
    port: int
    bind: str
    auth: str  # "token", or "token+password" when a password is configured too


class GatewayStatus(_Wire):
    status: Literal["ok", "degraded"]
    version: str
    uptime: int  # seconds since this gateway process started serving
    gateway: GatewayInfo
    # Channel id -> its status ("connected", "connecting", "error", "disabled",
    # "not_configured").
    channels: dict[str, str] = Field(default_factory=dict)


# --- /v1/agent/run ----------------------------------------------------------------------------


class AgentRunOptions(_Wire):
    model_config = ConfigDict(extra="allow")

    # Accepted for 000 compatibility; no model provider of clawbus takes it yet.
    thinking: str | None = None
    model: str | None = Field(default=None, min_length=1, max_length=200)


class AgentRunRequest(_Wire):
    model_config = ConfigDict(extra="allow")

    message: str = Field(min_length=1)
    # None: the agent's main session.
    session_key: str | None = Field(default=None, min_length=1, max_length=MAX_KEY_CHARS)
    agent_id: str | None = Field(default=None, min_length=1, max_length=MAX_KEY_CHARS)
    options: AgentRunOptions = Field(default_factory=AgentRunOptions)
    # 000 sends `"stream": true` to the /stream route; the route decides, not this flag.
    stream: StrictBool | None = None


class OpenClawUsage(_Wire):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def of(cls, usage: Usage) -> OpenClawUsage:
        return cls(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
        )


class AgentRunResult(_Wire):
    run_id: UUID
    session_key: str
    response: str
    usage: OpenClawUsage
    finish_reason: str


class StreamDelta(_Wire):
    """SSE `event: delta`."""

    delta: str
    run_id: UUID


class StreamDone(_Wire):
    """SSE `event: done`: `finishReason` is the model's, or "aborted"."""

    run_id: UUID
    finish_reason: str
    usage: OpenClawUsage | None = None


# --- /v1/sessions -----------------------------------------------------------------------------


class SessionInfo(_Wire):
    session_key: str
    agent_id: str
    channel: str
    created_at: datetime
    updated_at: datetime
    message_count: int


class SessionList(_Wire):
    sessions: list[SessionInfo]


class SessionMessage(_Wire):
    role: str
    content: str
    run_id: UUID | None = None
    created_at: datetime


class SessionDetail(SessionInfo):
    """GET /v1/sessions/{key}: the summary and the last messages, oldest first."""

    messages: list[SessionMessage]
