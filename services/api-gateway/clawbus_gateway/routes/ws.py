"""The WebSocket control channel: `GET /` (000) and `GET /ws` (001), one protocol on both.

Opening: the auth middleware has checked the credential; here the `Origin` header is
checked against gateway_allowed_origins before the upgrade (403; no Origin = a non-browser
client = allowed; "*" = any). A GET without `Upgrade: websocket` is answered 400.

Then the gateway sends `connected` (client id, version, the methods this credential may
call), answers every request frame `{id, method, params}` with one response frame of the
same id (see clawbus_protocol.ws), streams the runs the client starts (`chat.delta`,
`tool.call`, `tool.result`, then `chat.done` or `chat.error`), forwards the 001 session
events of the sessions it subscribed to (`subscribe` {sessionKeys: [...]} or {all: true}:
every session of its tenant, from whichever replica runs them), and sends `heartbeat`
every gateway_ws_heartbeat_s.

Limits: a frame over gateway_ws_max_frame_bytes closes the connection (1009); over
RATE_PER_S frames a second (burst RATE_BURST) a frame is answered `rate_limited`, and a
client that sends RATE_BURST more frames into the refusals is closed (1008); a connection
with no frame, no run in flight and no subscription for gateway_ws_idle_timeout_s is
closed (1000, "idle timeout").

A client that leaves mid-run does not stop the run: it completes and is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from aiohttp import WSCloseCode, WSMsgType, web
from clawbus_core import sessionkeys
from clawbus_core.runservice import Submitted, Turn, canonical_agent
from clawbus_core.store import channels, sessions
from clawbus_core.store import runs as runstore
from clawbus_protocol import __version__
from clawbus_protocol import ws as frames
from clawbus_protocol.channels import ChannelList
from clawbus_protocol.errors import (
    ClawbusError,
    ErrorCode,
    ErrorInfo,
    Forbidden,
    InternalError,
    InvalidRequest,
    RateLimited,
)
from clawbus_protocol.openclaw_browser import ScreenshotRequest
from clawbus_protocol.runs import (
    AbortedEvent,
    AbortResult,
    ChatMessage,
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    RunInput,
    RunOptions,
    ToolCallEvent,
    ToolResultEvent,
)
from clawbus_protocol.ws import MethodResult, RequestFrame, ServerFrame, SessionEvent
from pydantic import BaseModel, ValidationError

from clawbus_gateway.broadcast import BROADCASTER, Listener
from clawbus_gateway.keys import CATALOG, RUNS, SETTINGS
from clawbus_gateway.observe import connection
from clawbus_gateway.principal import Permission, principal, require
from clawbus_gateway.routes import browser
from clawbus_gateway.routes.channels import channel_info
from clawbus_gateway.turns import openclaw_agent

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

RATE_PER_S = 20
RATE_BURST = 40
# Session events waiting for a slow client; past this they are dropped for that client.
EVENT_BACKLOG = 1024
# The channel runs started here are stored with (OpenClaw's name for its WebSocket chat).
CHANNEL = "webchat"

M = TypeVar("M", bound=BaseModel)
FrameId = int | str | None


def _now_ms() -> int:
    return int(time.time() * 1000)


def check_origin(request: web.Request, allowed: list[str]) -> None:
    origin = request.headers.get("Origin")
    if origin is None or "*" in allowed or origin in allowed:
        return
    raise Forbidden(
        f"origin {origin!r} may not open the WebSocket (see gateway_allowed_origins)",
        origin=origin,
    )


@routes.get("/")
@routes.get("/ws")
async def control_channel(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    ws = web.WebSocketResponse(max_msg_size=settings.gateway_ws_max_frame_bytes)
    if not ws.can_prepare(request).ok:
        raise InvalidRequest(
            f"{request.path} is the WebSocket control channel: connect with "
            "`Upgrade: websocket` (HTTP APIs live under /v1 and /api)"
        )
    check_origin(request, settings.gateway_allowed_origins)
    await ws.prepare(request)
    with connection("ws"):
        await Connection(request, ws).serve()
    return ws


class _Bucket:
    """Token bucket: `rate` frames a second on average, `burst` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def retry_after_ms(self) -> int:
        return math.ceil((1 - self.tokens) / self.rate * 1000)


@dataclass(eq=False)
class _RunStream:
    """A chat.run in flight. `run_id` is set once the run is stored and published: only then
    may the stream be cancelled (earlier, a cancel could leave a stored run unpublished)."""

    task: asyncio.Task[None] | None = None
    run_id: uuid.UUID | None = None


def _validate(model: type[M], data: object, what: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        field = ".".join(str(p) for p in first["loc"])
        where = f"{what}.{field}" if field else what
        raise InvalidRequest(f"invalid {where}: {first['msg']}", param=where) from None


def _decode(raw: str | None) -> object:
    if raw is None:
        raise InvalidRequest("binary frames are not supported; send JSON text frames")
    try:
        return json.loads(raw)
    except ValueError:
        raise InvalidRequest(
            'frame is not valid JSON; send {"id": ..., "method": ..., "params": {...}}'
        ) from None


def _frame_id(data: object) -> FrameId:
    """The id to answer a frame with, even when the rest of the frame is invalid."""
    if not isinstance(data, dict):
        return None
    value = data.get("id")
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    return value


def _session_info(s: sessions.SessionSummary) -> frames.SessionInfo:
    return frames.SessionInfo(
        session_key=s.key,
        agent_id=s.agent_key,
        channel=s.channel,
        title=s.title,
        created_at=s.created_at,
        updated_at=s.updated_at,
        message_count=s.message_count,
        active_runs=s.active_runs,
    )


class Connection:
    """One WebSocket client: reads its frames, answers them, streams its runs."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        app = request.app
        self.request = request
        self.ws = ws
        self.settings = app[SETTINGS]
        self.runs = app[RUNS]
        self.catalog = app[CATALOG]
        self.broadcaster = app[BROADCASTER]
        self.who = principal(request)
        self.client_id = uuid.uuid4()
        self.listener = Listener(
            tenant_id=self.who.tenant_id, deliver=self._deliver, close=self.close
        )
        self._events: asyncio.Queue[SessionEvent] = asyncio.Queue(maxsize=EVENT_BACKLOG)
        self._dropped = 0
        self._streams: set[_RunStream] = set()
        self._bucket = _Bucket(RATE_PER_S, RATE_BURST)
        self._refused = 0

    # --- lifecycle ----------------------------------------------------------------------

    async def serve(self) -> None:
        pump = asyncio.create_task(self._pump(), name=f"ws-pump-{self.client_id}")
        try:
            with self.broadcaster.register(self.listener):
                await self._send(frames.ConnectedEvent(data=self._connected()))
                await self._read()
        finally:
            await self.ws.close()  # first: a run still being submitted then sends nothing
            await self._stop_runs()
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            if self._dropped:
                log.warning("ws client %s missed %d session events", self.client_id, self._dropped)

    async def close(self, code: WSCloseCode, reason: str) -> None:
        await self.ws.close(code=code, message=reason.encode())

    def _connected(self) -> frames.Connected:
        allowed = [
            name
            for name, (permission, _) in METHODS.items()
            if permission is None or self.who.allows(permission)
        ]
        return frames.Connected(
            client_id=self.client_id,
            gateway_version=__version__,
            capabilities=allowed,
            events=[*frames.RUN_EVENTS, *frames.SESSION_EVENTS],
        )

    async def _stop_runs(self) -> None:
        streams = list(self._streams)
        for stream in streams:
            if stream.run_id is not None and stream.task is not None:
                stream.task.cancel()
        # Streams still submitting finish storing and publishing their run, then see the
        # connection closed and end.
        await asyncio.gather(*(s.task for s in streams if s.task), return_exceptions=True)

    # --- outbound -----------------------------------------------------------------------

    async def _send(self, frame: ServerFrame) -> None:
        if self.ws.closed:
            return
        with contextlib.suppress(ConnectionResetError):  # the client left; _read sees it
            await self.ws.send_str(frame.model_dump_json())

    async def _respond(self, frame_id: FrameId, result: MethodResult) -> None:
        await self._send(frames.ResponseFrame(id=frame_id, ok=True, result=result))

    async def _respond_error(self, frame_id: FrameId, error: ErrorInfo) -> None:
        await self._send(frames.ResponseFrame(id=frame_id, ok=False, error=error.envelope().error))

    def _deliver(self, event: SessionEvent) -> None:
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:
            self._dropped += 1

    async def _pump(self) -> None:
        """Session events as they arrive, and a heartbeat every gateway_ws_heartbeat_s."""
        loop = asyncio.get_running_loop()
        period = self.settings.gateway_ws_heartbeat_s
        next_beat = loop.time() + period
        while True:
            try:
                event = await asyncio.wait_for(
                    self._events.get(), timeout=max(0.0, next_beat - loop.time())
                )
            except TimeoutError:
                next_beat = max(next_beat + period, loop.time())
                await self._send(frames.HeartbeatEvent(data=frames.Heartbeat(timestamp=_now_ms())))
            else:
                await self._send(event)

    # --- inbound ------------------------------------------------------------------------

    async def _read(self) -> None:
        idle_s = self.settings.gateway_ws_idle_timeout_s
        while not self.ws.closed:
            try:
                msg = await self.ws.receive(timeout=idle_s)
            except TimeoutError:
                if self._streams or self.listener.listening:
                    continue
                await self.close(WSCloseCode.OK, "idle timeout")
                return
            if msg.type is WSMsgType.TEXT:
                await self._on_frame(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await self._on_frame(None)
            else:  # CLOSE, CLOSING, CLOSED, or ERROR (e.g. the frame was too big: 1009)
                return

    async def _on_frame(self, raw: str | None) -> None:
        if not self._bucket.take():
            await self._refuse(raw)
            return
        self._refused = 0
        frame_id: FrameId = None
        try:
            data = _decode(raw)
            frame_id = _frame_id(data)
            await self._call(_validate(RequestFrame, data, "frame"))
        except ClawbusError as exc:
            await self._respond_error(frame_id, exc.info)
        except Exception:
            log.exception("ws client %s: frame failed", self.client_id)
            await self._respond_error(frame_id, InternalError("internal error; see the log").info)

    async def _refuse(self, raw: str | None) -> None:
        self._refused += 1
        if self._refused > RATE_BURST:
            await self.close(WSCloseCode.POLICY_VIOLATION, "rate limit exceeded")
            return
        frame_id: FrameId = None
        with contextlib.suppress(ValueError):
            frame_id = _frame_id(json.loads(raw)) if raw is not None else None
        error = RateLimited(
            f"more than {RATE_PER_S} frames a second on this connection; slow down "
            "(a client that keeps sending is disconnected)",
            retry_after_ms=self._bucket.retry_after_ms(),
        )
        await self._respond_error(frame_id, error.info)

    async def _call(self, frame: RequestFrame) -> None:
        method = METHODS.get(frame.method)
        if method is None:
            raise InvalidRequest(
                f"unknown method {frame.method!r}; methods: {', '.join(METHODS)}",
                param="method",
            )
        permission, handler = method
        if permission is not None:
            require(self.request, permission)
        result = await handler(self, frame)
        if result is not None:
            await self._respond(frame.id, result)

    # --- chat.run -----------------------------------------------------------------------

    async def chat_run(self, frame: RequestFrame) -> None:
        params = _validate(frames.ChatRunParams, frame.params, "params")
        turn = self._turn(params)
        stream = _RunStream()
        self._streams.add(stream)
        stream.task = asyncio.create_task(
            self._run(frame.id, turn, stream, deltas=params.options.stream),
            name=f"ws-run-{self.client_id}",
        )
        stream.task.add_done_callback(lambda _: self._streams.discard(stream))

    def _turn(self, params: frames.ChatRunParams) -> Turn:
        if not params.message.strip():
            raise InvalidRequest("message is empty", param="params.message")
        agent = openclaw_agent(params.agent_id, params.session_key)
        options = params.options
        model = self.catalog.resolve(options.model).id if options.model else None
        return Turn(
            agent_key=agent,
            session_key=params.session_key or sessionkeys.main_key(agent),
            user_text=params.message,
            input=RunInput(messages=[ChatMessage(role="user", content=params.message)]),
            options=RunOptions(
                model=model, temperature=options.temperature, max_tokens=options.max_tokens
            ),
            channel=CHANNEL,
            idempotency_key=params.idempotency_key,
            queue_mode=options.queue_mode,
            tenant_id=self.who.tenant_id,
        )

    async def _run(
        self, frame_id: FrameId, turn: Turn, stream: _RunStream, *, deltas: bool
    ) -> None:
        answered = False
        try:
            async with self.runs.submit(turn) as sub:
                stream.run_id = sub.run_id
                existing = sub.existing
                status = "accepted" if existing is None else existing.status
                result = frames.ChatRunResult(
                    run_id=sub.run_id, session_key=sub.session_key, status=status
                )
                await self._respond(frame_id, result)
                answered = True
                if self.ws.closed:
                    return
                if existing is not None and existing.status not in ("queued", "running"):
                    await self._send(_replayed(sub, existing))
                    return
                await self._follow(sub, deltas=deltas)
        except ClawbusError as exc:
            if not answered:
                await self._respond_error(frame_id, exc.info)
        except Exception:
            log.exception("ws client %s: chat.run failed", self.client_id)
            if not answered:
                await self._respond_error(frame_id, InternalError("internal error").info)

    async def _follow(self, sub: Submitted, *, deltas: bool) -> None:
        """The run's events as 000's frames to this client, and as 001's to every listener."""
        key, run_id = sub.session_key, sub.run_id
        try:
            async for event in sub.watch.events(timeout_s=self.runs.timeout_s):
                if isinstance(event, DeltaEvent):
                    if deltas:
                        data = frames.ChatDelta(session_key=key, run_id=run_id, delta=event.text)
                        await self._send(frames.ChatDeltaEvent(data=data))
                elif isinstance(event, ToolCallEvent):
                    await self._tool_call(sub, event)
                elif isinstance(event, ToolResultEvent):
                    result = frames.ToolResultData(
                        run_id=run_id,
                        session_key=key,
                        call_id=event.call_id,
                        tool=event.name,
                        result=event.result,
                        is_error=event.is_error,
                    )
                    await self._send(frames.ToolResultFrame(data=result))
                elif isinstance(event, DoneEvent):
                    await self._done(sub, event)
                elif isinstance(event, ErrorEvent):
                    await self._failed(sub, event.error)
                elif isinstance(event, AbortedEvent):
                    done = frames.ChatDone(
                        session_key=key,
                        run_id=run_id,
                        text=event.text,
                        finish_reason="aborted",
                        aborted=True,
                    )
                    await self._send(frames.ChatDoneEvent(data=done))
        except ClawbusError as exc:  # e.g. the run outlived the request timeout
            await self._failed(sub, exc.info)
        except Exception:
            log.exception("ws client %s: following run %s failed", self.client_id, run_id)
            await self._failed(sub, InternalError("internal error; see the log").info)

    async def _tool_call(self, sub: Submitted, event: ToolCallEvent) -> None:
        call = event.call
        data = frames.ToolCallData(
            run_id=sub.run_id,
            session_key=sub.session_key,
            call_id=call.id,
            tool=call.name,
            params=call.arguments,
        )
        await self._send(frames.ToolCallFrame(data=data))

    async def _done(self, sub: Submitted, event: DoneEvent) -> None:
        done = frames.ChatDone(
            session_key=sub.session_key,
            run_id=sub.run_id,
            text=event.text,
            finish_reason=event.finish_reason,
            model=event.model,
            usage=frames.WsUsage.of(event.usage),
        )
        await self._send(frames.ChatDoneEvent(data=done))

    async def _failed(self, sub: Submitted, error: ErrorInfo) -> None:
        body = error.envelope().error
        failed = frames.ChatError(session_key=sub.session_key, run_id=sub.run_id, error=body)
        await self._send(frames.ChatErrorEvent(data=failed))

    # --- the other methods --------------------------------------------------------------

    async def chat_abort(self, frame: RequestFrame) -> MethodResult:
        params = _validate(frames.ChatAbortParams, frame.params, "params")
        result = await self.runs.abort(
            self.who.tenant_id, run_id=params.run_id, session_key=params.session_key
        )
        return AbortResult(aborted=bool(result.run_ids), run_ids=result.run_ids)

    async def session_list(self, frame: RequestFrame) -> MethodResult:
        params = _validate(frames.SessionListParams, frame.params, "params")
        agent = canonical_agent(params.agent_id) if params.agent_id else None
        found = await sessions.list_sessions(
            self.runs.pool,
            self.who.tenant_id,
            agent_key=agent,
            limit=params.limit,
            offset=params.offset,
        )
        return frames.SessionList(sessions=[_session_info(s) for s in found])

    async def session_get(self, frame: RequestFrame) -> MethodResult:
        params = _validate(frames.SessionGetParams, frame.params, "params")
        found = await sessions.get_session(self.runs.pool, self.who.tenant_id, params.session_key)
        return _session_info(found)

    async def subscribe(self, frame: RequestFrame) -> MethodResult:
        params = _validate(frames.SubscribeParams, frame.params, "params")
        self.listener.session_keys.update(params.session_keys)
        self.listener.all_sessions = self.listener.all_sessions or params.all
        return self._subscription()

    async def unsubscribe(self, frame: RequestFrame) -> MethodResult:
        params = _validate(frames.SubscribeParams, frame.params, "params")
        if params.all:
            self.listener.session_keys.clear()
            self.listener.all_sessions = False
        self.listener.session_keys.difference_update(params.session_keys)
        return self._subscription()

    def _subscription(self) -> frames.Subscription:
        return frames.Subscription(
            session_keys=sorted(self.listener.session_keys), all=self.listener.all_sessions
        )

    async def channel_list(self, frame: RequestFrame) -> MethodResult:
        _validate(frames.NoParams, frame.params, "params")
        found = await channels.list_channels(
            self.runs.pool, self.runs.names.namespace, self.who.tenant_id
        )
        return ChannelList(channels=[channel_info(c) for c in found])

    async def channel_status(self, frame: RequestFrame) -> MethodResult:
        params = _validate(frames.ChannelStatusParams, frame.params, "params")
        found = await channels.find_channel(
            self.runs.pool, self.runs.names.namespace, self.who.tenant_id, params.channel_id
        )
        return channel_info(found)

    async def browser_screenshot(self, frame: RequestFrame) -> MethodResult:
        params = _validate(frames.BrowserScreenshotParams, frame.params, "params")
        body = _validate(ScreenshotRequest, params.model_dump(exclude_none=True), "params")
        return await browser.screenshot(self.runs, self.who, body)

    async def system_status(self, frame: RequestFrame) -> MethodResult:
        _validate(frames.NoParams, frame.params, "params")
        count = await sessions.count_sessions(self.runs.pool, self.who.tenant_id)
        return frames.SystemStatus(
            status="ok" if self.runs.nc.is_connected else "degraded",
            gateway_version=__version__,
            instance_id=self.settings.gateway_instance_id,
            uptime=int(time.monotonic() - self.broadcaster.started_at),
            active_runs=self.runs.relay.active,
            sessions=count,
            connections=self.broadcaster.clients,
        )


def _replayed(
    sub: Submitted, run: runstore.ExistingRun
) -> frames.ChatDoneEvent | frames.ChatErrorEvent:
    """A retried chat.run (same idempotencyKey) of a finished run gets that run's end."""
    if run.status == "failed":
        info = run.error or ErrorInfo(code=ErrorCode.INTERNAL_ERROR, message="the run failed")
        error = frames.ChatError(
            session_key=sub.session_key, run_id=sub.run_id, error=info.envelope().error
        )
        return frames.ChatErrorEvent(data=error)
    done = frames.ChatDone(
        session_key=sub.session_key,
        run_id=sub.run_id,
        text=run.text or "",
        finish_reason="aborted" if run.status == "aborted" else (run.finish_reason or "stop"),
        model=run.model,
        usage=frames.WsUsage.of(run.usage),
        aborted=run.status == "aborted",
    )
    return frames.ChatDoneEvent(data=done)


Handler = Callable[[Connection, RequestFrame], Awaitable[MethodResult | None]]

# Each method with the permission it needs (None: any authenticated caller).
METHODS: dict[str, tuple[Permission | None, Handler]] = {
    "chat.run": ("chat", Connection.chat_run),
    "chat.abort": ("chat", Connection.chat_abort),
    "session.list": ("sessions", Connection.session_list),
    "session.get": ("sessions", Connection.session_get),
    "subscribe": ("sessions", Connection.subscribe),
    "unsubscribe": ("sessions", Connection.unsubscribe),
    "channel.list": ("channels", Connection.channel_list),
    "channel.status": ("channels", Connection.channel_status),
    "browser.screenshot": ("browser", Connection.browser_screenshot),
    "system.status": (None, Connection.system_status),
}
