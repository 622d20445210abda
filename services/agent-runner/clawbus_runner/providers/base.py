"""What every provider speaks: a normalised stream of events for one model call."""

from __future__ import annotations

import json
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


def tool_arguments(raw: str) -> dict[str, Any]:
    """A streamed tool call's JSON arguments; unparseable or non-object text is kept raw
    (under `_raw`) so the tool can refuse it clearly instead of the run failing."""
    try:
        arguments = json.loads(raw or "{}")
    except json.JSONDecodeError:
        return {"_raw": raw}
    return arguments if isinstance(arguments, dict) else {"_raw": raw}
