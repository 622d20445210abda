"""The OpenClaw REST API v1 shapes (002): /api/v1/chat (+ SSE /chat/stream), /api/v1/sessions
(+ history), /api/v1/status, and 002's error envelope.

Field names on the wire are camelCase, as 002 writes them; Python uses snake_case.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool
from pydantic.alias_generators import to_camel

from clawbus_protocol.errors import ErrorCode, ErrorInfo
from clawbus_protocol.runs import Usage

MAX_KEY_CHARS = 256


class _Wire(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True
    )


# --- /chat and /chat/stream -------------------------------------------------------------------


class ChatRequest(_Wire):
    model_config = ConfigDict(extra="allow")

    message: str = Field(min_length=1)
    # None: the agent's main session (as 000's /v1/agent/run).
    session_key: str | None = Field(default=None, min_length=1, max_length=MAX_KEY_CHARS)
    # POST /chat with `"stream": true` answers as /chat/stream does.
    stream: StrictBool | None = None
    # Not in 002: as on 000's /v1/agent/run, the agent and a `provider/model` to run with.
    agent_id: str | None = Field(default=None, min_length=1, max_length=MAX_KEY_CHARS)
    model: str | None = Field(default=None, min_length=1, max_length=200)


class ChatUsage(_Wire):
    input_tokens: int = 0
    output_tokens: int = 0

    @classmethod
    def of(cls, usage: Usage) -> ChatUsage:
        return cls(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens)


class ChatResponse(_Wire):
    id: str  # the run's id: also what `x-clawbus-run-id` / `?runId=` take to resume a stream
    content: str
    session_key: str
    model: str
    usage: ChatUsage
    created_at: datetime


class StreamStart(_Wire):
    """SSE `event: start`."""

    id: str


class StreamDelta(_Wire):
    """SSE `event: delta`."""

    content: str


class StreamDone(_Wire):
    """SSE `event: done`."""

    usage: ChatUsage


# --- /sessions --------------------------------------------------------------------------------


class SessionInfo(_Wire):
    key: str
    channel: str
    created_at: datetime
    last_activity: datetime
    message_count: int


class SessionList(_Wire):
    sessions: list[SessionInfo]


class HistoryMessage(_Wire):
    role: str
    content: str
    timestamp: datetime


class History(_Wire):
    messages: list[HistoryMessage]


# --- /status ----------------------------------------------------------------------------------


class StatusModel(_Wire):
    provider: str
    model: str


class Status(_Wire):
    status: Literal["healthy", "degraded"]
    version: str
    uptime: int  # seconds since this gateway process started serving
    active_sessions: int  # the caller's tenant's sessions (what GET /sessions lists)
    model: StatusModel  # the gateway's default model


# --- errors -----------------------------------------------------------------------------------

# 002 names the codes in UPPER_CASE; ours map by name except where 002 has its own word.
_CODES: dict[ErrorCode, str] = {
    ErrorCode.UPSTREAM_ERROR: "MODEL_ERROR",
    ErrorCode.UPSTREAM_RATE_LIMITED: "RATE_LIMITED",
}


def error_code(code: ErrorCode) -> str:
    return _CODES.get(code, code.name)


class ErrorBody(_Wire):
    code: str
    message: str
    retry_after: int | None = None  # seconds, when a retry may succeed then
    param: str | None = None  # not in 002: the offending field, for 400s


class ErrorEnvelope(_Wire):
    error: ErrorBody

    @classmethod
    def of(cls, info: ErrorInfo) -> ErrorEnvelope:
        retry_after_ms = info.retry_after_ms
        param = info.details.get("param")
        return cls(
            error=ErrorBody(
                code=error_code(info.code),
                message=info.message,
                retry_after=None
                if retry_after_ms is None
                else max(1, math.ceil(retry_after_ms / 1000)),
                param=param if isinstance(param, str) else None,
            )
        )
