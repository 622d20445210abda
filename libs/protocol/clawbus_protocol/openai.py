"""The OpenAI Chat Completions wire shapes clawbus serves on /v1/chat/completions."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationInfo, field_validator

from clawbus_protocol.runs import MAX_CLIENT_TOOLS, ToolName, Usage, check_tool_names


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class OpenAIToolCallFunction(BaseModel):
    name: str
    arguments: str = ""


class OpenAIToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: OpenAIToolCallFunction


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[OpenAIToolCall] | None = None
    tool_call_id: str | None = None


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: ToolName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class ChatCompletionTool(BaseModel):
    type: Literal["function"]
    function: FunctionDefinition


class ToolChoiceFunction(BaseModel):
    name: ToolName


class NamedToolChoiceParam(BaseModel):
    type: Literal["function"]
    function: ToolChoiceFunction


ToolChoiceParam = Literal["auto", "none", "required"] | NamedToolChoiceParam


class StreamOptions(BaseModel):
    include_usage: StrictBool = False


class ChatCompletionRequest(BaseModel):
    # Unknown OpenAI fields (logprobs, seed, ...) are accepted and ignored, as OpenAI-compatible
    # servers commonly do; the known ones are type-checked.
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=200)
    messages: list[OpenAIMessage] = Field(min_length=1, max_length=10_000)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=256)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    tools: list[ChatCompletionTool] | None = Field(default=None, max_length=MAX_CLIENT_TOOLS)
    tool_choice: ToolChoiceParam | None = None
    parallel_tool_calls: StrictBool | None = None

    @field_validator("tools")
    @classmethod
    def _unique_tools(
        cls, tools: list[ChatCompletionTool] | None
    ) -> list[ChatCompletionTool] | None:
        if tools is not None:
            names = [t.function.name for t in tools]
            check_tool_names(names, None, place="tools.{}.function.name")
        return tools

    @field_validator("tool_choice")
    @classmethod
    def _choice_fits(
        cls, choice: ToolChoiceParam | None, info: ValidationInfo
    ) -> ToolChoiceParam | None:
        # "auto" and "none" without tools are harmless and some clients always send them.
        if choice is None or choice in ("auto", "none"):
            return choice
        tools: list[ChatCompletionTool] | None = info.data.get("tools")
        if not tools:
            raise ValueError(f"tool_choice {choice!r} needs tools to choose from")
        if isinstance(choice, NamedToolChoiceParam):
            names = [t.function.name for t in tools]
            check_tool_names(names, choice.function.name, place="tools.{}.function.name")
        return choice


class ChatCompletionMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[OpenAIToolCall] | None = None


class ChatCompletionChoice(BaseModel):
    index: int = 0
    message: ChatCompletionMessage
    finish_reason: str


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: Usage


class ChunkToolCall(BaseModel):
    """A tool call in a stream chunk; clawbus sends each call whole, in one chunk."""

    index: int
    id: str
    type: Literal["function"] = "function"
    function: OpenAIToolCallFunction


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ChunkToolCall] | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    uptime: int  # seconds this gateway has served (001)
    checks: dict[str, Any] = Field(default_factory=dict)
