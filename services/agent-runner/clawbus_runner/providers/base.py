"""What every provider speaks: a normalised stream of events for one model call."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from clawbus_core.models import ModelRef
from clawbus_protocol.runs import ChatMessage, RunOptions, ToolCall, Usage


@dataclass(frozen=True)
class ToolDef:
    """A tool as the model is told about it."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    strict: bool | None = None  # OpenAI's strict schema adherence, when a client asks for it


@dataclass(frozen=True)
class ModelCall:
    model: ModelRef
    system: str
    messages: list[ChatMessage]
    options: RunOptions = field(default_factory=RunOptions)
    tools: tuple[ToolDef, ...] = ()


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCallOut:
    call: ToolCall


@dataclass(frozen=True)
class Finish:
    reason: str
    usage: Usage


ProviderEvent = TextDelta | ToolCallOut | Finish


class Provider(Protocol):
    def stream(self, call: ModelCall) -> AsyncIterator[ProviderEvent]:
        """Stream the model's answer; ends with exactly one Finish.

        Raises clawbus_protocol.errors.UpstreamError (or RateLimited-coded) for provider
        failures, so the runner records them without knowing the SDK.
        """
        ...
