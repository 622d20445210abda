"""What both wire encoders share: a reply resolved for one request, and stream event kinds."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

# Compact separators like the real APIs; one encoder instance avoids per-call option parsing.
encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

# Kinds of stream events, for Reply.drop_after_chunks: it counts CONTENT events and never lets
# a TERMINAL one (finish reason, usage, [DONE], message_delta/stop) out; FRAMEs pass.
FRAME: Final = 0
CONTENT: Final = 1
TERMINAL: Final = 2
Events = list[tuple[bytes, int]]  # (encoded SSE event, kind)


@dataclass(slots=True)
class ToolPlan:
    id: str
    name: str
    arguments: dict[str, Any]
    fragments: list[str]  # "".join(fragments) is `arguments` as JSON


@dataclass(slots=True)
class Plan:
    """A reply resolved for one request: what to say and what it "costs" in tokens."""

    chunks: list[str]
    tools: list[ToolPlan]
    finish_reason: str | None  # as scripted; each wire translates and defaults it
    prompt_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    @property
    def completion_tokens(self) -> int:
        return len(self.chunks) + sum(len(t.fragments) for t in self.tools)
