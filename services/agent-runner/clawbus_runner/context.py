"""The context a model sees for one run: system prompt and conversation."""

from __future__ import annotations

from clawbus_core.store.runs import Claim
from clawbus_protocol.runs import ChatMessage, RunRequest


def build_context(request: RunRequest, claim: Claim) -> tuple[str, list[ChatMessage]]:
    system = "\n\n".join(p for p in (claim.system_prompt, request.input.system) if p)
    if claim.history is not None:
        return system, claim.history
    return system, list(request.input.messages)
