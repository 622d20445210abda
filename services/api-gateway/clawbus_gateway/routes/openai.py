"""The OpenAI-compatible surface: /v1/models and /v1/chat/completions (plain and SSE).

`model` picks the agent or the model the way OpenClaw and GoClaw do: `openclaw`,
`openclaw:<agent>`, `agent:<agent>`, `goclaw:<agent>` name an agent (header
`x-openclaw-agent-id` / `x-goclaw-agent-id` otherwise, default `main`); any other value is a
`provider/model` id run by that agent. `user` or `x-openclaw-session-key` chooses the session.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import cast, get_args

from aiohttp import web
from clawbus_core.models import ModelCatalog
from clawbus_core.store import runs as store
from clawbus_protocol.errors import ClawbusError, ErrorCode, InvalidRequest
from clawbus_protocol.openai import (
    ChatCompletion,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionRequest,
    ChunkChoice,
    ChunkDelta,
    ModelCard,
    ModelList,
    OpenAIMessage,
    OpenAIToolCall,
    OpenAIToolCallFunction,
)
from clawbus_protocol.runs import (
    ChatMessage,
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    QueueMode,
    RunEvent,
    RunInput,
    RunOptions,
    ToolCall,
    Usage,
)

from clawbus_gateway.body import read_model
from clawbus_gateway.keys import CATALOG, RUNS
from clawbus_gateway.principal import require
from clawbus_gateway.runs import DEFAULT_AGENT, Submitted, Turn

routes = web.RouteTableDef()

_AGENT_PREFIXES = ("openclaw:", "openclaw/", "agent:", "goclaw:")
_AGENT_HEADERS = ("x-openclaw-agent-id", "x-goclaw-agent-id")
_CREATED = int(time.time())
_MAX_KEY_CHARS = 256


def _header(request: web.Request, name: str) -> str | None:
    value = request.headers.get(name)
    if value is not None and not 0 < len(value) <= _MAX_KEY_CHARS:
        raise InvalidRequest(f"header {name} must be 1 to {_MAX_KEY_CHARS} characters", param=name)
    return value


@routes.get("/v1/models")
async def list_models(request: web.Request) -> web.Response:
    cards = [
        ModelCard(id=m, created=_CREATED, owned_by=m.split("/", 1)[0])
        for m in request.app[CATALOG].list()
    ]
    return web.json_response(text=ModelList(data=cards).model_dump_json())


def _target(model: str, request: web.Request, catalog: ModelCatalog) -> tuple[str, str | None]:
    """(agent key, model override) named by the request."""
    header_agent = next((a for h in _AGENT_HEADERS if (a := _header(request, h))), None)
    for prefix in _AGENT_PREFIXES:
        if model.startswith(prefix):
            agent = model[len(prefix) :]
            if not agent:
                raise InvalidRequest(f"model {model!r} names no agent", param="model")
            return agent, None
    if model == "openclaw":
        return header_agent or DEFAULT_AGENT, None
    return header_agent or DEFAULT_AGENT, catalog.resolve(model).id


def _text(message: OpenAIMessage, index: int) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.type != "text" or part.text is None:
            raise InvalidRequest(
                f"content part type {part.type!r} is not supported (text only)",
                param=f"messages.{index}.content",
            )
        texts.append(part.text)
    return "\n".join(texts)


def _turn(request: web.Request, body: ChatCompletionRequest) -> Turn:
    agent_key, model_override = _target(body.model, request, request.app[CATALOG])
    system: list[str] = []
    messages: list[ChatMessage] = []
    for i, m in enumerate(body.messages):
        text = _text(m, i)
        if m.role in ("system", "developer"):
            system.append(text)
            continue
        calls = [
            ToolCall(id=c.id, name=c.function.name, arguments={"_raw": c.function.arguments})
            for c in m.tool_calls or ()
        ]
        messages.append(
            ChatMessage(
                role=m.role,
                content=text,
                tool_calls=calls,
                tool_call_id=m.tool_call_id,
                name=m.name,
            )
        )
    if not messages or messages[-1].role != "user":
        raise InvalidRequest("the last message must be a user message", param="messages")
    trailing: list[str] = []
    for message in reversed(messages):
        if message.role != "user":
            break
        trailing.insert(0, message.content)
    if not any(t.strip() for t in trailing):
        raise InvalidRequest("the user message is empty", param="messages")
    session_key = _header(request, "x-openclaw-session-key")
    if session_key is None and body.user:
        session_key = f"agent:{agent_key}:openai-user:{body.user}"
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    return Turn(
        agent_key=agent_key,
        session_key=session_key,
        user_text="\n\n".join(trailing),
        input=RunInput(system="\n\n".join(system) or None, messages=messages),
        options=RunOptions(
            model=model_override,
            temperature=body.temperature,
            top_p=body.top_p,
            max_tokens=body.max_tokens or body.max_completion_tokens,
            stop=stop,
        ),
        idempotency_key=_header(request, "Idempotency-Key"),
        queue_mode=_queue_mode(request),
        tenant_id=require(request, "chat").tenant_id,
    )


def _queue_mode(request: web.Request) -> QueueMode | None:
    value = _header(request, "x-clawbus-queue-mode")
    if value is None:
        return None
    if value not in get_args(QueueMode):
        raise InvalidRequest(
            f"x-clawbus-queue-mode must be one of {', '.join(get_args(QueueMode))}",
            param="x-clawbus-queue-mode",
        )
    return cast(QueueMode, value)


def _tool_calls(calls: list[ToolCall]) -> list[OpenAIToolCall] | None:
    if not calls:
        return None
    return [
        OpenAIToolCall(
            id=c.id, function=OpenAIToolCallFunction(name=c.name, arguments=json.dumps(c.arguments))
        )
        for c in calls
    ]


def _headers(sub: Submitted) -> dict[str, str]:
    return {"x-clawbus-run-id": str(sub.run_id), "x-openclaw-session-key": sub.session_key}


@routes.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await read_model(request, ChatCompletionRequest)
    turn = _turn(request, body)
    runs = request.app[RUNS]
    async with runs.submit(turn) as sub:
        if sub.existing is not None and sub.existing.status not in ("queued", "running"):
            return _replay(body, sub, sub.existing)
        events = sub.watch.events(timeout_s=runs.timeout_s)
        if body.stream:
            return await _stream(request, body, sub, events)
        return await _complete(body, sub, events)


def _completion(
    body: ChatCompletionRequest,
    sub: Submitted,
    *,
    text: str,
    reason: str,
    usage: Usage,
    calls: list[ToolCall],
) -> web.Response:
    completion = ChatCompletion(
        id=f"chatcmpl-{sub.run_id.hex}",
        created=int(time.time()),
        model=body.model,
        choices=[
            ChatCompletionChoice(
                message=ChatCompletionMessage(content=text, tool_calls=_tool_calls(calls)),
                finish_reason=reason,
            )
        ],
        usage=usage,
    )
    return web.json_response(text=completion.model_dump_json(), headers=_headers(sub))


async def _complete(
    body: ChatCompletionRequest, sub: Submitted, events: AsyncIterator[RunEvent]
) -> web.Response:
    async for event in events:
        if isinstance(event, DoneEvent):
            return _completion(
                body,
                sub,
                text=event.text,
                reason=event.finish_reason,
                usage=event.usage,
                calls=event.tool_calls,
            )
        if isinstance(event, ErrorEvent):
            raise ClawbusError.from_info(event.error)
        if event.type == "aborted":
            raise ClawbusError(f"run {sub.run_id} was aborted", code=ErrorCode.ABORTED)
    raise ClawbusError(f"run {sub.run_id} ended without a result")


def _replay(body: ChatCompletionRequest, sub: Submitted, run: store.ExistingRun) -> web.Response:
    """A retried request (same Idempotency-Key) gets the first request's result."""
    if run.status == "completed":
        return _completion(
            body,
            sub,
            text=run.text or "",
            reason=run.finish_reason or "stop",
            usage=run.usage,
            calls=[],
        )
    if run.error is not None:
        raise ClawbusError.from_info(run.error)
    raise ClawbusError(f"run {sub.run_id} was aborted", code=ErrorCode.ABORTED)


async def _stream(
    request: web.Request,
    body: ChatCompletionRequest,
    sub: Submitted,
    events: AsyncIterator[RunEvent],
) -> web.StreamResponse:
    # Headers wait for the first event, so a run that fails at once (upstream 429, unknown
    # model) still answers with a real HTTP status instead of an error inside a 200 stream.
    first = await anext(events)
    if isinstance(first, ErrorEvent):
        raise ClawbusError.from_info(first.error)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            **_headers(sub),
        }
    )
    chunk_id = f"chatcmpl-{sub.run_id.hex}"
    created = int(time.time())

    def frame(delta: ChunkDelta, finish: str | None = None, usage: Usage | None = None) -> bytes:
        choices = [] if usage is not None else [ChunkChoice(delta=delta, finish_reason=finish)]
        chunk = ChatCompletionChunk(
            id=chunk_id, created=created, model=body.model, choices=choices, usage=usage
        )
        return b"data: " + chunk.model_dump_json(exclude_none=True).encode() + b"\n\n"

    include_usage = body.stream_options is not None and body.stream_options.include_usage
    # The role chunk travels with the first event, and both with the headers: one write.
    frames = [frame(ChunkDelta(role="assistant", content=""))]
    await response.prepare(request)  # aiohttp holds the headers until the first write
    try:
        event: RunEvent | None = first
        while event is not None:
            if isinstance(event, DeltaEvent):
                frames.append(frame(ChunkDelta(content=event.text)))
            elif isinstance(event, DoneEvent):
                frames.append(frame(ChunkDelta(), finish=event.finish_reason))
                if include_usage:
                    frames.append(frame(ChunkDelta(), usage=event.usage))
                break
            elif isinstance(event, ErrorEvent):
                frames.append(b"data: " + event.error.envelope().model_dump_json().encode())
                frames.append(b"\n\n")
                break
            elif event.type == "aborted":
                frames.append(frame(ChunkDelta(), finish="stop"))
                break
            await response.write(b"".join(frames))
            frames.clear()
            event = await anext(events, None)
    except ClawbusError as exc:  # e.g. the run outlived the request timeout
        frames.append(b"data: " + exc.info.envelope().model_dump_json().encode() + b"\n\n")
    except ConnectionResetError:
        return response  # the client left; the run still completes and is stored
    frames.append(b"data: [DONE]\n\n")
    try:
        await response.write(b"".join(frames))
        await response.write_eof()
    except ConnectionResetError:
        pass
    return response
