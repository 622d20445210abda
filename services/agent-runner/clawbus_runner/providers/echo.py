"""`clawbus/echo`: the offline model, so the embedded default answers without any key."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from clawbus_protocol.runs import Usage

from clawbus_runner.providers.base import Finish, ModelCall, ProviderEvent, TextDelta

_WORDS = re.compile(r"\S+\s*")


def _count_words(text: str) -> int:
    return len(text.split())


class EchoProvider:
    async def stream(self, call: ModelCall) -> AsyncIterator[ProviderEvent]:
        last_user = next((m.content for m in reversed(call.messages) if m.role == "user"), "")
        reply = f"You said: {last_user}" if last_user else "You said nothing."
        pieces = _WORDS.findall(reply)
        for piece in pieces:
            yield TextDelta(piece)
        prompt = _count_words(call.system) + sum(_count_words(m.content) for m in call.messages)
        yield Finish(
            reason="stop",
            usage=Usage(
                prompt_tokens=prompt,
                completion_tokens=len(pieces),
                total_tokens=prompt + len(pieces),
            ),
        )
