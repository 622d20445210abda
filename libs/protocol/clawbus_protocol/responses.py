"""The OpenAI Responses API wire shapes clawbus serves on /v1/responses (plain and SSE).

A response's `output` holds one assistant `message` item with one `output_text` part, and,
when the client brought its own function `tools` and the model called them, one
`function_call` item per call. The client answers those with `function_call_output` input
items. Shapes follow the `openai` SDK's `openai.types.responses` models.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    Tag,
    ValidationInfo,
    field_validator,
)

from clawbus_protocol.errors import ErrorCode, ErrorInfo
from clawbus_protocol.runs import MAX_CLIENT_TOOLS, ToolName, Usage, check_tool_names

# --- request ----------------------------------------------------------------------------------


class InputContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str  # input_text / output_text are read; other kinds are refused by the route
    text: str | None = None


class InputMessage(BaseModel):
    """A message of `input` (`type` may be left out, as the SDK allows)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: str | list[InputContentPart] | None = None


class InputFunctionCall(BaseModel):
    """A call the model made earlier, sent back with the rest of the conversation (the
    `function_call` output item of an earlier response; `id` and `status` are not read)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str
    id: str | None = None


class InputFunctionCallOutput(BaseModel):
    """The client's result for one of the model's calls (`input_text` parts are joined)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[InputContentPart]


_INPUT_KINDS = ("message", "function_call", "function_call_output")


class InputOther(BaseModel):
    """An input item of another kind (reasoning, item_reference, ...): refused by the route,
    naming it."""

    model_config = ConfigDict(extra="allow")

    # Documented as none of the kinds above, so that an item matches one schema only.
    type: str = Field(json_schema_extra={"not": {"enum": list(_INPUT_KINDS)}})


def _input_kind(item: Any) -> str:
    kind = item.get("type", "message") if isinstance(item, dict) else getattr(item, "type", None)
    return kind if isinstance(kind, str) and kind in _INPUT_KINDS else "other"


InputItem = Annotated[
    Annotated[InputMessage, Tag("message")]
    | Annotated[InputFunctionCall, Tag("function_call")]
    | Annotated[InputFunctionCallOutput, Tag("function_call_output")]
    | Annotated[InputOther, Tag("other")],
    Discriminator(_input_kind),
]

# Tagged, so that a bad item's errors name the item (not "input should be a string").
Input = Annotated[
    Annotated[str, Field(min_length=1), Tag("text")]
    | Annotated[list[InputItem], Field(min_length=1, max_length=10_000), Tag("items")],
    Discriminator(lambda value: "items" if isinstance(value, list) else "text"),
]


class FunctionTool(BaseModel):
    """A function of the client's own (`openai.types.responses.FunctionTool`): offered to the
    model instead of the agent's tools, run by the client. Other tool types are refused."""

    model_config = ConfigDict(extra="allow")

    type: Literal["function"]
    name: ToolName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None

    @field_validator("type", mode="before")
    @classmethod
    def _function_only(cls, value: object) -> object:
        if value != "function":
            raise ValueError(f"tool type {value!r} is not supported (function tools only)")
        return value


class FunctionToolChoice(BaseModel):
    """The model must call this function (`openai.types.responses.ToolChoiceFunction`)."""

    type: Literal["function"]
    name: ToolName


ToolChoiceParam = Literal["auto", "none", "required"] | FunctionToolChoice


class ResponsesRequest(BaseModel):
    # Unknown Responses fields (store, metadata, reasoning, ...) are accepted and ignored, as
    # on /v1/chat/completions; the known ones are type-checked.
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=200)
    input: Input
    instructions: str | None = None
    stream: StrictBool = False
    user: str | None = Field(default=None, max_length=256)
    previous_response_id: str | None = Field(default=None, max_length=64)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_output_tokens: int | None = Field(default=None, ge=1)
    tools: list[FunctionTool] | None = Field(default=None, max_length=MAX_CLIENT_TOOLS)
    tool_choice: ToolChoiceParam | None = None
    parallel_tool_calls: StrictBool | None = None

    @field_validator("tools")
    @classmethod
    def _unique_tools(cls, tools: list[FunctionTool] | None) -> list[FunctionTool] | None:
        if tools is not None:
            check_tool_names([t.name for t in tools], None, place="tools.{}.name")
        return tools

    @field_validator("tool_choice")
    @classmethod
    def _choice_fits(
        cls, choice: ToolChoiceParam | None, info: ValidationInfo
    ) -> ToolChoiceParam | None:
        # "auto" and "none" without tools are harmless and some clients always send them.
        if choice is None or choice in ("auto", "none"):
            return choice
        tools: list[FunctionTool] | None = info.data.get("tools")
        if not tools:
            raise ValueError(f"tool_choice {choice!r} needs tools to choose from")
        if isinstance(choice, FunctionToolChoice):
            check_tool_names([t.name for t in tools], choice.name, place="tools.{}.name")
        return choice


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


class OutputFunctionCall(BaseModel):
    """A call of a client function (`openai.types.responses.ResponseFunctionToolCall`): the
    client runs it and answers with a `function_call_output` item naming `call_id`."""

    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    name: str
    arguments: str
    status: ItemStatus


OutputItem = Annotated[OutputMessage | OutputFunctionCall, Field(discriminator="type")]


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
    output: list[OutputItem] = Field(default_factory=list)
    usage: ResponseUsage | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    previous_response_id: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    user: str | None = None
    # The client's function tools, as the request gave them (none: the agent uses its own,
    # inside clawbus).
    parallel_tool_calls: bool = False
    tool_choice: ToolChoiceParam = "auto"
    tools: list[FunctionTool] = Field(default_factory=list)


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
    item: OutputItem


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


class FunctionCallArgumentsDeltaEvent(BaseModel):
    type: Literal["response.function_call_arguments.delta"] = (
        "response.function_call_arguments.delta"
    )
    sequence_number: int
    item_id: str
    output_index: int
    delta: str


class FunctionCallArgumentsDoneEvent(BaseModel):
    type: Literal["response.function_call_arguments.done"] = "response.function_call_arguments.done"
    sequence_number: int
    item_id: str
    output_index: int
    arguments: str


ResponseStreamEvent = (
    ResponseLifecycleEvent
    | OutputItemEvent
    | ContentPartEvent
    | OutputTextDeltaEvent
    | OutputTextDoneEvent
    | FunctionCallArgumentsDeltaEvent
    | FunctionCallArgumentsDoneEvent
)
