"""The context a model sees for one run: system prompt and conversation."""

from __future__ import annotations

from clawbus_protocol.runs import ChatMessage, RunRequest


def build_context(
    request: RunRequest, system_prompt: str, history: list[ChatMessage] | None
) -> tuple[str, list[ChatMessage]]:
    system = "\n\n".join(p for p in (system_prompt, request.input.system) if p)
    if history is not None:
        return system, history
    return system, list(request.input.messages)
