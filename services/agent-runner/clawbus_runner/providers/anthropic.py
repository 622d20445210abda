"""Anthropic Messages API with streaming."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
from clawbus_protocol.runs import ChatMessage, NamedToolChoice, RunOptions, ToolCall, Usage
from clawbus_protocol.settings import ProviderConfig

from clawbus_runner.providers.base import (
    Finish,
    ModelCall,
    ProviderEvent,
    TextDelta,
    ToolCallOut,
)
from clawbus_runner.providers.errors import TRANSPORT_ERRORS, sdk_failure, upstream_error

DEFAULT_MAX_TOKENS = 4096

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    # OpenAI's name, which failover turns into a refusal error.
    "refusal": "content_filter",
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


def _tool_choice(opts: RunOptions) -> dict[str, Any] | None:
    """OpenAI's tool_choice / parallel_tool_calls in Anthropic's terms (`required` is
    `any`; one call at a time is `disable_parallel_tool_use`)."""
    choice = opts.tool_choice
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, NamedToolChoice):
        out: dict[str, Any] = {"type": "tool", "name": choice.name}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "auto" or opts.parallel_tool_calls is not None:
        out = {"type": "auto"}
    else:
        return None
    if opts.parallel_tool_calls is not None:
        out["disable_parallel_tool_use"] = not opts.parallel_tool_calls
    return out


class AnthropicProvider:
    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self._client = anthropic.AsyncAnthropic(
            api_key=config.api_key.get_secret_value() if config.api_key else "unused",
            base_url=config.base_url,
            # Retries and backoff live in failover.py, which applies config.max_retries.
            max_retries=0,
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
        if call.tools:
            params["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": dict(t.parameters)}
                for t in call.tools
            ]
            if (choice := _tool_choice(opts)) is not None:
                params["tool_choice"] = choice
        try:
            async for event in self._events(params, call.model.id):
                yield event
        except _FAILURES as exc:
            raise sdk_failure(self.name, exc, model=call.model.id) from exc

    async def _events(self, params: dict[str, Any], model_id: str) -> AsyncIterator[ProviderEvent]:
        # As for OpenAI: the SDK's generic post, with events as plain dicts.
        stream = await self._client.post(
            "/v1/messages",
            body={**params, "stream": True},
            cast_to=object,
            stream=True,
            stream_cls=anthropic.AsyncStream[object],
        )
        input_tokens = output_tokens = 0
        stop_reason: str | None = None
        blocks: dict[int, dict[str, Any]] = {}
        async for event in stream:
            if not isinstance(event, dict):
                continue
            kind = event.get("type")
            if kind == "content_block_delta":
                delta = event.get("delta") or {}
                if delta.get("type") == "text_delta" and delta.get("text"):
                    yield TextDelta(delta["text"])
                elif delta.get("type") == "input_json_delta":
                    block = blocks.get(event.get("index", 0))
                    if block is not None:
                        block["json"] += delta.get("partial_json") or ""
            elif kind == "content_block_start":
                block = event.get("content_block") or {}
                if block.get("type") == "tool_use":
                    blocks[event.get("index", 0)] = {
                        "id": block.get("id", ""),
                        "name": block.get("name", ""),
                        "json": "",
                    }
            elif kind == "message_start":
                usage = (event.get("message") or {}).get("usage") or {}
                input_tokens = int(usage.get("input_tokens") or 0)
                output_tokens = int(usage.get("output_tokens") or 0)
            elif kind == "message_delta":
                stop_reason = (event.get("delta") or {}).get("stop_reason") or stop_reason
                usage = event.get("usage") or {}
                output_tokens = int(usage.get("output_tokens") or output_tokens)
                input_tokens = int(usage.get("input_tokens") or input_tokens)
        if stop_reason is None:
            raise upstream_error(
                self.name, None, "the stream ended before the model finished", model=model_id
            )
        for _, block in sorted(blocks.items()):
            yield ToolCallOut(ToolCall.parsed(block["id"], block["name"], block["json"]))
        usage = Usage(
            prompt_tokens=input_tokens,
            completion_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
        )
        yield Finish(reason=_FINISH.get(stop_reason, "stop"), usage=usage)
