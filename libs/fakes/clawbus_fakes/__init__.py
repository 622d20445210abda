"""Test doubles for clawbus: a scripted fake model provider speaking the OpenAI/Anthropic wires."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clawbus_fakes.models import (
        DefaultReply,
        FakeModelServer,
        RecordedRequest,
        Reply,
        ToolCall,
        WireProtocol,
    )
    from clawbus_fakes.telegram import FakeTelegramServer

__all__ = [
    "DefaultReply",
    "FakeModelServer",
    "FakeTelegramServer",
    "RecordedRequest",
    "Reply",
    "ToolCall",
    "WireProtocol",
]


def __getattr__(name: str) -> Any:
    # Lazy, so `python -m clawbus_fakes.models` does not find the module already imported by its
    # package (runpy warns about that and the module would be executed twice).
    if name == "FakeTelegramServer":
        from clawbus_fakes import telegram

        return telegram.FakeTelegramServer
    if name in __all__:
        from clawbus_fakes import models

        return getattr(models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
