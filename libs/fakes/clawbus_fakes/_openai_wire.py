"""OpenAI Chat Completions bodies: `chat.completion`, `chat.completion.chunk` SSE, errors."""

from __future__ import annotations

from typing import Any, Final

from clawbus_fakes._wire import CONTENT, FRAME, TERMINAL, Events, Plan, encode_json

# Anthropic names a reply may have been scripted with.
_FROM_ANTHROPIC: Final = {"end_turn": "stop", "tool_use": "tool_calls", "max_tokens": "length"}
_FINGERPRINT: Final = "fp_clawbus_fake"

_ERRORS: Final[dict[int, tuple[str, str | None, str]]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached. Please try again later."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    529: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


def _finish(plan: Plan) -> str:
    finish = _FROM_ANTHROPIC.get(plan.finish_reason or "", plan.finish_reason)
    return finish or ("tool_calls" if plan.tools else "stop")


def _usage(plan: Plan) -> dict[str, int]:
    done = plan.completion_tokens
    return {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": done,
        "total_tokens": plan.prompt_tokens + done,
    }


def completion(plan: Plan, cid: str, model: str, created: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "refusal": None}
    # Like the real API: content is null on a tool-calls-only turn.
    message["content"] = plan.text if plan.chunks or not plan.tools else None
    if plan.tools:
        message["tool_calls"] = [
            {
                "id": t.id,
                "type": "function",
                "function": {"name": t.name, "arguments": "".join(t.fragments)},
            }
            for t in plan.tools
        ]
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": _FINGERPRINT,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": _finish(plan)}
        ],
        "usage": _usage(plan),
    }


def stream_events(plan: Plan, cid: str, model: str, created: int, include_usage: bool) -> Events:
    def sse(data: object) -> bytes:
        return b"data: " + encode_json(data).encode() + b"\n\n"

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        data: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": _FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            data["usage"] = None  # the real API sends an explicit null until the last chunk
        return sse(data)

    events: Events = [(chunk({"role": "assistant", "content": ""}), FRAME)]
    events += [(chunk({"content": c}), CONTENT) for c in plan.chunks]
    for index, tool in enumerate(plan.tools):
        # First the call's id and name with empty arguments, then the argument fragments.
        head = {
            "index": index,
            "id": tool.id,
            "type": "function",
            "function": {"name": tool.name, "arguments": ""},
        }
        events.append((chunk({"tool_calls": [head]}), FRAME))
        events += [
            (chunk({"tool_calls": [{"index": index, "function": {"arguments": f}}]}), CONTENT)
            for f in tool.fragments
        ]
    events.append((chunk({}, _finish(plan)), TERMINAL))
    if include_usage:
        events.append(
            (
                sse(
                    {
                        "id": cid,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "system_fingerprint": _FINGERPRINT,
                        "choices": [],
                        "usage": _usage(plan),
                    }
                ),
                TERMINAL,
            )
        )
    events.append((b"data: [DONE]\n\n", TERMINAL))
    return events


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    kind, code, default = _ERRORS.get(status) or (
        ("server_error", None, "The server had an error while processing your request.")
        if status >= 500
        else ("invalid_request_error", None, "Invalid request.")
    )
    return {"error": {"message": message or default, "type": kind, "param": None, "code": code}}
