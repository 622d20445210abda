"""Anthropic Messages bodies: `message`, the `event:`/`data:` SSE sequence, errors."""

from __future__ import annotations

from typing import Any, Final

from clawbus_fakes._wire import CONTENT, FRAME, TERMINAL, Events, Plan, encode_json

# OpenAI names a reply may have been scripted with.
_FROM_OPENAI: Final = {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens"}

_ERRORS: Final[dict[int, tuple[str, str]]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low."),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}


def _stop_reason(plan: Plan) -> str:
    stop = _FROM_OPENAI.get(plan.finish_reason or "", plan.finish_reason)
    return stop or ("tool_use" if plan.tools else "end_turn")


def _has_text_block(plan: Plan) -> bool:
    # A text block is always present unless the turn is tool calls only, as on the real API.
    return bool(plan.chunks) or not plan.tools


def _usage(plan: Plan, output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": plan.prompt_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def message(plan: Plan, mid: str, model: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = (
        [{"type": "text", "text": plan.text}] if _has_text_block(plan) else []
    )
    content += [
        {"type": "tool_use", "id": t.id, "name": t.name, "input": t.arguments} for t in plan.tools
    ]
    return {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _stop_reason(plan),
        "stop_sequence": None,
        "usage": _usage(plan, plan.completion_tokens),
    }


def stream_events(plan: Plan, mid: str, model: str) -> Events:
    def sse(kind: str, data: dict[str, Any]) -> bytes:
        return f"event: {kind}\ndata: {encode_json({'type': kind, **data})}\n\n".encode()

    start: dict[str, Any] = {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _usage(plan, 1),
    }
    events: Events = [(sse("message_start", {"message": start}), FRAME)]

    def block(index: int, content_block: dict[str, Any], deltas: list[dict[str, Any]]) -> None:
        events.append(
            (sse("content_block_start", {"index": index, "content_block": content_block}), FRAME)
        )
        if index == 0:  # the real API pings right after the first block opens
            events.append((sse("ping", {}), FRAME))
        events.extend(
            (sse("content_block_delta", {"index": index, "delta": d}), CONTENT) for d in deltas
        )
        events.append((sse("content_block_stop", {"index": index}), FRAME))

    index = 0
    if _has_text_block(plan):
        block(
            0,
            {"type": "text", "text": ""},
            [{"type": "text_delta", "text": c} for c in plan.chunks],
        )
        index = 1
    for tool in plan.tools:
        block(
            index,
            {"type": "tool_use", "id": tool.id, "name": tool.name, "input": {}},
            [{"type": "input_json_delta", "partial_json": f} for f in tool.fragments],
        )
        index += 1
    events.append(
        (
            sse(
                "message_delta",
                {
                    "delta": {"stop_reason": _stop_reason(plan), "stop_sequence": None},
                    "usage": {
                        "input_tokens": plan.prompt_tokens,
                        "output_tokens": plan.completion_tokens,
                    },
                },
            ),
            TERMINAL,
        )
    )
    events.append((sse("message_stop", {}), TERMINAL))
    return events


def error_body(status: int, request_id: str, message: str | None = None) -> dict[str, Any]:
    kind, default = _ERRORS.get(status) or (
        ("api_error", "Internal server error")
        if status >= 500
        else ("invalid_request_error", "Invalid request.")
    )
    return {
        "type": "error",
        "error": {"type": kind, "message": message or default},
        "request_id": request_id,
    }
