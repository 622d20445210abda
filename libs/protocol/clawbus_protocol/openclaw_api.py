"""OpenClaw's HTTP API shapes (001): /api/status, /api/sessions, /api/messages, /api/tools
(+ invoke), and 001's error envelope.

Field names on the wire are camelCase, as 001 writes them; Python uses snake_case. Fields
001 does not show are marked as clawbus additions.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from clawbus_protocol.errors import ErrorCode, ErrorInfo
from clawbus_protocol.runs import Usage

MAX_KEY_CHARS = 256
# A channel name as sessions and the channel-bridge spell them (`telegram`, `discord`, ...).
CHANNEL_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
# Invocation params travel through the bus to a runner, within NATS's 1 MB message limit.
MAX_PARAMS_CHARS = 512_000


class _Wire(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True
    )


# --- /api/status ------------------------------------------------------------------------------


class Memory(_Wire):
    """MiB: `used` is this gateway process's resident memory, `total` the machine's."""

    used: int
    total: int


class ApiStatus(_Wire):
    gateway: Literal["running", "degraded"]
    # channel name → status (connected, connecting, error, disabled, not_configured).
    channels: dict[str, str]
    sessions: int
    memory: Memory


# --- /api/sessions ----------------------------------------------------------------------------


class ApiSession(_Wire):
    id: str  # the session key
    channel: str
    user_id: str | None  # the peer of a direct-message session; None for other kinds
    message_count: int
    last_activity: datetime
    agent_id: str  # clawbus addition
    created_at: datetime  # clawbus addition


class ApiSessionList(_Wire):
    sessions: list[ApiSession]


class ApiMessage(_Wire):
    role: str
    content: str
    timestamp: datetime


class ApiSessionDetail(ApiSession):
    """GET /api/sessions/:id: the session and its last `?limit=` messages (001 shows no body;
    this is the list entry plus the messages)."""

    messages: list[ApiMessage]


# --- /api/messages ----------------------------------------------------------------------------


class SendMessage(_Wire):
    """POST /api/messages: `message` enters the session of `userId` on `channel` as that user's
    message; the agent's reply is the answer."""

    model_config = ConfigDict(extra="forbid")

    channel: str = Field(pattern=CHANNEL_PATTERN)
    user_id: str = Field(min_length=1, max_length=128)
    message: str = Field(min_length=1)
    agent_id: str | None = Field(default=None, min_length=1, max_length=64)  # clawbus addition


class MessageUsage(_Wire):
    input_tokens: int = 0
    output_tokens: int = 0

    @classmethod
    def of(cls, usage: Usage) -> MessageUsage:
        return cls(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens)


class MessageSent(_Wire):
    id: str  # the run's id
    session_id: str
    channel: str
    user_id: str
    reply: str
    usage: MessageUsage


# --- /api/tools -------------------------------------------------------------------------------


class ApiTool(_Wire):
    name: str
    description: str
    enabled: bool  # the agent's tool policy offers it to the agent
    invokable: bool  # clawbus addition: POST /api/tools/:name/invoke may run it
    parameters: dict[str, Any]  # clawbus addition: the JSON schema of `params`


class ApiToolList(_Wire):
    tools: list[ApiTool]


class InvokeTool(_Wire):
    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] = Field(default_factory=dict)
    agent_id: str | None = Field(default=None, min_length=1, max_length=64)  # clawbus addition


class ToolInvoked(_Wire):
    tool: str
    ok: Literal[True] = True
    result: str


# --- errors -----------------------------------------------------------------------------------

# 001 names the codes in UPPER_CASE; ours map by name except where 001 has its own word.
_CODES: dict[ErrorCode, str] = {ErrorCode.UPSTREAM_RATE_LIMITED: "RATE_LIMITED"}


class ErrorBody(_Wire):
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorEnvelope(_Wire):
    error: ErrorBody

    @classmethod
    def of(cls, info: ErrorInfo) -> ErrorEnvelope:
        details = dict(info.details)
        if info.retry_after_ms is not None:
            details["retryAfterMs"] = info.retry_after_ms
        return cls(
            error=ErrorBody(
                code=_CODES.get(info.code, info.code.name), message=info.message, details=details
            )
        )
