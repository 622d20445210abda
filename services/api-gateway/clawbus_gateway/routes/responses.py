"""The OpenAI Responses surface: POST /v1/responses, plain and SSE.

`model` names the agent or the model as on /v1/chat/completions. `input` is a string (one
user message) or a list of items: messages (`input_text` / `output_text` parts), and the
function calls of an earlier answer with their outputs; `instructions` is added as system
text. The session is the previous response's (`previous_response_id`), else the
`x-openclaw-session-key` header's, else one per `user`; with none of them the request is
stateless (its input is the whole context). A dropped stream resumes with `Last-Event-ID`
(see clawbus_gateway.sse).

Answers are one assistant message with one `output_text` part (and the calls of the
client's functions, below). A stream sends the SDK's sequence: response.created,
response.in_progress, response.output_item.added, response.content_part.added,
response.output_text.delta..., response.output_text.done, response.content_part.done,
response.output_item.done, then response.completed (or response.incomplete for a cut-off
answer or an aborted run, response.failed for a failed one).

Function calling: a request's function `tools` are offered to the model instead of the
agent's own (with `tool_choice` and `parallel_tool_calls`; other tool types are refused).
A run whose model calls them ends with one `function_call` output item per call (after the
message item only if the model also wrote text; streamed, each call is
response.output_item.added, response.function_call_arguments.delta (the whole arguments),
response.function_call_arguments.done, response.output_item.done). The client runs them and
answers with one `function_call_output` item per call: either after the conversation it
sends again whole (its `function_call` items included, each answered before the next
message), or, continuing a session, first in `input`, answering the calls of the session's
last response (checked against the stored run; the session's transcript pairs them).
Arguments travel as the model wrote them, both ways.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from uuid import UUID

from aiohttp import web
from clawbus_core.db import refuse_unstorable
from clawbus_core.runservice import Submitted, Turn
from clawbus_core.store import runs as runs_store
from clawbus_protocol.errors import ErrorInfo, InvalidRequest
from clawbus_protocol.responses import (
    ContentPartEvent,
    FunctionCallArgumentsDeltaEvent,
    FunctionCallArgumentsDoneEvent,
    FunctionToolChoice,
    IncompleteDetails,
    InputContentPart,
    InputFunctionCall,
    InputFunctionCallOutput,
    InputMessage,
    ItemStatus,
    OutputFunctionCall,
    OutputItem,
    OutputItemEvent,
    OutputMessage,
    OutputText,
    OutputTextDeltaEvent,
    OutputTextDoneEvent,
    Response,
    ResponseError,
    ResponseLifecycleEvent,
    ResponsesRequest,
    ResponseStatus,
    ResponseStreamEvent,
    ResponseUsage,
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
    find_run,
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

_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
_RESPONSE_PREFIX = "resp_"


def _response_id(run_id: UUID) -> str:
    return f"{_RESPONSE_PREFIX}{run_id.hex}"


def _item_id(run_id: UUID) -> str:
    return f"msg_{run_id.hex}"


def _call_item_id(run_id: UUID, index: int) -> str:
    return f"fc_{run_id.hex}_{index}"


def _text(content: str | list[InputContentPart] | None, *, param: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for part in content:
        if part.type not in _TEXT_PARTS or part.text is None:
            raise InvalidRequest(
                f"content part type {part.type!r} is not supported (input_text only)",
                param=param,
            )
        texts.append(part.text)
    return "\n".join(texts)


@dataclass
class _Conversation:
    """The turn's input as clawbus messages: system text, then the conversation."""

    system: list[str]
    messages: list[ChatMessage] = field(default_factory=list)
    # Outputs answering calls this input does not hold (the session's last response made
    # them): call id -> index of the function_call_output item.
    earlier: dict[str, int] = field(default_factory=dict)
    # Call id -> index of the function_call item, for the calls not answered yet.
    waiting: dict[str, int] = field(default_factory=dict)

    def call(self, item: InputFunctionCall, index: int) -> None:
        """The model's earlier call: consecutive calls, and the assistant message right
        before them, are one assistant message."""
        call = ToolCall.parsed(item.call_id, item.name, item.arguments)
        stored = {"call_id": call.id, "name": call.name, "arguments": call.arguments}
        refuse_unstorable(stored, f"input.{index}")
        last = self.messages[-1] if self.messages else None
        if last is not None and last.role == "assistant":
            last.tool_calls.append(call)
        else:
            self.close_exchange(index)
            self.messages.append(ChatMessage(role="assistant", tool_calls=[call]))
        self.waiting[call.id] = index

    def output(self, item: InputFunctionCallOutput, index: int, *, continues: bool) -> None:
        """The client's result for a call of this input, or (`continues`: the request goes on
        with a stored session) for one of the session's last response, before any other
        message."""
        call_id = item.call_id
        if self.waiting.pop(call_id, None) is None:
            leading = len(self.messages) == len(self.earlier)  # outputs of earlier calls only
            if not (continues and leading) or call_id in self.earlier:
                more = (
                    "outputs for the calls of the session's last response come first in input"
                    if continues
                    else "send the whole conversation, or previous_response_id to continue it"
                )
                raise InvalidRequest(
                    f"input.{index} answers call {call_id!r}, which no unanswered "
                    f"function_call before it in input makes ({more})",
                    param=f"input.{index}.call_id",
                )
            self.earlier[call_id] = index
        content = _text(item.output, param=f"input.{index}.output")
        refuse_unstorable(content, f"input.{index}.output")
        self.messages.append(ChatMessage(role="tool", content=content, tool_call_id=call_id))

    def message(self, item: InputMessage, index: int) -> None:
        if item.role is None:
            raise InvalidRequest("an input message needs a role", param=f"input.{index}.role")
        text = _text(item.content, param=f"input.{index}.content")
        refuse_unstorable(text, f"input.{index}.content")
        if item.role in ("system", "developer"):
            self.system.append(text)
            return
        self.close_exchange(index)
        self.messages.append(ChatMessage(role=item.role, content=text))

    def close_exchange(self, before: int | None) -> None:
        """Every call is answered before the conversation goes on, as OpenAI requires."""
        if not self.waiting:
            return
        calls = ", ".join(map(repr, self.waiting))
        where = f" before input.{before}" if before is not None else ""
        raise InvalidRequest(
            f"function calls {calls} have no function_call_output answering them{where}",
            param=f"input.{next(iter(self.waiting.values()))}.call_id",
        )


def _conversation(body: ResponsesRequest, *, continues: bool) -> _Conversation:
    talk = _Conversation(system=[body.instructions] if body.instructions else [])
    if isinstance(body.input, str):
        talk.messages.append(ChatMessage(role="user", content=body.input))
        return talk
    for i, item in enumerate(body.input):
        if isinstance(item, InputMessage):
            talk.message(item, i)
        elif isinstance(item, InputFunctionCall):
            talk.call(item, i)
        elif isinstance(item, InputFunctionCallOutput):
            talk.output(item, i, continues=continues)
        else:
            raise InvalidRequest(
                f"input item type {item.type!r} is not supported "
                "(message, function_call and function_call_output only)",
                param=f"input.{i}.type",
            )
    talk.close_exchange(None)
    return talk


async def _check_earlier(
    request: web.Request, session: str | None, earlier: dict[str, int], key: str | None
) -> None:
    """Outputs sent without their calls answer the calls of the session's last response
    (the stored transcript pairs them; a stray result would be dropped there unseen). A
    retry (same Idempotency-Key) is answered with its first request's run, unchecked."""
    if not earlier or session is None:
        return
    pool = request.app[RUNS].pool
    tenant = require(request, "chat").tenant_id
    if key is not None and await runs_store.find_run(pool, tenant, key) is not None:
        return
    made = [call.id for call in await runs_store.last_response_calls(pool, tenant, session)]
    for call_id, index in earlier.items():
        if call_id not in made:
            calls = f"its calls: {', '.join(map(repr, made))}" if made else "it made none"
            raise InvalidRequest(
                f"input.{index} answers call {call_id!r}, which is not a call of the "
                f"session's last response ({calls})",
                param=f"input.{index}.call_id",
            )


async def _session(request: web.Request, body: ResponsesRequest, agent: str) -> str | None:
    previous = body.previous_response_id
    if previous is None:
        return session_key(request, agent, body.user)
    try:
        run_id = UUID(previous.removeprefix(_RESPONSE_PREFIX))
    except ValueError:
        raise InvalidRequest(
            f"previous_response_id {previous!r} is not a response id of this gateway",
            param="previous_response_id",
        ) from None
    tenant = require(request, "chat").tenant_id
    run = await find_run(request.app[RUNS].pool, tenant, run_id, param="previous_response_id")
    return run.session_key


_FUNCTION_FIELDS = {"name", "description", "parameters", "strict"}


def _client_tools(
    body: ResponsesRequest,
) -> tuple[list[ClientTool] | None, ToolChoice | None, bool | None]:
    """The request's own tools with its tool_choice and parallel_tool_calls (which, without
    tools, are ignored: the agent's tools are not the client's to steer)."""
    if body.tools is None:
        return None, None, None
    tools = []
    for i, tool in enumerate(body.tools):
        function = tool.model_dump(include=_FUNCTION_FIELDS, exclude_none=True)
        refuse_unstorable(function, f"tools.{i}")
        tools.append(ClientTool.model_validate(function))
    choice = body.tool_choice
    named = NamedToolChoice(name=choice.name) if isinstance(choice, FunctionToolChoice) else choice
    return tools, named, body.parallel_tool_calls


async def _turn(request: web.Request, body: ResponsesRequest) -> Turn:
    who = require(request, "chat")
    agent_key, model_override = target(body.model, request, request.app[CATALOG])
    key = header(request, "Idempotency-Key")
    session = await _session(request, body, agent_key)
    talk = _conversation(body, continues=session is not None)
    await _check_earlier(request, session, talk.earlier, key)
    messages = talk.messages
    # A turn answering the model's calls says nothing itself: the store keeps the results
    # as the turn's messages (clawbus_core.store.runs).
    answers_calls = bool(messages) and messages[-1].role == "tool"
    said = "" if answers_calls else user_text(messages, param="input")
    tools, tool_choice, parallel_tool_calls = _client_tools(body)
    return Turn(
        agent_key=agent_key,
        session_key=session,
        user_text=said,
        input=RunInput(system="\n\n".join(talk.system) or None, messages=messages),
        options=RunOptions(
            model=model_override,
            temperature=body.temperature,
            top_p=body.top_p,
            max_tokens=body.max_output_tokens,
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
        ),
        idempotency_key=key,
        queue_mode=queue_mode(request),
        tenant_id=who.tenant_id,
    )


def _ending(finish_reason: str) -> tuple[ResponseStatus, IncompleteDetails | None]:
    """The response status for how the model stopped."""
    if finish_reason == "length":
        return "incomplete", IncompleteDetails(reason="max_output_tokens")
    if finish_reason in ("content_filter", "refusal"):
        return "incomplete", IncompleteDetails(reason="content_filter")
    return "completed", None


class _Shape:
    """The Response object for one request's run, at any point of its life."""

    def __init__(self, body: ResponsesRequest, run_id: UUID, created_at: float) -> None:
        self.body = body
        self.run_id = run_id
        self.item_id = _item_id(run_id)
        self.created_at = created_at

    def message(self, text: str, status: ItemStatus) -> OutputMessage:
        return OutputMessage(id=self.item_id, status=status, content=[OutputText(text=text)])

    def call(self, index: int, call: ToolCall, *, done: bool) -> OutputFunctionCall:
        """The run's `index`th call: whole when `done`, else as a stream first adds it."""
        return OutputFunctionCall(
            id=_call_item_id(self.run_id, index),
            call_id=call.id,
            name=call.name,
            arguments=call.arguments_text() if done else "",
            status="completed" if done else "in_progress",
        )

    def response(
        self,
        status: ResponseStatus,
        *,
        output: list[OutputItem] | None = None,
        usage: Usage | None = None,
        error: ErrorInfo | None = None,
        incomplete: IncompleteDetails | None = None,
    ) -> Response:
        body = self.body
        return Response(
            id=_response_id(self.run_id),
            created_at=self.created_at,
            completed_at=time.time() if status == "completed" else None,
            status=status,
            model=body.model,
            output=output or [],
            usage=ResponseUsage.of(usage) if usage is not None else None,
            error=ResponseError.of(error) if error is not None else None,
            incomplete_details=incomplete,
            instructions=body.instructions,
            previous_response_id=body.previous_response_id,
            temperature=body.temperature,
            top_p=body.top_p,
            max_output_tokens=body.max_output_tokens,
            user=body.user,
            tools=body.tools or [],
            tool_choice=body.tool_choice or "auto",
            parallel_tool_calls=(
                body.parallel_tool_calls
                if body.parallel_tool_calls is not None
                else body.tools is not None  # the model may call several at once
            ),
        )

    def finished(self, result: Outcome) -> Response:
        status, incomplete = _ending(result.finish_reason)
        item_status: ItemStatus = "completed" if status == "completed" else "incomplete"
        output: list[OutputItem] = []
        if result.text or not result.tool_calls:
            output.append(self.message(result.text, item_status))
        output += [self.call(i, c, done=True) for i, c in enumerate(result.tool_calls)]
        return self.response(status, output=output, usage=result.usage, incomplete=incomplete)


def _plain(shape: _Shape, sub: Submitted, result: Outcome) -> web.Response:
    return web.json_response(
        text=shape.finished(result).model_dump_json(),
        headers=run_headers(sub.run_id, sub.session_key),
    )


@routes.post("/v1/responses")
async def create_response(request: web.Request) -> web.StreamResponse:
    body = await read_model(request, ResponsesRequest)
    turn = await _turn(request, body)
    runs = request.app[RUNS]
    if not body.stream:
        async with runs.submit(turn) as sub:
            shape = _Shape(body, sub.run_id, time.time())
            if (run := finished(sub)) is not None:
                return _plain(shape, sub, replayed(sub, run))
            return _plain(
                shape, sub, await outcome(sub, sub.watch.events(timeout_s=runs.timeout_s))
            )
    async with submit_or_resume(request, runs, turn) as (sub, after_seq):
        if (run := finished(sub)) is not None:
            return _plain(_Shape(body, sub.run_id, time.time()), sub, replayed(sub, run))
        return await stream_run(
            request,
            sub.watch.events(timeout_s=runs.timeout_s),
            _Frames(body, sub),
            headers=run_headers(sub.run_id, sub.session_key),
            after_seq=after_seq,
        )


class _Frames:
    """The Responses stream events, numbered from 0. A resumed stream renders the run again
    from its first event, so the numbers and the accumulated text come out the same.

    The message item is added with the first text, or at the end when the run made no
    calls: a run that only calls functions has no message item. Its output index is 0;
    the calls follow it."""

    def __init__(self, body: ResponsesRequest, sub: Submitted) -> None:
        self.body = body
        self.run_id = sub.run_id
        self.shape: _Shape | None = None
        self.sequence = 0
        self.text: list[str] = []
        self.message_added = False

    def _send(self, out: EventStream, event: ResponseStreamEvent, seq: int, fresh: bool) -> None:
        out.add(event.model_dump_json(), id=seq, event=event.type, fresh=fresh)

    def _next(self) -> int:
        number, self.sequence = self.sequence, self.sequence + 1
        return number

    def _start(self, out: EventStream, event: RunEvent) -> _Shape:
        # Created when the run's first event was, so a resumed stream says the same.
        shape = _Shape(self.body, self.run_id, event.ts)
        for kind in ("response.created", "response.in_progress"):
            lifecycle = ResponseLifecycleEvent(
                type=kind, sequence_number=self._next(), response=shape.response("in_progress")
            )
            self._send(out, lifecycle, event.seq, fresh=False)
        return shape

    def _add_message(self, out: EventStream, shape: _Shape, seq: int) -> None:
        self.message_added = True
        added = OutputItemEvent(
            type="response.output_item.added",
            sequence_number=self._next(),
            item=OutputMessage(id=shape.item_id, status="in_progress", content=[]),
        )
        part = ContentPartEvent(
            type="response.content_part.added",
            sequence_number=self._next(),
            item_id=shape.item_id,
            part=OutputText(text=""),
        )
        for event in (added, part):
            self._send(out, event, seq, fresh=False)

    def event(self, out: EventStream, event: RunEvent) -> bool:
        if self.shape is None:
            self.shape = self._start(out, event)
        shape = self.shape
        if isinstance(event, DeltaEvent):
            if not self.message_added:
                self._add_message(out, shape, event.seq)
            self.text.append(event.text)
            delta = OutputTextDeltaEvent(
                sequence_number=self._next(), item_id=shape.item_id, delta=event.text
            )
            self._send(out, delta, event.seq, fresh=False)
            return False
        if isinstance(event, DoneEvent):
            status, incomplete = _ending(event.finish_reason)
            self._close(
                out,
                shape,
                event.seq,
                status,
                calls=event.tool_calls,
                usage=event.usage,
                incomplete=incomplete,
            )
            return True
        if isinstance(event, ErrorEvent):
            self._fail(out, shape, event.error, event.seq, fresh=False)
            return True
        if event.type == "aborted":
            self._close(out, shape, event.seq, "cancelled", calls=[], usage=None, incomplete=None)
            return True
        return False  # the agent's own tool calls and results run inside it

    def _close(
        self,
        out: EventStream,
        shape: _Shape,
        seq: int,
        status: ResponseStatus,
        *,
        calls: list[ToolCall],
        usage: Usage | None,
        incomplete: IncompleteDetails | None,
    ) -> None:
        closing: list[ResponseStreamEvent] = []
        output: list[OutputItem] = []
        if self.message_added or not calls:
            if not self.message_added:
                self._add_message(out, shape, seq)
            text = "".join(self.text)
            item = shape.message(text, "completed" if status == "completed" else "incomplete")
            closing += [
                OutputTextDoneEvent(sequence_number=self._next(), item_id=shape.item_id, text=text),
                ContentPartEvent(
                    type="response.content_part.done",
                    sequence_number=self._next(),
                    item_id=shape.item_id,
                    part=OutputText(text=text),
                ),
                OutputItemEvent(
                    type="response.output_item.done", sequence_number=self._next(), item=item
                ),
            ]
            output.append(item)
        for i, call in enumerate(calls):
            made = shape.call(i, call, done=True)
            closing += self._call_events(shape.call(i, call, done=False), made, len(output))
            output.append(made)
        closing.append(
            ResponseLifecycleEvent(
                type="response.completed" if status == "completed" else "response.incomplete",
                sequence_number=self._next(),
                response=shape.response(status, output=output, usage=usage, incomplete=incomplete),
            )
        )
        for event in closing:
            self._send(out, event, seq, fresh=False)

    def _call_events(
        self, added: OutputFunctionCall, done: OutputFunctionCall, index: int
    ) -> list[ResponseStreamEvent]:
        """One call, streamed: its item, its arguments whole in one delta, its item done."""
        return [
            OutputItemEvent(
                type="response.output_item.added",
                sequence_number=self._next(),
                output_index=index,
                item=added,
            ),
            FunctionCallArgumentsDeltaEvent(
                sequence_number=self._next(),
                item_id=done.id,
                output_index=index,
                delta=done.arguments,
            ),
            FunctionCallArgumentsDoneEvent(
                sequence_number=self._next(),
                item_id=done.id,
                output_index=index,
                arguments=done.arguments,
            ),
            OutputItemEvent(
                type="response.output_item.done",
                sequence_number=self._next(),
                output_index=index,
                item=done,
            ),
        ]

    def _fail(
        self, out: EventStream, shape: _Shape, error: ErrorInfo, seq: int, *, fresh: bool
    ) -> None:
        output: list[OutputItem] = (
            [shape.message("".join(self.text), "incomplete")] if self.text else []
        )
        failed = ResponseLifecycleEvent(
            type="response.failed",
            sequence_number=self._next(),
            response=shape.response("failed", output=output, error=error),
        )
        self._send(out, failed, seq, fresh=fresh)

    def failure(self, out: EventStream, error: ErrorInfo, seq: int) -> None:
        shape = self.shape or _Shape(self.body, self.run_id, time.time())
        self._fail(out, shape, error, seq, fresh=True)

    def end(self, out: EventStream, seq: int) -> None:
        pass
