"""Model providers behind one interface: `Provider.stream(call)` yields text, tool calls, finish."""

from clawbus_runner.providers.base import (
    Finish,
    ModelCall,
    Provider,
    ProviderEvent,
    TextDelta,
    ToolCallOut,
    ToolDef,
)
from clawbus_runner.providers.registry import Providers

__all__ = [
    "Finish",
    "ModelCall",
    "Provider",
    "ProviderEvent",
    "Providers",
    "TextDelta",
    "ToolCallOut",
    "ToolDef",
]
