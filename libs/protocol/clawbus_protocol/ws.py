"""The WebSocket control channel's frames (`/` as 000 describes it, `/ws` as 001 does).

    client -> gateway   RequestFrame      {"id": 1, "method": "chat.run", "params": {...}}
    gateway -> client   ResponseFrame     {"type": "res", "id": 1, "ok": true, "result": {...}}
                                          {"type": "res", "id": 1, "ok": false, "error": {...}}
                        000 events        {"type": "chat.delta", "data": {...}}
                        001 events        {"type": "message:sent", "payload": {...}}

Every request gets exactly one response with its `id` (`id: null` when the frame was not
JSON or had no usable id). 000's events carry `data`, 001's carry `payload`, as each
document writes them. Errors are the one error model's HTTP body (`ErrorBody`).

`SessionEventNotice` is what gateway replicas publish to each other on NATS core, so a
client sees the events of a session whichever replica runs it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, TypeAlias
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator
from pydantic.alias_generators import to_camel

from clawbus_protocol.channels import ChannelInfo, ChannelList
from clawbus_protocol.errors import ErrorBody
from clawbus_protocol.openclaw_browser import BrowserScreenshot
from clawbus_protocol.runs import AbortResult, QueueMode, Usage

MAX_KEY_CHARS = 256

FrameId = Annotated[int, Field(strict=True)] | Annotated[str, Field(max_length=128)]
SessionKey = Annotated[str, Field(min_length=1, max_length=MAX_KEY_CHARS)]


class _Wire(BaseModel):
    """camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True
    )


class _Params(_Wire):
    # A misspelt parameter is an error the client hears about, not a silent default.
    model_config = ConfigDict(extra="forbid")


# --- client -> gateway ----------------------------------------------------------------


class RequestFrame(BaseModel):
    """A method call. `type: "req"` (OpenClaw's own clients send it) is accepted."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["req"] | None = None
    id: FrameId
    method: str = Field(min_length=1, max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)


Thinking = Literal["off", "minimal", "low", "medium", "high", "xhigh"]


class ChatRunOptions(_Params):
    model: str | None = Field(default=None, min_length=1, max_length=200)
    # Accepted for 000's clients; reasoning effort is not passed to models yet.
    thinking: Thinking | None = None
    # false: no chat.delta events, only chat.done with the whole text.
    stream: StrictBool = True
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    queue_mode: QueueMode | None = None


class ChatRunParams(_Params):
    message: str = Field(min_length=1)
    session_key: SessionKey | None = None  # None: the agent's main session
    agent_id: str | None = Field(default=None, min_length=1, max_length=64)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=MAX_KEY_CHARS)
    options: ChatRunOptions = Field(default_factory=ChatRunOptions)


class ChatAbortParams(_Params):
    run_id: UUID | None = None
    session_key: SessionKey | None = None

    @model_validator(mode="after")
    def _one_target(self) -> ChatAbortParams:
        if (self.run_id is None) == (self.session_key is None):
            raise ValueError("give exactly one of runId or sessionKey")
        return self


class SessionListParams(_Params):
    agent_id: str | None = Field(default=None, min_length=1, max_length=64)
    limit: int = Field(default=100, ge=1, le=500)
    offset: int = Field(default=0, ge=0)


class SessionGetParams(_Params):
    session_key: SessionKey


class ChannelStatusParams(_Params):
    channel_id: str = Field(min_length=1, max_length=64)


class BrowserScreenshotParams(_Params):
    selector: str | None = None
    full_page: StrictBool = False


class SubscribeParams(_Params):
    """Which sessions' 001 events to receive: listed keys, or every session of the tenant."""

    session_keys: list[SessionKey] = Field(default_factory=list, max_length=1000)
    all: StrictBool = False

    @model_validator(mode="after")
    def _something(self) -> SubscribeParams:
        if not self.session_keys and not self.all:
            raise ValueError("give sessionKeys or all: true")
        return self


class NoParams(_Params):
    pass


# --- results --------------------------------------------------------------------------


class ChatRunResult(_Wire):
    run_id: UUID
    session_key: str
    # "accepted": a new run; otherwise a retried idempotency key's run, in its state.
    status: Literal["accepted", "queued", "running", "completed", "failed", "aborted"] = "accepted"


class SessionInfo(_Wire):
    session_key: str
    agent_id: str
    channel: str
    title: str | None
    created_at: datetime
    updated_at: datetime
    message_count: int
    active_runs: int


class SessionList(_Wire):
    sessions: list[SessionInfo]


class Subscription(_Wire):
    session_keys: list[str]
    all: bool


class SystemStatus(_Wire):
    status: Literal["ok", "degraded"]
    gateway_version: str
    instance_id: str
    uptime: int  # seconds since this gateway process started
    active_runs: int  # runs this replica is streaming to a client
    sessions: int  # the caller's tenant
    connections: int  # WebSocket clients of this replica


MethodResult: TypeAlias = (
    ChatRunResult
    | AbortResult
    | SessionList
    | SessionInfo
    | Subscription
    | SystemStatus
    | ChannelList
    | ChannelInfo
    | BrowserScreenshot
)


# --- gateway -> client: the response ---------------------------------------------------


def _absent(value: object) -> bool:
    return value is None


class ResponseFrame(BaseModel):
    """Carries `result` when ok, `error` otherwise; never both."""

    type: Literal["res"] = "res"
    id: int | str | None
    ok: bool
    result: MethodResult | None = Field(default=None, exclude_if=_absent)
    error: ErrorBody | None = Field(default=None, exclude_if=_absent)


# --- gateway -> client: 000's events (`data`) -------------------------------------------


class WsUsage(_Wire):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def of(cls, usage: Usage) -> WsUsage:
        return cls.model_validate(usage.model_dump())


class Connected(_Wire):
    client_id: UUID
    gateway_version: str
    capabilities: list[str]  # the methods this connection may call
    events: list[str]


class ConnectedEvent(BaseModel):
    type: Literal["connected"] = "connected"
    data: Connected


class ChatDelta(_Wire):
    session_key: str
    run_id: UUID
    delta: str


class ChatDeltaEvent(BaseModel):
    type: Literal["chat.delta"] = "chat.delta"
    data: ChatDelta


class ChatDone(_Wire):
    """The run's end: its whole text, or (aborted) the part produced before the abort."""

    session_key: str
    run_id: UUID
    text: str
    finish_reason: str
    model: str | None = None
    usage: WsUsage = Field(default_factory=WsUsage)
    aborted: bool = False


class ChatDoneEvent(BaseModel):
    type: Literal["chat.done"] = "chat.done"
    data: ChatDone


class ChatError(_Wire):
    session_key: str
    run_id: UUID
    error: ErrorBody


class ChatErrorEvent(BaseModel):
    """A run that failed; like chat.done, it ends the run's events."""

    type: Literal["chat.error"] = "chat.error"
    data: ChatError


class ToolCallData(_Wire):
    run_id: UUID
    session_key: str
    call_id: str
    tool: str
    params: dict[str, Any]


class ToolCallFrame(BaseModel):
    type: Literal["tool.call"] = "tool.call"
    data: ToolCallData


class ToolResultData(_Wire):
    run_id: UUID
    session_key: str
    call_id: str
    tool: str
    result: Any = None
    is_error: bool = False


class ToolResultFrame(BaseModel):
    type: Literal["tool.result"] = "tool.result"
    data: ToolResultData


class Heartbeat(_Wire):
    timestamp: int  # Unix milliseconds
    status: Literal["ok"] = "ok"


class HeartbeatEvent(BaseModel):
    type: Literal["heartbeat"] = "heartbeat"
    data: Heartbeat


# --- gateway -> client: 001's session events (`payload`) ---------------------------------


class SessionCreated(_Wire):
    session_key: str
    agent_id: str
    channel: str
    timestamp: int


class MessageEvent(_Wire):
    """A user message accepted (`message:received`) or an assistant reply done (`:sent`)."""

    session_key: str
    run_id: UUID
    channel: str
    role: Literal["user", "assistant"]
    message: str
    timestamp: int


class ToolInvoked(_Wire):
    session_key: str
    run_id: UUID
    call_id: str
    tool: str
    params: dict[str, Any]
    timestamp: int


class SessionErrorData(_Wire):
    session_key: str
    run_id: UUID | None
    error: ErrorBody
    timestamp: int


class SessionCreatedEvent(BaseModel):
    type: Literal["session:created"] = "session:created"
    payload: SessionCreated


class MessageReceivedEvent(BaseModel):
    type: Literal["message:received"] = "message:received"
    payload: MessageEvent


class MessageSentEvent(BaseModel):
    type: Literal["message:sent"] = "message:sent"
    payload: MessageEvent


class ToolInvokedEvent(BaseModel):
    type: Literal["tool:invoked"] = "tool:invoked"
    payload: ToolInvoked


class SessionErrorEvent(BaseModel):
    type: Literal["error"] = "error"
    payload: SessionErrorData


SessionEvent = Annotated[
    SessionCreatedEvent
    | MessageReceivedEvent
    | MessageSentEvent
    | ToolInvokedEvent
    | SessionErrorEvent,
    Field(discriminator="type"),
]

RUN_EVENTS = ("chat.delta", "chat.done", "chat.error", "tool.call", "tool.result", "heartbeat")
SESSION_EVENTS = ("session:created", "message:received", "message:sent", "tool:invoked", "error")


class SessionEventNotice(BaseModel):
    """NATS core, gateway to every gateway replica: a session event for its clients."""

    tenant_id: UUID
    session_key: str
    origin: str  # the publishing replica's instance id, for logs
    event: SessionEvent


ServerFrame: TypeAlias = (
    ResponseFrame
    | ConnectedEvent
    | ChatDeltaEvent
    | ChatDoneEvent
    | ChatErrorEvent
    | ToolCallFrame
    | ToolResultFrame
    | HeartbeatEvent
    | SessionCreatedEvent
    | MessageReceivedEvent
    | MessageSentEvent
    | ToolInvokedEvent
    | SessionErrorEvent
)
