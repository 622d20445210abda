"""Run events over Redis: live on pub/sub, durable (for a while) in a capped per-run stream.

The runner writes each event with one atomic script that (1) refuses writes from an attempt
older than the run's fence, (2) appends to the run's stream and (3) publishes to the reply
channel of the gateway replica holding the client. Because append and publish happen in the
same step, a reader that sees a gap in sequence numbers can always fill it from the stream.

A redelivered run starts by raising the fence and reading what earlier attempts already
streamed, then continues the sequence; text the client has already seen is not sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import redis.asyncio as aioredis
from clawbus_protocol.errors import Timeout
from clawbus_protocol.names import Names
from clawbus_protocol.runs import DeltaEvent, RunEvent, is_terminal, parse_event
from redis.exceptions import ConnectionError as RedisConnectionError

log = logging.getLogger(__name__)

Redis = aioredis.Redis

STREAM_MAXLEN = 10_000
STREAM_TTL_S = 3600

_FENCE_AND_READ = """
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
local attempt = tonumber(ARGV[1])
if attempt < cur then return false end
redis.call('SET', KEYS[2], attempt, 'EX', ARGV[2])
return redis.call('XRANGE', KEYS[1], '-', '+')
"""

_EMIT = """
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) < cur then return 0 end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 'e', ARGV[2])
if ARGV[6] == '1' then redis.call('EXPIRE', KEYS[1], ARGV[5]) end
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[2]) end
return 1
"""


class Fenced(Exception):
    """A newer attempt of this run owns its events now; this attempt must stop."""


def _entries_to_events(entries: list[Any]) -> list[RunEvent]:
    # XRANGE gives {field: value}; the same entries returned by a script are flat lists.
    events = []
    for _id, fields in entries:
        payload = fields[b"e"] if isinstance(fields, dict) else fields[fields.index(b"e") + 1]
        events.append(parse_event(payload))
    return events


async def read_run_events(redis: Redis, names: Names, run_id: UUID) -> list[RunEvent]:
    entries = await redis.xrange(names.run_events_key(run_id))
    return _entries_to_events(entries or [])


@dataclass
class RunEventWriter:
    """The runner's side: emits one run attempt's events in sequence."""

    redis: Redis
    names: Names
    run_id: UUID
    attempt: int
    reply_to: str | None
    next_seq: int = 1
    # Text earlier attempts already streamed, not yet matched by this attempt's output.
    _unsent_prefix: str = ""
    _seen_prefix: str = ""
    _emitted: list[str] = field(default_factory=list)
    _first_write: bool = True
    _emit_script: Any = None
    # Deltas produced while a write is in flight go out together in the next write: no
    # added latency when idle, far fewer round trips when the model outpaces Redis.
    _pending: list[str] = field(default_factory=list)
    _flusher: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, redis: Redis, names: Names, run_id: UUID, attempt: int, reply_to: str | None
    ) -> RunEventWriter:
        emit_script = redis.register_script(_EMIT)
        if attempt == 1:
            # The first attempt has nothing before it to read, and its writes already lose
            # to any later attempt's fence: no round trip before the first token.
            return cls(redis, names, run_id, attempt, reply_to, _emit_script=emit_script)
        script = redis.register_script(_FENCE_AND_READ)
        keys = [names.run_events_key(run_id), names.run_fence_key(run_id)]
        entries = await script(keys=keys, args=[attempt, STREAM_TTL_S])
        if entries is None:
            raise Fenced(f"run {run_id}: attempt {attempt} is older than the fence")
        previous = _entries_to_events(entries)
        prior_text = "".join(e.text for e in previous if isinstance(e, DeltaEvent))
        next_seq = max((e.seq for e in previous), default=0) + 1
        return cls(
            redis=redis,
            names=names,
            run_id=run_id,
            attempt=attempt,
            reply_to=reply_to,
            next_seq=next_seq,
            _unsent_prefix=prior_text,
            _seen_prefix=prior_text,
            _emit_script=emit_script,
        )

    @property
    def visible_text(self) -> str:
        """The text a client has been shown: earlier attempts' deltas, then ours."""
        return self._seen_prefix + "".join(self._emitted)

    async def delta(self, text: str) -> None:
        if self._unsent_prefix:
            # Output an earlier attempt already streamed is not sent twice.
            k = min(len(self._unsent_prefix), len(text))
            self._unsent_prefix, text = self._unsent_prefix[k:], text[k:]
        if not text:
            return
        self._emitted.append(text)
        # An idle writer sends at once (time to first token is what users feel) without
        # holding up the model stream; deltas that arrive meanwhile go out together next.
        self._pending.append(text)
        if self._flusher is not None and self._flusher.done():
            flusher, self._flusher = self._flusher, None
            flusher.result()  # re-raises Fenced from the last write
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_pending())

    async def _flush_pending(self) -> None:
        while self._pending:
            text = "".join(self._pending)
            self._pending.clear()
            await self._write(DeltaEvent(run_id=self.run_id, seq=0, text=text))

    async def flush(self) -> None:
        """Wait until every delta is written (raises Fenced if a write was refused)."""
        if self._flusher is not None:
            flusher, self._flusher = self._flusher, None
            await flusher

    async def aclose(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Fenced):
                await self._flusher
            self._flusher = None

    async def emit(self, event: RunEvent) -> None:
        """Write `event` after all pending deltas, with the next sequence number."""
        await self.flush()
        await self._write(event)

    async def _write(self, event: RunEvent) -> None:
        event.seq = self.next_seq
        event.attempt = self.attempt
        refresh_ttl = self._first_write or is_terminal(event)
        written = await self._emit_script(
            keys=[self.names.run_events_key(self.run_id), self.names.run_fence_key(self.run_id)],
            args=[
                self.attempt,
                event.model_dump_json(),
                self.reply_to or "",
                STREAM_MAXLEN,
                STREAM_TTL_S,
                "1" if refresh_ttl else "0",
            ],
        )
        if not written:
            raise Fenced(f"run {self.run_id}: attempt {self.attempt} was superseded")
        self._first_write = False
        self.next_seq += 1


class RunWatch:
    """A gateway's view of one run: its events in order, each once, complete."""

    def __init__(self, relay: RunRelay, run_id: UUID, *, idle_fill_s: float) -> None:
        self._relay = relay
        self.run_id = run_id
        self._queue: asyncio.Queue[RunEvent] = asyncio.Queue(maxsize=4096)
        self._idle_fill_s = idle_fill_s
        self._observers: list[Callable[[RunEvent], Awaitable[None]]] = []

    def observe(self, observer: Callable[[RunEvent], Awaitable[None]]) -> None:
        """Call `observer` with each event, in order, as the reader receives it."""
        self._observers.append(observer)

    def push(self, event: RunEvent) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            # A reader this far behind refills from the stream when it sees the gap.
            self._queue.put_nowait(event)

    async def events(self, *, timeout_s: float) -> AsyncIterator[RunEvent]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        next_seq = 1
        pending: dict[int, RunEvent] = {}
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise Timeout(f"run {self.run_id} did not finish within {timeout_s:.0f}s")
            try:
                event = await asyncio.wait_for(
                    self._queue.get(), timeout=min(self._idle_fill_s, remaining)
                )
            except TimeoutError:
                await self._fill(pending, next_seq)
            else:
                if event.seq >= next_seq:
                    pending[event.seq] = event
                if pending and next_seq not in pending:
                    await self._fill(pending, next_seq)
            while next_seq in pending:
                event = pending.pop(next_seq)
                next_seq += 1
                for observer in self._observers:
                    await observer(event)
                yield event
                if is_terminal(event):
                    return

    async def _fill(self, pending: dict[int, RunEvent], next_seq: int) -> None:
        try:
            stored = await read_run_events(self._relay.redis, self._relay.names, self.run_id)
        except RedisConnectionError:
            log.warning("redis unavailable while reading run %s events", self.run_id)
            return
        for event in stored:
            if event.seq >= next_seq:
                pending.setdefault(event.seq, event)


class RunRelay:
    """One per gateway process: reads its reply channel and hands events to their watchers."""

    def __init__(self, redis: Redis, names: Names, instance_id: str) -> None:
        self.redis = redis
        self.names = names
        self.channel = names.gateway_channel(instance_id)
        self._watches: dict[UUID, list[RunWatch]] = {}
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="run-relay")
        await asyncio.wait_for(self._subscribed.wait(), timeout=10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.contextmanager
    def watch(self, run_id: UUID, *, idle_fill_s: float = 2.0) -> Iterator[RunWatch]:
        watch = RunWatch(self, run_id, idle_fill_s=idle_fill_s)
        self._watches.setdefault(run_id, []).append(watch)
        try:
            yield watch
        finally:
            watches = self._watches.get(run_id, [])
            watches.remove(watch)
            if not watches:
                del self._watches[run_id]

    @property
    def active(self) -> int:
        return len(self._watches)

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self._subscribed.set()
                backoff = 0.1
                async for message in pubsub.listen():
                    self._dispatch(message["data"])
            except (RedisConnectionError, OSError) as exc:
                # Watchers refill from the run streams; we only need to come back.
                log.warning("run relay lost redis (%s); resubscribing in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _dispatch(self, data: bytes) -> None:
        try:
            event = parse_event(data)
        except ValueError:
            log.exception("dropping a malformed run event on %s", self.channel)
            return
        for watch in self._watches.get(event.run_id, ()):
            watch.push(event)
