"""Anthropic Messages API with streaming."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
from clawbus_protocol.runs import ChatMessage, ToolCall, Usage
from clawbus_protocol.settings import ProviderConfig

from clawbus_runner.providers.base import Finish, ModelCall, ProviderEvent, TextDelta, ToolCallOut
from clawbus_runner.providers.errors import TRANSPORT_ERRORS, sdk_failure

DEFAULT_MAX_TOKENS = 4096

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}


_FAILURES: tuple[type[Exception], ...] = (anthropic.APIError, *TRANSPORT_ERRORS)


def _blocks(m: ChatMessage) -> list[dict[str, Any]]:
    if m.role == "tool":
        return [{"type": "tool_result", "tool_use_id": m.tool_call_id or "", "content": m.content}]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
    blocks += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in m.tool_calls
    ]
    return blocks


def _messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Anthropic wants alternating user/assistant turns; tool results travel as user turns."""
    out: list[dict[str, Any]] = []
    for m in messages:
        role = "assistant" if m.role == "assistant" else "user"
        blocks = _blocks(m)
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


class AnthropicProvider:
    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self._client = anthropic.AsyncAnthropic(
            api_key=config.api_key.get_secret_value() if config.api_key else "unused",
            base_url=config.base_url,
            max_retries=config.max_retries,
            timeout=config.timeout_s,
            # aiohttp as the SDK's transport: ~0.4 ms less per call than its default.
            http_client=anthropic.DefaultAioHttpClient(),
        )

    async def aclose(self) -> None:
        await self._client.close()

    async def stream(self, call: ModelCall) -> AsyncIterator[ProviderEvent]:
        opts = call.options
        params: dict[str, Any] = {
            "model": call.model.name,
            "messages": _messages(call.messages),
            "max_tokens": opts.max_tokens or DEFAULT_MAX_TOKENS,
        }
        if call.system:
            params["system"] = call.system
        if opts.temperature is not None:
            params["temperature"] = min(opts.temperature, 1.0)
        if opts.top_p is not None:
            params["top_p"] = opts.top_p
        if opts.stop:
            params["stop_sequences"] = opts.stop
        try:
            async for event in self._events(params):
                yield event
        except _FAILURES as exc:
            raise sdk_failure(self.name, exc, model=call.model.id) from exc

    async def _events(self, params: dict[str, Any]) -> AsyncIterator[ProviderEvent]:
        async with self._client.messages.stream(**params) as stream:
            async for event in stream:
                if event.type == "content_block_delta" and event.delta.type == "text_delta":
                    yield TextDelta(event.delta.text)
            final = await stream.get_final_message()
        for block in final.content:
            if block.type == "tool_use":
                arguments = block.input if isinstance(block.input, dict) else {}
                yield ToolCallOut(ToolCall(id=block.id, name=block.name, arguments=arguments))
        usage = Usage(
            prompt_tokens=final.usage.input_tokens,
            completion_tokens=final.usage.output_tokens,
            total_tokens=final.usage.input_tokens + final.usage.output_tokens,
        )
        yield Finish(reason=_FINISH.get(final.stop_reason or "end_turn", "stop"), usage=usage)
