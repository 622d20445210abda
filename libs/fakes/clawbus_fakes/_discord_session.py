"""The fake Discord Gateway's sessions and connections, and the payload compressions.

A session (one IDENTIFY) numbers its dispatches and keeps the last `replay` of them, so a client
that RESUMEs gets what it missed. A connection is one WebSocket: at most one per session at a
time. Its writer task is the only thing that writes to or closes the socket, so frames leave in
sequence order through one compression stream; everything else only queues and wakes it.
"""

from __future__ import annotations

import asyncio
import importlib
import zlib
from collections import deque
from typing import Any, Final, Protocol

from aiohttp import web

from clawbus_fakes._discord_wire import (
    CLOSE_REASONS,
    DIRECT_MESSAGES,
    DISPATCH,
    GUILD_MESSAGES,
    FakeBot,
    Payload,
)
from clawbus_fakes._wire import encode_json

# Heartbeat ACKs and the like waiting for the writer; a client flooding more is closed.
_MAX_CONTROL: Final = 64
_ZLIB_SUFFIX: Final = b"\x00\x00\xff\xff"

try:  # discord.py asks for zstd-stream whenever a zstd module is importable beside it
    _zstd: Any = importlib.import_module("zstandard")
except ImportError:
    _zstd = None


class Encoder(Protocol):
    def encode(self, text: str) -> str | bytes: ...


class _Plain:
    def encode(self, text: str) -> str:
        return text


class _ZlibStream:
    """`compress=zlib-stream`: one deflate stream per connection, each payload sync-flushed
    (so it ends in 00 00 ff ff, which is how discord.py finds a payload's end)."""

    def __init__(self) -> None:
        self._deflate = zlib.compressobj()

    def encode(self, text: str) -> bytes:
        data = self._deflate.compress(text.encode()) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(_ZLIB_SUFFIX)
        return data


class _ZstdStream:
    """`compress=zstd-stream`: one zstd stream per connection, a block flushed per payload."""

    def __init__(self) -> None:
        self._stream = _zstd.ZstdCompressor().compressobj()

    def encode(self, text: str) -> bytes:
        chunk: bytes = self._stream.compress(text.encode())
        flushed: bytes = self._stream.flush(_zstd.COMPRESSOBJ_FLUSH_BLOCK)
        return chunk + flushed


def encoder_for(compress: str | None) -> Encoder | None:
    """The encoder for a `compress` query value; None if the fake cannot speak it."""
    if compress is None:
        return _Plain()
    if compress == "zlib-stream":
        return _ZlibStream()
    if compress == "zstd-stream" and _zstd is not None:
        return _ZstdStream()
    return None


def frame(op: int, d: Any = None) -> str:
    return encode_json({"op": op, "d": d, "s": None, "t": None})


class Session:
    """One IDENTIFY's session: sequence numbers, the replay buffer and the live connection."""

    def __init__(
        self,
        session_id: str,
        bot: FakeBot,
        intents: int,
        shard: tuple[int, int],
        replay: int,
    ) -> None:
        self.id = session_id
        self.bot = bot
        self.intents = intents
        self.shard = shard
        self.seq = 0
        self.invalid = False
        self.connection: Connection | None = None
        self._frames: deque[tuple[int, str]] = deque(maxlen=replay)

    def dispatch(self, event: str, data: Payload) -> None:
        self.seq += 1
        text = encode_json({"op": DISPATCH, "t": event, "s": self.seq, "d": data})
        self._frames.append((self.seq, text))
        if self.connection is not None:
            self.connection.notify()

    def frame_after(self, seq: int) -> str | None:
        """The dispatch numbered seq + 1; None if it has left the replay buffer."""
        if not self._frames or seq + 1 < self._frames[0][0]:
            return None
        return self._frames[seq + 1 - self._frames[0][0]][1]

    def can_replay_from(self, seq: int) -> bool:
        return seq == self.seq or self.frame_after(seq) is not None

    def wants(self, intent: int) -> bool:
        return bool(self.intents & intent)

    def sees_guild(self, guild_id: int) -> bool:
        shard_id, shard_count = self.shard
        return (guild_id >> 22) % shard_count == shard_id

    def wants_messages(self, guild_id: int | None) -> bool:
        if guild_id is None:  # DMs go to shard 0
            return self.shard[0] == 0 and self.wants(DIRECT_MESSAGES)
        return self.sees_guild(guild_id) and self.wants(GUILD_MESSAGES)


class Connection:
    """One gateway WebSocket. `notify`, `send_control` and `request_close` never block."""

    def __init__(self, ws: web.WebSocketResponse, encoder: Encoder, max_pending: int) -> None:
        self.ws = ws
        self.session: Session | None = None
        self.closing = False
        self._encoder = encoder
        self._max_pending = max_pending
        self._cursor = 0  # last sequence number written
        self._attached_at = 0  # session.seq when attached: a resume's backlog is not lag
        self._control: deque[str] = deque()
        self._close: tuple[int, str] | None = None
        self._wake = asyncio.Event()

    def attach(self, session: Session, cursor: int) -> None:
        self.session, self._cursor, self._attached_at = session, cursor, session.seq
        session.connection = self
        self._wake.set()

    def detach(self) -> None:
        if self.session is not None and self.session.connection is self:
            self.session.connection = None

    def notify(self) -> None:
        """New dispatches are in the session; close (resumably) if the client lags too far."""
        session = self.session
        if session is not None and session.seq - max(self._cursor, self._attached_at) > (
            self._max_pending
        ):
            self.request_close(4000)
        self._wake.set()

    def send_control(self, text: str) -> None:
        if len(self._control) >= _MAX_CONTROL:
            self.request_close(4008, "Rate limited.")
            return
        self._control.append(text)
        self._wake.set()

    def request_close(self, code: int, reason: str | None = None) -> None:
        if self._close is None:
            self._close = (code, reason if reason is not None else CLOSE_REASONS.get(code, ""))
            self.closing = True
            self._wake.set()

    async def run_writer(self) -> None:
        """Write control frames and the session's dispatches in order until closed."""
        try:
            while True:
                if self._close is not None:
                    code, reason = self._close
                    await self.ws.close(code=code, message=reason.encode())
                    return
                text = self._next_frame()
                if text is None:
                    if self._close is None:  # state was just read: nothing is left to miss
                        self._wake.clear()
                        await self._wake.wait()
                    continue
                data = self._encoder.encode(text)
                if isinstance(data, bytes):
                    await self.ws.send_bytes(data)
                else:
                    await self.ws.send_str(data)
        except (ConnectionError, RuntimeError):
            return  # the socket is gone; the reader sees that too

    def _next_frame(self) -> str | None:
        if self._control:
            return self._control.popleft()
        session = self.session
        if session is None or self._cursor >= session.seq:
            return None
        text = session.frame_after(self._cursor)
        if text is None:  # the replay buffer moved past us: only a new session can follow
            self.request_close(4000)
            return None
        self._cursor += 1
        return text
