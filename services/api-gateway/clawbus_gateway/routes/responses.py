"""The OpenAI Responses surface: POST /v1/responses, plain and SSE.

`model` names the agent or the model as on /v1/chat/completions. `input` is a string (one
user message) or a list of messages (`input_text` / `output_text` parts); `instructions`
is added as system text. The session is the previous response's (`previous_response_id`),
else the `x-openclaw-session-key` header's, else one per `user`; with none of them the
request is stateless (its input is the whole context). A dropped stream resumes with
`Last-Event-ID` (see clawbus_gateway.sse).

Answers are one assistant message with one `output_text` part. A stream sends the
SDK's sequence: response.created, response.in_progress, response.output_item.added,
response.content_part.added, response.output_text.delta..., response.output_text.done,
response.content_part.done, response.output_item.done, then response.completed (or
response.incomplete for a cut-off answer or an aborted run, response.failed for a failed one).
"""

from __future__ import annotations

import time
from uuid import UUID

from aiohttp import web
from clawbus_core.runservice import Submitted, Turn
from clawbus_protocol.errors import ErrorInfo, InvalidRequest
from clawbus_protocol.responses import (
    ContentPartEvent,
    IncompleteDetails,
    InputContentPart,
    ItemStatus,
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
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    RunEvent,
    RunInput,
    RunOptions,
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


def _text(content: str | list[InputContentPart] | None, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for part in content:
        if part.type not in _TEXT_PARTS or part.text is None:
            raise InvalidRequest(
                f"content part type {part.type!r} is not supported (input_text only)",
                param=f"input.{index}.content",
            )
        texts.append(part.text)
    return "\n".join(texts)


def _conversation(body: ResponsesRequest) -> tuple[list[str], list[ChatMessage]]:
    system = [body.instructions] if body.instructions else []
    if isinstance(body.input, str):
        return system, [ChatMessage(role="user", content=body.input)]
    messages: list[ChatMessage] = []
    for i, item in enumerate(body.input):
        if item.type != "message":
            raise InvalidRequest(
                f"input item type {item.type!r} is not supported (messages only)",
                param=f"input.{i}.type",
            )
        if item.role is None:
            raise InvalidRequest("an input message needs a role", param=f"input.{i}.role")
        text = _text(item.content, i)
        if item.role in ("system", "developer"):
            system.append(text)
        else:
            messages.append(ChatMessage(role=item.role, content=text))
    return system, messages


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


async def _turn(request: web.Request, body: ResponsesRequest) -> Turn:
    who = require(request, "chat")
    agent_key, model_override = target(body.model, request, request.app[CATALOG])
    system, messages = _conversation(body)
    said = user_text(messages, param="input")
    return Turn(
        agent_key=agent_key,
        session_key=await _session(request, body, agent_key),
        user_text=said,
        input=RunInput(system="\n\n".join(system) or None, messages=messages),
        options=RunOptions(
            model=model_override,
            temperature=body.temperature,
            top_p=body.top_p,
            max_tokens=body.max_output_tokens,
        ),
        idempotency_key=header(request, "Idempotency-Key"),
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

    def response(
        self,
        status: ResponseStatus,
        *,
        output: list[OutputMessage] | None = None,
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
        )

    def finished(self, result: Outcome) -> Response:
        status, incomplete = _ending(result.finish_reason)
        item_status: ItemStatus = "completed" if status == "completed" else "incomplete"
        return self.response(
            status,
            output=[self.message(result.text, item_status)],
            usage=result.usage,
            incomplete=incomplete,
        )


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
    from its first event, so the numbers and the accumulated text come out the same."""

    def __init__(self, body: ResponsesRequest, sub: Submitted) -> None:
        self.body = body
        self.run_id = sub.run_id
        self.shape: _Shape | None = None
        self.sequence = 0
        self.text: list[str] = []

    def _send(self, out: EventStream, event: ResponseStreamEvent, seq: int, fresh: bool) -> None:
        out.add(event.model_dump_json(), id=seq, event=event.type, fresh=fresh)

    def _next(self) -> int:
        number, self.sequence = self.sequence, self.sequence + 1
        return number

    def _start(self, out: EventStream, event: RunEvent) -> _Shape:
        # Created when the run's first event was, so a resumed stream says the same.
        shape = _Shape(self.body, self.run_id, event.ts)
        empty = OutputText(text="")
        for kind in ("response.created", "response.in_progress"):
            lifecycle = ResponseLifecycleEvent(
                type=kind, sequence_number=self._next(), response=shape.response("in_progress")
            )
            self._send(out, lifecycle, event.seq, fresh=False)
        added = OutputItemEvent(
            type="response.output_item.added",
            sequence_number=self._next(),
            item=OutputMessage(id=shape.item_id, status="in_progress", content=[]),
        )
        self._send(out, added, event.seq, fresh=False)
        part = ContentPartEvent(
            type="response.content_part.added",
            sequence_number=self._next(),
            item_id=shape.item_id,
            part=empty,
        )
        self._send(out, part, event.seq, fresh=False)
        return shape

    def event(self, out: EventStream, event: RunEvent) -> bool:
        if self.shape is None:
            self.shape = self._start(out, event)
        shape = self.shape
        if isinstance(event, DeltaEvent):
            self.text.append(event.text)
            delta = OutputTextDeltaEvent(
                sequence_number=self._next(), item_id=shape.item_id, delta=event.text
            )
            self._send(out, delta, event.seq, fresh=False)
            return False
        if isinstance(event, DoneEvent):
            status, incomplete = _ending(event.finish_reason)
            self._close(out, shape, event.seq, status, usage=event.usage, incomplete=incomplete)
            return True
        if isinstance(event, ErrorEvent):
            self._fail(out, shape, event.error, event.seq, fresh=False)
            return True
        if event.type == "aborted":
            self._close(out, shape, event.seq, "cancelled", usage=None, incomplete=None)
            return True
        return False  # tool calls and results run inside the agent

    def _close(
        self,
        out: EventStream,
        shape: _Shape,
        seq: int,
        status: ResponseStatus,
        *,
        usage: Usage | None,
        incomplete: IncompleteDetails | None,
    ) -> None:
        text = "".join(self.text)
        part = OutputText(text=text)
        item = shape.message(text, "completed" if status == "completed" else "incomplete")
        closing: list[ResponseStreamEvent] = [
            OutputTextDoneEvent(sequence_number=self._next(), item_id=shape.item_id, text=text),
            ContentPartEvent(
                type="response.content_part.done",
                sequence_number=self._next(),
                item_id=shape.item_id,
                part=part,
            ),
            OutputItemEvent(
                type="response.output_item.done", sequence_number=self._next(), item=item
            ),
            ResponseLifecycleEvent(
                type="response.completed" if status == "completed" else "response.incomplete",
                sequence_number=self._next(),
                response=shape.response(status, output=[item], usage=usage, incomplete=incomplete),
            ),
        ]
        for event in closing:
            self._send(out, event, seq, fresh=False)

    def _fail(
        self, out: EventStream, shape: _Shape, error: ErrorInfo, seq: int, *, fresh: bool
    ) -> None:
        output = [shape.message("".join(self.text), "incomplete")] if self.text else []
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
