"""OpenClaw's REST API v1 (002), under /api/v1: POST /chat (+ SSE /chat/stream with
`event: start` / `delta` / `done`, resumable, see clawbus_gateway.sse), GET /sessions,
GET /sessions/{key}/history?limit=, DELETE /sessions/{key}, GET /status.

A thin adapter over the run service and the session store, as 000's /v1/agent/run and
/v1/sessions are: the chat body is 000's minus `options` (`agentId` and `model` are accepted
as extensions), an omitted `sessionKey` is the agent's main session. Chat routes need the
`chat` permission, session routes `sessions`, /status any credential.

Errors under /api/v1, whoever raises them (auth and rate limits included), leave in 002's
envelope `{"error": {"code": "RATE_LIMITED", "message": ..., "retryAfter": 60}}` (see
clawbus_gateway.errors).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from aiohttp import web
from clawbus_core.runservice import Submitted, Turn
from clawbus_core.store import sessions as store
from clawbus_protocol import __version__
from clawbus_protocol.errors import ErrorCode, ErrorInfo
from clawbus_protocol.openclaw_v1 import (
    ChatRequest,
    ChatResponse,
    ChatUsage,
    History,
    HistoryMessage,
    SessionInfo,
    SessionList,
    Status,
    StatusModel,
    StreamDelta,
    StreamDone,
    StreamStart,
)
from clawbus_protocol.openclaw_v1 import ErrorEnvelope as V1ErrorEnvelope
from clawbus_protocol.runs import (
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    RunEvent,
)

from clawbus_gateway.body import read_model
from clawbus_gateway.keys import CATALOG, RUNS, SETTINGS
from clawbus_gateway.principal import principal, require
from clawbus_gateway.routes.agent import STARTED
from clawbus_gateway.sse import EventStream, stream_run, submit_or_resume
from clawbus_gateway.turns import (
    Outcome,
    finished,
    int_query,
    openclaw_turn,
    outcome,
    path_session_key,
    replayed,
    run_headers,
)

PREFIX = "/api/v1"
DEFAULT_HISTORY = 50  # 002's example asks for ?limit=50
DEFAULT_PAGE = 100

routes = web.RouteTableDef()


# --- chat -------------------------------------------------------------------------------------


def _turn(request: web.Request, body: ChatRequest) -> Turn:
    return openclaw_turn(
        request,
        message=body.message,
        agent_id=body.agent_id,
        session=body.session_key,
        model=body.model,
    )


async def _noting_model(
    events: AsyncIterator[RunEvent], into: list[str]
) -> AsyncIterator[RunEvent]:
    """`events`, keeping the model the run's DoneEvent names (the answer reports it)."""
    async for event in events:
        if isinstance(event, DoneEvent):
            into.append(event.model)
        yield event


def _answer(sub: Submitted, result: Outcome, model: str) -> web.Response:
    body = ChatResponse(
        id=str(sub.run_id),
        content=result.text,
        session_key=sub.session_key,
        model=model,
        usage=ChatUsage.of(result.usage),
        created_at=datetime.now(UTC),
    )
    return web.json_response(
        text=body.model_dump_json(), headers=run_headers(sub.run_id, sub.session_key)
    )


async def _chat(request: web.Request, body: ChatRequest) -> web.Response:
    turn = _turn(request, body)
    runs = request.app[RUNS]
    async with runs.submit(turn) as sub:
        if (done := finished(sub)) is not None:
            return _answer(sub, replayed(sub, done), done.model or "")
        models: list[str] = []
        events = _noting_model(sub.watch.events(timeout_s=runs.timeout_s), models)
        result = await outcome(sub, events)
        return _answer(sub, result, models[-1] if models else "")


async def _chat_stream(request: web.Request, body: ChatRequest) -> web.StreamResponse:
    turn = _turn(request, body)
    runs = request.app[RUNS]
    async with submit_or_resume(request, runs, turn) as (sub, after_seq):
        if (done := finished(sub)) is not None:
            return _answer(sub, replayed(sub, done), done.model or "")
        return await stream_run(
            request,
            sub.watch.events(timeout_s=runs.timeout_s),
            _Frames(sub),
            headers=run_headers(sub.run_id, sub.session_key),
            after_seq=after_seq,
        )


@routes.post(f"{PREFIX}/chat")
async def chat(request: web.Request) -> web.StreamResponse:
    require(request, "chat")  # before reading the body: a 403 does not depend on it
    body = await read_model(request, ChatRequest)
    if body.stream:
        return await _chat_stream(request, body)
    return await _chat(request, body)


@routes.post(f"{PREFIX}/chat/stream")
async def chat_stream(request: web.Request) -> web.StreamResponse:
    require(request, "chat")
    return await _chat_stream(request, await read_model(request, ChatRequest))


class _Frames:
    """`event: start` (the run's id) with the first event, `event: delta` per text delta,
    `event: done` at the end; `event: error` (002's error envelope) on failure or abort."""

    def __init__(self, sub: Submitted) -> None:
        self.run_id = sub.run_id
        self.started = False

    def event(self, out: EventStream, event: RunEvent) -> bool:
        if not self.started:  # shares the first event's id: a resumed stream skips it
            self.started = True
            start = StreamStart(id=str(self.run_id))
            out.add(start.model_dump_json(), id=event.seq, event="start")
        if isinstance(event, DeltaEvent):
            out.add(StreamDelta(content=event.text).model_dump_json(), id=event.seq, event="delta")
            return False
        if isinstance(event, DoneEvent):
            done = StreamDone(usage=ChatUsage.of(event.usage))
            out.add(done.model_dump_json(), id=event.seq, event="done")
            return True
        if isinstance(event, ErrorEvent):
            self._error(out, event.error, event.seq, fresh=False)
            return True
        if event.type == "aborted":
            aborted = ErrorInfo(code=ErrorCode.ABORTED, message=f"run {self.run_id} was aborted")
            self._error(out, aborted, event.seq, fresh=False)
            return True
        return False  # tool calls and results run inside the agent; this stream is its text

    def _error(self, out: EventStream, error: ErrorInfo, seq: int, *, fresh: bool) -> None:
        envelope = V1ErrorEnvelope.of(error).model_dump_json(exclude_none=True)
        out.add(envelope, id=seq, event="error", fresh=fresh)

    def failure(self, out: EventStream, error: ErrorInfo, seq: int) -> None:
        self._error(out, error, seq, fresh=True)

    def end(self, out: EventStream, seq: int) -> None:
        pass


# --- sessions ---------------------------------------------------------------------------------


@routes.get(f"{PREFIX}/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    who = require(request, "sessions")
    found = await store.list_sessions(
        request.app[RUNS].pool,
        who.tenant_id,
        limit=int_query(request, "limit", DEFAULT_PAGE, 1, store.MAX_PAGE),
        offset=int_query(request, "offset", 0, 0, 2**31 - 1),
    )
    body = SessionList(
        sessions=[
            SessionInfo(
                key=s.key,
                channel=s.channel,
                created_at=s.created_at,
                last_activity=s.updated_at,
                message_count=s.message_count,
            )
            for s in found
        ]
    )
    return web.json_response(text=body.model_dump_json())


@routes.get(f"{PREFIX}/sessions/{{session_key}}/history")
async def session_history(request: web.Request) -> web.Response:
    who = require(request, "sessions")
    key = path_session_key(request)
    limit = int_query(request, "limit", DEFAULT_HISTORY, 1, store.MAX_PAGE)
    messages = await store.history(request.app[RUNS].pool, who.tenant_id, key, limit=limit)
    body = History(
        messages=[
            HistoryMessage(role=m.role, content=m.content, timestamp=m.created_at) for m in messages
        ]
    )
    return web.json_response(text=body.model_dump_json())


@routes.delete(f"{PREFIX}/sessions/{{session_key}}")
async def delete_session(request: web.Request) -> web.Response:
    who = require(request, "sessions")
    await store.delete_session(request.app[RUNS].pool, who.tenant_id, path_session_key(request))
    return web.Response(status=204)


# --- status -----------------------------------------------------------------------------------


@routes.get(f"{PREFIX}/status")
async def status(request: web.Request) -> web.Response:
    who = principal(request)
    runs = request.app[RUNS]
    default = request.app[CATALOG].resolve(request.app[SETTINGS].default_model)
    bus_ok = runs.nc.is_connected
    body = Status(
        status="healthy" if bus_ok else "degraded",
        version=__version__,
        uptime=int(time.monotonic() - request.app[STARTED]),
        active_sessions=await store.count_sessions(runs.pool, who.tenant_id),
        model=StatusModel(provider=default.provider, model=default.name),
    )
    return web.json_response(text=body.model_dump_json(), status=200 if bus_ok else 503)
