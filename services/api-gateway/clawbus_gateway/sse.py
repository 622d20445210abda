"""Server-sent event streams of runs, resumable after a dropped connection.

Every event written carries `id: <seq>`: the sequence number of the run event that produced
it (several frames may share one). A client cut off mid-run sends the same request to the
same endpoint again with `Last-Event-ID: <the last id it got>` and the run's id, in the
`x-clawbus-run-id` header (the first answer carried it) or as `?runId=`. It gets the rest of
the run, nothing missing and nothing twice, then the usual end of the stream.

The resumed request starts no run. It watches the named run from its first event (the run's
Redis stream keeps them for an hour), renders every event just as the first request did, and
drops the frames the client already has: whatever a surface numbers or accumulates (OpenAI
response sequence numbers, the full text in `response.output_text.done`) comes out the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from aiohttp import web
from clawbus_core.events import read_run_events
from clawbus_core.runservice import RunService, Submitted, Turn
from clawbus_protocol.errors import ClawbusError, ErrorInfo, InvalidRequest, NotFound
from clawbus_protocol.runs import ErrorEvent, RunEvent

from clawbus_gateway.observe import connection
from clawbus_gateway.turns import RUN_ID_HEADER, find_run

LAST_EVENT_ID = "Last-Event-ID"
RUN_ID_QUERY = "runId"

# A resumed stream may be following a run another gateway replica started, whose live events
# go to that replica: it reads the run's stream this often while no event arrives.
_RESUME_POLL_S = 0.25

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


@dataclass(frozen=True)
class ResumePoint:
    run_id: UUID
    after_seq: int  # the client has every frame up to and including this id


def resume_point(request: web.Request) -> ResumePoint | None:
    """Where a reconnecting client left off; None for a new stream."""
    last = request.headers.get(LAST_EVENT_ID)
    if last is None:
        return None
    raw_run = request.headers.get(RUN_ID_HEADER) or request.query.get(RUN_ID_QUERY)
    if raw_run is None:
        raise InvalidRequest(
            f"{LAST_EVENT_ID} resumes a run: name it with the {RUN_ID_HEADER} header "
            f"or ?{RUN_ID_QUERY}=",
            param=RUN_ID_HEADER,
        )
    try:
        run_id = UUID(raw_run)
    except ValueError:
        raise InvalidRequest("the run id must be a UUID", param=RUN_ID_HEADER) from None
    last = last.strip()
    if not last.isascii() or not last.isdigit():
        raise InvalidRequest(
            f"{LAST_EVENT_ID} must be an event id this endpoint sent (a number)",
            param=LAST_EVENT_ID,
        )
    return ResumePoint(run_id, int(last))


@asynccontextmanager
async def submit_or_resume(
    request: web.Request, runs: RunService, turn: Turn
) -> AsyncIterator[tuple[Submitted, int]]:
    """The run `turn` starts, or the one the request resumes; with the id after which the
    client is missing frames (0 for a new stream)."""
    point = resume_point(request)
    if point is None:
        async with runs.submit(turn) as sub:
            yield sub, 0
        return
    run = await find_run(runs.pool, turn.tenant_id, point.run_id, param=RUN_ID_HEADER)
    with runs.relay.watch(run.run_id, idle_fill_s=_RESUME_POLL_S) as watch:
        stored = await read_run_events(runs.relay.redis, runs.names, run.run_id)
        ended = run.status not in ("queued", "running")
        if (stored and stored[0].seq > 1) or (not stored and ended):
            raise NotFound(
                f"the events of run {run.run_id} are no longer kept", param=LAST_EVENT_ID
            )
        for event in stored:  # the watch orders them with live ones and drops repeats
            watch.push(event)
        yield Submitted(run.run_id, run.session_key, watch), point.after_seq


class EventStream:
    """One SSE answer. Frames are collected with `add` and written together by `flush`."""

    def __init__(
        self, request: web.Request, *, headers: Mapping[str, str], after_seq: int = 0
    ) -> None:
        self.request = request
        self.response = web.StreamResponse(headers={**SSE_HEADERS, **headers})
        self._after_seq = after_seq
        self._frames: list[bytes] = []

    def add(self, data: str, *, id: int, event: str | None = None, fresh: bool = False) -> None:
        """Queue a frame produced by run event `id`; dropped if the client has it already.
        A `fresh` frame (made by this request, e.g. a timeout error) is always sent."""
        if id <= self._after_seq and not fresh:
            return
        lines = [f"id: {id}"]
        if event is not None:
            lines.append(f"event: {event}")
        lines.extend(f"data: {line}" for line in data.split("\n"))
        self._frames.append(("\n".join(lines) + "\n\n").encode())

    async def start(self) -> None:
        await self.response.prepare(self.request)  # headers go with the first write

    async def flush(self) -> None:
        """Write the queued frames; raises ConnectionResetError if the client left."""
        if self._frames:
            frames, self._frames = b"".join(self._frames), []
            await self.response.write(frames)

    async def close(self) -> None:
        try:
            await self.flush()
            await self.response.write_eof()
        except ConnectionResetError:
            pass


class Renderer(Protocol):
    """A surface's frames for a run's events."""

    def event(self, out: EventStream, event: RunEvent) -> bool:
        """Add the frames for `event`; True when the stream is over."""

    def failure(self, out: EventStream, error: ErrorInfo, seq: int) -> None:
        """Add the frames for an error this request hit after `seq` (e.g. the run outlived
        the request timeout); add them `fresh`."""

    def end(self, out: EventStream, seq: int) -> None:
        """Add the frames that close the stream (after the terminal event or a failure)."""


async def first_event(events: AsyncIterator[RunEvent]) -> RunEvent:
    """The run's first event. A run that fails at once (upstream 429, unknown model) raises
    here, so the client gets a real HTTP status instead of an error inside a 200 stream."""
    first = await anext(events)
    if isinstance(first, ErrorEvent):
        raise ClawbusError.from_info(first.error)
    return first


async def stream_run(
    request: web.Request,
    events: AsyncIterator[RunEvent],
    renderer: Renderer,
    *,
    headers: Mapping[str, str],
    after_seq: int = 0,
) -> web.StreamResponse:
    """Answer with the run's events as SSE, each event's frames in one write."""
    event: RunEvent | None = await first_event(events)
    out = EventStream(request, headers=headers, after_seq=after_seq)
    with connection("sse"):
        await out.start()
        seq = after_seq
        try:
            while event is not None:
                seq = event.seq
                if renderer.event(out, event):
                    break
                await out.flush()
                event = await anext(events, None)
        except ClawbusError as exc:
            renderer.failure(out, exc.info, seq)
        except ConnectionResetError:
            return out.response  # the client left; the run still completes and is stored
        renderer.end(out, seq)
        await out.close()
    return out.response
