"""The OpenAI Responses API wire shapes clawbus serves on /v1/responses (plain and SSE).

Only what a text agent produces: one assistant `message` output item holding one
`output_text` part. Shapes follow the `openai` SDK's `openai.types.responses` models.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from clawbus_protocol.errors import ErrorCode, ErrorInfo
from clawbus_protocol.runs import Usage

# --- request ----------------------------------------------------------------------------------


class InputContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str  # input_text / output_text are read; other kinds are refused by the route
    text: str | None = None


class InputItem(BaseModel):
    """One item of `input`: a message (`type` may be left out, as the SDK allows)."""

    model_config = ConfigDict(extra="allow")

    type: str = "message"
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: str | list[InputContentPart] | None = None


class ResponsesRequest(BaseModel):
    # Unknown Responses fields (store, metadata, reasoning, ...) are accepted and ignored, as
    # on /v1/chat/completions; the known ones are type-checked.
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=200)
    input: str | list[InputItem] = Field(min_length=1)
    instructions: str | None = None
    stream: StrictBool = False
    user: str | None = Field(default=None, max_length=256)
    previous_response_id: str | None = Field(default=None, max_length=64)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_output_tokens: int | None = Field(default=None, ge=1)


# --- the response object ----------------------------------------------------------------------

ResponseStatus = Literal["completed", "failed", "in_progress", "cancelled", "queued", "incomplete"]
ItemStatus = Literal["in_progress", "completed", "incomplete"]


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


class OutputMessage(BaseModel):
    type: Literal["message"] = "message"
    id: str
    status: ItemStatus
    role: Literal["assistant"] = "assistant"
    content: list[OutputText]


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int

    @classmethod
    def of(cls, usage: Usage) -> ResponseUsage:
        return cls(
            input_tokens=usage.prompt_tokens,
            output_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
        )


_OPENAI_ERROR_CODE: dict[ErrorCode, str] = {
    ErrorCode.RATE_LIMITED: "rate_limit_exceeded",
    ErrorCode.UPSTREAM_RATE_LIMITED: "rate_limit_exceeded",
    ErrorCode.INVALID_REQUEST: "invalid_prompt",
}


class ResponseError(BaseModel):
    """`response.error` of a failed response: OpenAI's code, and clawbus's own."""

    code: str
    message: str
    clawbus_code: ErrorCode

    @classmethod
    def of(cls, info: ErrorInfo) -> ResponseError:
        return cls(
            code=_OPENAI_ERROR_CODE.get(info.code, "server_error"),
            message=info.message,
            clawbus_code=info.code,
        )


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens", "content_filter"] | None = None


class Response(BaseModel):
    id: str
    object: Literal["response"] = "response"
    created_at: float
    completed_at: float | None = None
    status: ResponseStatus
    model: str
    output: list[OutputMessage] = Field(default_factory=list)
    usage: ResponseUsage | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    previous_response_id: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    user: str | None = None
    # Tools are the agent's, run inside clawbus; clients pass none.
    parallel_tool_calls: bool = False
    tool_choice: Literal["auto"] = "auto"
    tools: list[Any] = Field(default_factory=list)


# --- stream events (each SSE frame is `event: <type>` with the event as data) ----------------


class ResponseLifecycleEvent(BaseModel):
    type: Literal[
        "response.created",
        "response.in_progress",
        "response.completed",
        "response.failed",
        "response.incomplete",
    ]
    sequence_number: int
    response: Response


class OutputItemEvent(BaseModel):
    type: Literal["response.output_item.added", "response.output_item.done"]
    sequence_number: int
    output_index: int = 0
    item: OutputMessage


class ContentPartEvent(BaseModel):
    type: Literal["response.content_part.added", "response.content_part.done"]
    sequence_number: int
    item_id: str
    output_index: int = 0
    content_index: int = 0
    part: OutputText


class OutputTextDeltaEvent(BaseModel):
    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    sequence_number: int
    item_id: str
    output_index: int = 0
    content_index: int = 0
    delta: str
    logprobs: list[Any] = Field(default_factory=list)


class OutputTextDoneEvent(BaseModel):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    sequence_number: int
    item_id: str
    output_index: int = 0
    content_index: int = 0
    text: str
    logprobs: list[Any] = Field(default_factory=list)


ResponseStreamEvent = (
    ResponseLifecycleEvent
    | OutputItemEvent
    | ContentPartEvent
    | OutputTextDeltaEvent
    | OutputTextDoneEvent
)
