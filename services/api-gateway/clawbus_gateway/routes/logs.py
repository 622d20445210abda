"""003's logs: GET /api/logs/recent and the WebSocket GET /api/logs/live.

Both read the recent-logs stream in Redis (`names.logs_stream_key`), where every service
replica's RedisLogSink writes its INFO-and-above records, redacted (clawbus_core.logs): the
entries are those records (clawbus_protocol.logs.LogEntry), not lines of one gateway's file.

Logs span every tenant and carry operational detail (session keys, errors, hosts), so both
routes need the `admin` permission (the gateway token has it).

/api/logs/live sends `{"ok": true, "type": "log_entry", "entry": {...}}` for each entry added
after the upgrade. It sends only: whatever the client sends is read and ignored (frames over
gateway_ws_max_frame_bytes close it, 1009); a client that stops answering pings
(gateway_ws_heartbeat_s) is closed; there is no idle timeout, since a quiet log is not an idle
client. Each tail holds one Redis connection, blocked at most BLOCK_MS at a time, so a
process serves at most MAX_TAILS at once. If the stream breaks after the upgrade the client
gets `{"ok": false, "error": ...}` and the socket closes (1011). Shutdown closes every tail
(1001) through the broadcaster's client registry.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import cast

import redis.asyncio as aioredis
from aiohttp import WSCloseCode, web
from clawbus_protocol.errors import InvalidRequest, ServiceUnavailable
from clawbus_protocol.logs import LogEntry, LogEntryFrame, LogErrorFrame, LogList
from clawbus_protocol.ws import SessionEvent
from pydantic import ValidationError
from redis.exceptions import RedisError

from clawbus_gateway.broadcast import BROADCASTER, Listener
from clawbus_gateway.keys import RUNS, SETTINGS
from clawbus_gateway.observe import connection
from clawbus_gateway.principal import require_operator
from clawbus_gateway.routes.ws import check_origin
from clawbus_gateway.turns import int_query

routes = web.RouteTableDef()

DEFAULT_LIMIT = 10
MAX_LIMIT = 200
# One XREAD waits at most this long, then the tail checks its socket and asks again.
BLOCK_MS = 5_000
BATCH = 100
MAX_TAILS = 32
_RETRY_MS = 1_000

# What redis-py answers for the stream (the gateway's client does not decode).
Entries = list[tuple[bytes, dict[bytes, bytes]]]


def _stream(request: web.Request) -> tuple[aioredis.Redis, str]:
    runs = request.app[RUNS]
    return runs.relay.redis, runs.names.logs_stream_key


def _entry(entry_id: bytes, fields: dict[bytes, bytes]) -> LogEntry:
    raw = fields.get(b"entry", b"")
    try:
        return LogEntry.model_validate_json(raw)
    except ValidationError:
        # Not a sink's entry (someone else wrote it): shown as text, as 003 wraps plain lines.
        millis = int(entry_id.split(b"-")[0])
        at = datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="milliseconds")
        return LogEntry(time=at[:-6] + "Z", level="INFO", msg=raw.decode(errors="replace"))


def _unavailable(exc: RedisError) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"the log stream is unavailable ({type(exc).__name__}); retry shortly",
        retry_after_ms=_RETRY_MS,
    )


@routes.get("/api/logs/recent")
async def recent(request: web.Request) -> web.Response:
    require_operator(request, "admin")
    limit = int_query(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    redis, key = _stream(request)
    try:
        found = cast("Entries", await redis.xrevrange(key, count=limit))
    except RedisError as exc:
        raise _unavailable(exc) from exc
    body = LogList(logs=[_entry(entry_id, fields) for entry_id, fields in reversed(found)])
    return web.json_response(text=body.model_dump_json(exclude_none=True))


class _Tails:
    """How many live tails this process serves (each holds a Redis connection)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        if self.open >= self.limit:
            raise ServiceUnavailable(
                f"this gateway already serves {self.limit} live log tails; retry later",
                retry_after_ms=_RETRY_MS,
            )
        self.open += 1
        try:
            yield
        finally:
            self.open -= 1


_TAILS = _Tails(MAX_TAILS)


def _ignore(_: SessionEvent) -> None:
    """A log tail subscribes to no session events."""


@routes.get("/api/logs/live")
async def live(request: web.Request) -> web.StreamResponse:
    who = require_operator(request, "admin")
    settings = request.app[SETTINGS]
    ws = web.WebSocketResponse(
        max_msg_size=settings.gateway_ws_max_frame_bytes,
        heartbeat=settings.gateway_ws_heartbeat_s,
    )
    if not ws.can_prepare(request).ok:
        raise InvalidRequest(
            "/api/logs/live is a WebSocket: connect with `Upgrade: websocket` "
            "(GET /api/logs/recent reads the latest entries)"
        )
    check_origin(request, settings.gateway_allowed_origins)
    redis, key = _stream(request)
    with _TAILS.slot():
        try:
            # Before the upgrade: every entry added once the client is connected is sent.
            latest = cast("Entries", await redis.xrevrange(key, count=1))
        except RedisError as exc:
            raise _unavailable(exc) from exc
        start = latest[0][0] if latest else b"0-0"
        await ws.prepare(request)

        async def close(code: WSCloseCode, reason: str) -> None:
            await ws.close(code=code, message=reason.encode())

        listener = Listener(tenant_id=who.tenant_id, deliver=_ignore, close=close)
        with connection("ws"), request.app[BROADCASTER].register(listener):
            tail = asyncio.create_task(_tail(ws, redis, key, start), name="logs-live-tail")
            try:
                async for _ in ws:  # nothing to read: until the client (or the tail) closes
                    pass
            finally:
                tail.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await tail
                await ws.close()
    return ws


async def _tail(ws: web.WebSocketResponse, redis: aioredis.Redis, key: str, after: bytes) -> None:
    try:
        while not ws.closed:
            found = cast(
                "list[tuple[bytes, Entries]]",
                await redis.xread({key: after}, count=BATCH, block=BLOCK_MS),
            )
            for _, entries in found:
                for entry_id, fields in entries:
                    after = entry_id
                    frame = LogEntryFrame(entry=_entry(entry_id, fields))
                    await ws.send_str(frame.model_dump_json(exclude_none=True))
    except ConnectionResetError:  # the client left; the handler sees the socket close
        return
    except RedisError as exc:
        error = LogErrorFrame(error=_unavailable(exc).info.message)
        with contextlib.suppress(ConnectionResetError):
            await ws.send_str(error.model_dump_json())
        await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"log stream unavailable")
