"""The OpenAI-compatible surface: /v1/models and /v1/chat/completions (plain and SSE).

`model` picks the agent or the model the way OpenClaw and GoClaw do: `openclaw`,
`openclaw:<agent>`, `agent:<agent>`, `goclaw:<agent>` name an agent (header
`x-openclaw-agent-id` / `x-goclaw-agent-id` otherwise, default `main`); any other value is a
`provider/model` id run by that agent. `user` or `x-openclaw-session-key` chooses the session.
A dropped stream resumes with `Last-Event-ID` (see clawbus_gateway.sse).

Function calling: a request's `tools` are offered to the model instead of the agent's own
(with `tool_choice` and `parallel_tool_calls`). The model's calls come back as
`message.tool_calls` (streamed: one `delta.tool_calls` chunk per call, each whole) with
finish reason `tool_calls`; the client runs them and sends the conversation again, ending
with one `tool` message per call. Arguments travel as the model wrote them, both ways.
"""

from __future__ import annotations

import time

from aiohttp import web
from clawbus_core.runservice import Submitted, Turn
from clawbus_protocol.errors import ErrorInfo, InvalidRequest
from clawbus_protocol.openai import (
    ChatCompletion,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionRequest,
    ChunkChoice,
    ChunkDelta,
    ChunkToolCall,
    ModelCard,
    ModelList,
    OpenAIMessage,
    OpenAIToolCall,
    OpenAIToolCallFunction,
)
from clawbus_protocol.runs import (
    ChatMessage,
    ClientTool,
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    NamedToolChoice,
    RunEvent,
    RunInput,
    RunOptions,
    ToolCall,
    ToolChoice,
    Usage,
)

from clawbus_gateway.body import read_model
from clawbus_gateway.keys import CATALOG, RUNS
from clawbus_gateway.principal import require
from clawbus_gateway.sse import EventStream, stream_run, submit_or_resume
from clawbus_gateway.turns import (
    Outcome,
    finished,
    header,
    outcome,
    queue_mode,
    replayed,
    run_headers,
    session_key,
    target,
    user_text,
)

routes = web.RouteTableDef()

_CREATED = int(time.time())


@routes.get("/v1/models")
async def list_models(request: web.Request) -> web.Response:
    cards = [
        ModelCard(id=m, created=_CREATED, owned_by=m.split("/", 1)[0])
        for m in request.app[CATALOG].list()
    ]
    return web.json_response(text=ModelList(data=cards).model_dump_json())


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


def _check_tool_exchanges(messages: list[OpenAIMessage]) -> None:
    """Each assistant message's tool calls are answered by the `tool` messages right after
    it, one per call, as OpenAI requires (system messages aside: they are lifted out)."""
    waiting: dict[str, int] = {}  # call id -> index of the assistant message that made it
    for i, m in enumerate(messages):
        if m.role in ("system", "developer"):
            continue
        if m.role == "tool":
            if m.tool_call_id is None:
                raise InvalidRequest(
                    "a tool message needs the tool_call_id of the call it answers",
                    param=f"messages.{i}.tool_call_id",
                )
            if waiting.pop(m.tool_call_id, None) is None:
                raise InvalidRequest(
                    f"tool message {i} answers {m.tool_call_id!r}, which is not an unanswered "
                    "tool call of the assistant message before it",
                    param=f"messages.{i}.tool_call_id",
                )
            continue
        if waiting:
            raise InvalidRequest(
                f"tool calls {', '.join(map(repr, waiting))} have no tool message answering them "
                f"before message {i}",
                param=f"messages.{next(iter(waiting.values()))}.tool_calls",
            )
        waiting = {c.id: i for c in m.tool_calls or ()}
    if waiting:
        raise InvalidRequest(
            f"tool calls {', '.join(map(repr, waiting))} have no tool message answering them",
            param=f"messages.{next(iter(waiting.values()))}.tool_calls",
        )


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _check_storable(value: object, *, param: str) -> None:
    """Postgres can hold NUL in no text and no JSON string: refuse it anywhere in `value`
    (a message's tool call arguments, a tool's schema) before anything is written."""
    if _has_nul(value):
        raise InvalidRequest(
            f"{param} contains a NUL character, which cannot be stored", param=param
        )


def _client_tools(
    body: ChatCompletionRequest,
) -> tuple[list[ClientTool] | None, ToolChoice | None, bool | None]:
    """The request's own tools with its tool_choice and parallel_tool_calls (which, without
    tools, are ignored: the agent's tools are not the client's to steer)."""
    if body.tools is None:
        return None, None, None
    tools = []
    for i, tool in enumerate(body.tools):
        function = tool.function.model_dump(exclude_none=True)
        _check_storable(function, param=f"tools.{i}")
        tools.append(ClientTool.model_validate(function))
    choice = body.tool_choice
    if choice is None or isinstance(choice, str):
        return tools, choice, body.parallel_tool_calls
    return tools, NamedToolChoice(name=choice.function.name), body.parallel_tool_calls


def _turn(request: web.Request, body: ChatCompletionRequest) -> Turn:
    agent_key, model_override = target(body.model, request, request.app[CATALOG])
    _check_tool_exchanges(body.messages)
    system: list[str] = []
    messages: list[ChatMessage] = []
    for i, m in enumerate(body.messages):
        text = _text(m, i)
        if m.role in ("system", "developer"):
            system.append(text)
            continue
        calls = [
            ToolCall.parsed(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or ()
        ]
        message = ChatMessage(
            role=m.role, content=text, tool_calls=calls, tool_call_id=m.tool_call_id, name=m.name
        )
        _check_storable(message.model_dump(), param=f"messages.{i}")
        messages.append(message)
    # A turn answering the model's tool calls says nothing itself: the store keeps the
    # results as the turn's messages (clawbus_core.store.runs).
    answers_tools = bool(messages) and messages[-1].role == "tool"
    said = "" if answers_tools else user_text(messages, param="messages")
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    tools, tool_choice, parallel_tool_calls = _client_tools(body)
    return Turn(
        agent_key=agent_key,
        session_key=session_key(request, agent_key, body.user),
        user_text=said,
        input=RunInput(system="\n\n".join(system) or None, messages=messages),
        options=RunOptions(
            model=model_override,
            temperature=body.temperature,
            top_p=body.top_p,
            max_tokens=body.max_tokens or body.max_completion_tokens,
            stop=stop,
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
        ),
        idempotency_key=header(request, "Idempotency-Key"),
        queue_mode=queue_mode(request),
        tenant_id=require(request, "chat").tenant_id,
    )


def _function(call: ToolCall) -> OpenAIToolCallFunction:
    return OpenAIToolCallFunction(name=call.name, arguments=call.arguments_text())


def _tool_calls(calls: list[ToolCall]) -> list[OpenAIToolCall] | None:
    if not calls:
        return None
    return [OpenAIToolCall(id=c.id, function=_function(c)) for c in calls]


@routes.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await read_model(request, ChatCompletionRequest)
    turn = _turn(request, body)
    runs = request.app[RUNS]
    if not body.stream:
        async with runs.submit(turn) as sub:
            if (run := finished(sub)) is not None:
                return _completion(body, sub, replayed(sub, run))
            events = sub.watch.events(timeout_s=runs.timeout_s)
            return _completion(body, sub, await outcome(sub, events))
    async with submit_or_resume(request, runs, turn) as (sub, after_seq):
        if (run := finished(sub)) is not None:
            return _completion(body, sub, replayed(sub, run))
        return await stream_run(
            request,
            sub.watch.events(timeout_s=runs.timeout_s),
            _Chunks(body, sub),
            headers=run_headers(sub.run_id, sub.session_key),
            after_seq=after_seq,
        )


def _completion(body: ChatCompletionRequest, sub: Submitted, result: Outcome) -> web.Response:
    completion = ChatCompletion(
        id=f"chatcmpl-{sub.run_id.hex}",
        created=int(time.time()),
        model=body.model,
        choices=[
            ChatCompletionChoice(
                message=ChatCompletionMessage(
                    # As OpenAI: no content (null) on a turn of tool calls only.
                    content=result.text or (None if result.tool_calls else ""),
                    tool_calls=_tool_calls(result.tool_calls),
                ),
                finish_reason=result.finish_reason,
            )
        ],
        usage=result.usage,
    )
    return web.json_response(
        text=completion.model_dump_json(), headers=run_headers(sub.run_id, sub.session_key)
    )


class _Chunks:
    """`chat.completion.chunk` frames (`data:` only, as OpenAI sends them), then `[DONE]`."""

    def __init__(self, body: ChatCompletionRequest, sub: Submitted) -> None:
        self.body = body
        self.chunk_id = f"chatcmpl-{sub.run_id.hex}"
        self.created = int(time.time())
        self.include_usage = body.stream_options is not None and body.stream_options.include_usage
        self.started = False

    def _chunk(
        self, delta: ChunkDelta, finish: str | None = None, usage: Usage | None = None
    ) -> str:
        choices = [] if usage is not None else [ChunkChoice(delta=delta, finish_reason=finish)]
        chunk = ChatCompletionChunk(
            id=self.chunk_id,
            created=self.created,
            model=self.body.model,
            choices=choices,
            usage=usage,
        )
        return chunk.model_dump_json(exclude_none=True)

    def event(self, out: EventStream, event: RunEvent) -> bool:
        if not self.started:
            # The role chunk travels with the first event, and both with the headers.
            self.started = True
            out.add(self._chunk(ChunkDelta(role="assistant", content="")), id=event.seq)
        if isinstance(event, DeltaEvent):
            out.add(self._chunk(ChunkDelta(content=event.text)), id=event.seq)
        elif isinstance(event, DoneEvent):
            for index, call in enumerate(event.tool_calls):
                part = ChunkToolCall(index=index, id=call.id, function=_function(call))
                out.add(self._chunk(ChunkDelta(tool_calls=[part])), id=event.seq)
            out.add(self._chunk(ChunkDelta(), finish=event.finish_reason), id=event.seq)
            if self.include_usage:
                out.add(self._chunk(ChunkDelta(), usage=event.usage), id=event.seq)
            return True
        elif isinstance(event, ErrorEvent):
            out.add(event.error.envelope().model_dump_json(), id=event.seq)
            return True
        elif event.type == "aborted":
            out.add(self._chunk(ChunkDelta(), finish="stop"), id=event.seq)
            return True
        return False

    def failure(self, out: EventStream, error: ErrorInfo, seq: int) -> None:
        out.add(error.envelope().model_dump_json(), id=seq, fresh=True)

    def end(self, out: EventStream, seq: int) -> None:
        out.add("[DONE]", id=seq, fresh=True)
