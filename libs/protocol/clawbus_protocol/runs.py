"""Bus messages for runs: the request a gateway publishes and the events a runner emits.

Every event carries the run id, a per-run sequence number (1, 2, ... across all attempts,
so a reader orders and de-duplicates by it alone) and the attempt that produced it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from clawbus_protocol.errors import ErrorInfo

Role = Literal["system", "user", "assistant", "tool"]


class ToolCall(BaseModel):
    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    # The arguments as the model wrote them (JSON text), when known: what an OpenAI client
    # is shown and what goes back to an OpenAI-wire model, exactly.
    raw_arguments: str | None = None

    @classmethod
    def parsed(cls, id: str, name: str, text: str) -> ToolCall:
        """A call whose arguments were written as JSON `text`. Text that is not a JSON object
        is kept under `_raw`, so a tool refuses it clearly instead of the run failing."""
        try:
            arguments = json.loads(text.strip() or "{}")
        except json.JSONDecodeError:
            arguments = None
        if not isinstance(arguments, dict):
            arguments = {"_raw": text}
        return cls(
            id=id, name=name, arguments=arguments, raw_arguments=text if text.strip() else None
        )

    def arguments_text(self) -> str:
        """The arguments as JSON text: as written when known."""
        if self.raw_arguments is not None:
            return self.raw_arguments
        if self.arguments.keys() == {"_raw"} and isinstance(self.arguments["_raw"], str):
            return self.arguments["_raw"]
        return json.dumps(self.arguments)


class ChatMessage(BaseModel):
    """One message of a conversation, provider-neutral."""

    role: Role
    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None


# A function name as OpenAI and Anthropic both accept it.
ToolName = Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
MAX_CLIENT_TOOLS = 128


def check_tool_names(names: Sequence[str], forced: str | None, *, place: str) -> None:
    """Tool names are unique and a forced tool (`tool_choice`) is among them; a ValueError
    naming the place otherwise. `place` locates tool i's name, e.g. "tools.{}.function.name"."""
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            where, first = place.format(i), place.format(seen[name])
            raise ValueError(f"{where}: the name {name!r} is already used by {first}")
        seen[name] = i
    if forced is not None and forced not in seen:
        raise ValueError(f"tool_choice names {forced!r}, which is not one of the tools")


class ClientTool(BaseModel):
    """A function tool a client brings to its run: offered to the model, never run here."""

    name: ToolName
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class NamedToolChoice(BaseModel):
    """The model must call this tool."""

    name: ToolName


ToolChoice = Literal["auto", "none", "required"] | NamedToolChoice


class RunOptions(BaseModel):
    """Per-run knobs a client may set; `model` overrides the agent's model.

    `tools` are the client's own tools (OpenAI function calling): when given, the model is
    offered exactly these instead of the agent's, and a step that calls tools ends the run
    with finish reason `tool_calls`: the client runs them and answers with their results.
    `tool_choice` and `parallel_tool_calls` apply to them.
    """

    model: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    tools: list[ClientTool] | None = Field(default=None, max_length=MAX_CLIENT_TOOLS)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None

    @model_validator(mode="after")
    def _tools_fit(self) -> RunOptions:
        if self.tools is None:
            if self.tool_choice is not None or self.parallel_tool_calls is not None:
                raise ValueError("tool_choice and parallel_tool_calls apply to tools: send tools")
            return self
        choice = self.tool_choice
        forced = choice.name if isinstance(choice, NamedToolChoice) else None
        check_tool_names([t.name for t in self.tools], forced, place="tools.{}.name")
        return self


class RunInput(BaseModel):
    """What the run answers.

    `system` holds the client's own system text (added after the agent's prompt).
    `messages` holds the client's conversation for this turn, ending with the user turn (or
    with the results of the model's calls to the client's tools). With `use_session_history`
    the runner builds the context from the session's stored transcript instead (which
    already holds this turn's user message or tool results); otherwise the
    client's messages are the whole context (OpenAI's stateless semantics).
    """

    system: str | None = None
    messages: list[ChatMessage]
    use_session_history: bool = False


QueueMode = Literal["followup", "collect", "interrupt"]


class RunRequest(BaseModel):
    """Published on the runs work-queue once the run row is committed."""

    model_config = ConfigDict(frozen=True)

    run_id: UUID
    idempotency_key: str
    tenant_id: UUID
    agent_id: UUID
    agent_key: str
    session_id: UUID
    session_key: str
    input: RunInput
    options: RunOptions = Field(default_factory=RunOptions)
    # Redis channel of the gateway replica holding the client; None for fire-and-forget runs.
    reply_to: str | None = None
    # What this run does when its session is busy: run after (followup), merge with other
    # waiting messages into one follow-up (collect), or abort the current run (interrupt).
    queue_mode: QueueMode = "followup"
    created_at: float = Field(default_factory=time.time)


class AbortNotice(BaseModel):
    """NATS core, to every runner: stop these runs if you are executing them."""

    run_ids: list[UUID]
    reason: str = "aborted by request"


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
        )


class _Event(BaseModel):
    run_id: UUID
    seq: int
    attempt: int = 1
    ts: float = Field(default_factory=time.time)


class DeltaEvent(_Event):
    type: Literal["delta"] = "delta"
    text: str


class ToolCallEvent(_Event):
    type: Literal["tool_call"] = "tool_call"
    call: ToolCall


class ToolResultEvent(_Event):
    type: Literal["tool_result"] = "tool_result"
    call_id: str
    name: str
    result: Any = None
    is_error: bool = False


class DoneEvent(_Event):
    type: Literal["done"] = "done"
    text: str
    model: str
    finish_reason: str = "stop"
    usage: Usage = Field(default_factory=Usage)
    tool_calls: list[ToolCall] = Field(default_factory=list)


class ErrorEvent(_Event):
    type: Literal["error"] = "error"
    error: ErrorInfo


class AbortedEvent(_Event):
    type: Literal["aborted"] = "aborted"
    text: str = ""
    reason: str = ""


RunEvent = Annotated[
    DeltaEvent | ToolCallEvent | ToolResultEvent | DoneEvent | ErrorEvent | AbortedEvent,
    Field(discriminator="type"),
]
TerminalEvent = DoneEvent | ErrorEvent | AbortedEvent
TERMINAL_TYPES = frozenset({"done", "error", "aborted"})

run_event_adapter: TypeAdapter[RunEvent] = TypeAdapter(RunEvent)


def parse_event(raw: bytes | str) -> RunEvent:
    return run_event_adapter.validate_json(raw)


def is_terminal(event: RunEvent) -> bool:
    return event.type in TERMINAL_TYPES


class AbortResult(BaseModel):
    """Answer to an abort request (HTTP; WS `chat.abort` later): what is stopping."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    aborted: bool
    run_ids: list[UUID] = Field(alias="runIds")
