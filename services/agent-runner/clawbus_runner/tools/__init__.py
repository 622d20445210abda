"""Agent tools: the registry and the built-in tools."""

from clawbus_runner.tools.base import (
    MAX_RESULT_CHARS,
    Tool,
    ToolContext,
    ToolError,
    ToolPolicy,
    ToolRegistry,
    ToolSpec,
)

__all__ = [
    "MAX_RESULT_CHARS",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolPolicy",
    "ToolRegistry",
    "ToolSpec",
]
