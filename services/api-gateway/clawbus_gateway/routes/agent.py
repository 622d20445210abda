"""OpenClaw's HTTP agent surface (000): GET /status, POST /v1/agent/run and its SSE twin
POST /v1/agent/run/stream (`event: delta` / `event: done`, resumable, see clawbus_gateway.sse).

`agentId` picks the agent (else the one an `agent:<id>:...` `sessionKey` names, else `main`;
`default` is its alias), `options.model` a `provider/model` it runs with, `sessionKey` the
session (the agent's main session `agent:<id>:main` when left out, as on the WebSocket).
`options.thinking` is accepted and not used.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiohttp import web
from clawbus_core.runservice import Submitted, Turn
from clawbus_core.store import channels
from clawbus_protocol import __version__
from clawbus_protocol.errors import ErrorInfo
from clawbus_protocol.openclaw_http import (
    AgentRunRequest,
    AgentRunResult,
    GatewayInfo,
    GatewayStatus,
    OpenClawUsage,
    StreamDelta,
    StreamDone,
)
from clawbus_protocol.runs import (
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    RunEvent,
)

from clawbus_gateway.body import read_model
from clawbus_gateway.keys import RUNS, SETTINGS
from clawbus_gateway.principal import principal
from clawbus_gateway.sse import EventStream, stream_run, submit_or_resume
from clawbus_gateway.turns import (
    Outcome,
    finished,
    openclaw_turn,
    outcome,
    replayed,
    run_headers,
)

routes = web.RouteTableDef()

STARTED: web.AppKey[float] = web.AppKey("started_at", float)


async def clock(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: when this gateway started serving, for /status `uptime`."""
    app[STARTED] = time.monotonic()
    yield


@routes.get("/status")
async def status(request: web.Request) -> web.Response:
    who = principal(request)
    settings = request.app[SETTINGS]
    runs = request.app[RUNS]
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    port = sockname[1] if isinstance(sockname, tuple) else settings.gateway_port
    bus_ok = runs.nc.is_connected
    found = await channels.list_channels(runs.pool, runs.names.namespace, who.tenant_id)
    body = GatewayStatus(
        status="ok" if bus_ok else "degraded",
        version=__version__,
        uptime=int(time.monotonic() - request.app[STARTED]),
        gateway=GatewayInfo(
            port=port,
            bind=settings.gateway_host,
            auth="token" if settings.gateway_password is None else "token+password",
        ),
        channels={c.name: c.shown_status for c in found},
    )
    return web.json_response(text=body.model_dump_json(), status=200 if bus_ok else 503)


def _turn(request: web.Request, body: AgentRunRequest) -> Turn:
    return openclaw_turn(
        request,
        message=body.message,
        agent_id=body.agent_id,
        session=body.session_key,
        model=body.options.model,
    )


def _result(sub: Submitted, result: Outcome) -> web.Response:
    body = AgentRunResult(
        run_id=sub.run_id,
        session_key=sub.session_key,
        response=result.text,
        usage=OpenClawUsage.of(result.usage),
        finish_reason=result.finish_reason,
    )
    return web.json_response(
        text=body.model_dump_json(), headers=run_headers(sub.run_id, sub.session_key)
    )


@routes.post("/v1/agent/run")
async def run(request: web.Request) -> web.Response:
    body = await read_model(request, AgentRunRequest)
    turn = _turn(request, body)
    runs = request.app[RUNS]
    async with runs.submit(turn) as sub:
        if (done := finished(sub)) is not None:
            return _result(sub, replayed(sub, done))
        return _result(sub, await outcome(sub, sub.watch.events(timeout_s=runs.timeout_s)))


@routes.post("/v1/agent/run/stream")
async def run_stream(request: web.Request) -> web.StreamResponse:
    body = await read_model(request, AgentRunRequest)
    turn = _turn(request, body)
    runs = request.app[RUNS]
    async with submit_or_resume(request, runs, turn) as (sub, after_seq):
        if (done := finished(sub)) is not None:
            return _result(sub, replayed(sub, done))
        return await stream_run(
            request,
            sub.watch.events(timeout_s=runs.timeout_s),
            _Frames(sub),
            headers=run_headers(sub.run_id, sub.session_key),
            after_seq=after_seq,
        )


class _Frames:
    """`event: delta` per text delta, `event: done` at the end; `event: error` on failure
    (the error envelope as data)."""

    def __init__(self, sub: Submitted) -> None:
        self.run_id = sub.run_id

    def event(self, out: EventStream, event: RunEvent) -> bool:
        if isinstance(event, DeltaEvent):
            delta = StreamDelta(delta=event.text, run_id=self.run_id)
            out.add(delta.model_dump_json(), id=event.seq, event="delta")
            return False
        if isinstance(event, DoneEvent):
            done = StreamDone(
                run_id=self.run_id,
                finish_reason=event.finish_reason,
                usage=OpenClawUsage.of(event.usage),
            )
            out.add(done.model_dump_json(), id=event.seq, event="done")
            return True
        if isinstance(event, ErrorEvent):
            self._error(out, event.error, event.seq, fresh=False)
            return True
        if event.type == "aborted":
            done = StreamDone(run_id=self.run_id, finish_reason="aborted")
            out.add(done.model_dump_json(exclude_none=True), id=event.seq, event="done")
            return True
        return False  # tool calls and results run inside the agent; this stream is its text

    def _error(self, out: EventStream, error: ErrorInfo, seq: int, *, fresh: bool) -> None:
        out.add(error.envelope().model_dump_json(), id=seq, event="error", fresh=fresh)

    def failure(self, out: EventStream, error: ErrorInfo, seq: int) -> None:
        self._error(out, error, seq, fresh=True)

    def end(self, out: EventStream, seq: int) -> None:
        pass
