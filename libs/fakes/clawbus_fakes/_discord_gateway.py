"""The fake Discord Gateway: the WebSocket handshake, HELLO, IDENTIFY/READY, RESUME.

`GET /gateway?v=10&encoding=json&compress=zlib-stream` upgrades; HELLO goes first, then the
client heartbeats (op 1, ACKed with op 11) and IDENTIFYs (op 2: READY, then GUILD_CREATE per
guild with the GUILDS intent) or RESUMEs (op 6: the missed dispatches, then RESUMED; or
INVALID_SESSION when the session is gone). Errors close the socket with Discord's codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Final

from aiohttp import WSMsgType, web

from clawbus_fakes._discord_session import Connection, Session, encoder_for, frame
from clawbus_fakes._discord_wire import (
    ALL_INTENTS,
    API_VERSIONS,
    GUILDS,
    HEARTBEAT,
    HEARTBEAT_ACK,
    HELLO,
    IDENTIFY,
    INVALID_SESSION,
    MAX_GATEWAY_SEND,
    PRESENCE_UPDATE,
    PRIVILEGED_INTENTS,
    REQUEST_GUILD_MEMBERS,
    REQUEST_SOUNDBOARD_SOUNDS,
    RESUME,
    VOICE_STATE_UPDATE,
    FakeBot,
    Payload,
    app_flags,
    member_payload,
    self_user_payload,
)
from clawbus_fakes._discord_world import World

_MAX_WS_FRAME: Final = 64 * 1024  # aiohttp's cap; Discord's 4096-byte rule is checked after
_TRACE: Final = ["clawbus-fake-discord"]
_AUTHENTICATED_OPS: Final = frozenset(
    {
        PRESENCE_UPDATE,
        VOICE_STATE_UPDATE,
        REQUEST_GUILD_MEMBERS,
        REQUEST_SOUNDBOARD_SOUNDS,
    }
)


class Gateway:
    def __init__(
        self,
        world: World,
        *,
        heartbeat_interval_ms: int,
        max_pending: int,
        replay: int,
        close_timeout: float,
    ) -> None:
        self.connections: set[Connection] = set()
        self.stopping = False  # refuse handshakes: a client told to go away comes straight back
        self._world = world
        self._heartbeat_ms = heartbeat_interval_ms
        self._max_pending = max_pending
        self._replay = replay
        self._close_timeout = close_timeout

    def connections_of(self, bot: FakeBot) -> list[Connection]:
        return [c for c in self.connections if c.session is not None and c.session.bot is bot]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.stopping:
            raise web.HTTPServiceUnavailable(text="the fake gateway is stopping")
        encoder = encoder_for(request.query.get("compress"))
        if request.query.get("encoding", "json") != "json" or encoder is None:
            raise web.HTTPBadRequest(
                text="the fake gateway speaks encoding=json, with compress=zlib-stream, "
                "zstd-stream (if zstandard is installed) or no compress"
            )
        ws = web.WebSocketResponse(max_msg_size=_MAX_WS_FRAME, timeout=self._close_timeout)
        await ws.prepare(request)
        connection = Connection(ws, encoder, self._max_pending)
        self.connections.add(connection)
        writer = asyncio.create_task(connection.run_writer())
        if request.query.get("v") not in API_VERSIONS:
            connection.request_close(4012)
        else:
            hello = {"heartbeat_interval": self._heartbeat_ms, "_trace": _TRACE}
            connection.send_control(frame(HELLO, hello))
        try:
            await self._read(connection)
        finally:
            connection.detach()
            self.connections.discard(connection)
            self._world.notify()
            if connection.closing:  # the writer is closing the socket: let it finish
                await asyncio.wait({writer}, timeout=self._close_timeout + 1.0)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        return ws

    async def _read(self, connection: Connection) -> None:
        # A client silent (not even heartbeating) for two intervals is a zombie: close it.
        silence = 2 * self._heartbeat_ms / 1000
        while True:
            try:
                msg = await connection.ws.receive(timeout=silence)
            except TimeoutError:
                if connection.closing:
                    return
                connection.request_close(4009)
                continue
            if msg.type == WSMsgType.TEXT:
                if not connection.closing:
                    self._on_payload(connection, msg.data)
            elif msg.type == WSMsgType.BINARY:
                connection.request_close(4002)
            else:  # CLOSE, CLOSING, CLOSED or ERROR
                return

    def _on_payload(self, connection: Connection, text: str) -> None:
        if len(text.encode()) > MAX_GATEWAY_SEND:
            connection.request_close(4002)
            return
        try:
            payload = json.loads(text)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            connection.request_close(4002)
            return
        op, data = payload.get("op"), payload.get("d")
        if op == HEARTBEAT:
            connection.send_control(frame(HEARTBEAT_ACK))
        elif op == IDENTIFY:
            self._identify(connection, data)
        elif op == RESUME:
            self._resume(connection, data)
        elif op not in _AUTHENTICATED_OPS:
            connection.request_close(4001)
        elif connection.session is None:
            connection.request_close(4003)
        elif op == REQUEST_GUILD_MEMBERS:
            self._members_chunk(connection.session, data)

    def _bot_of(self, connection: Connection, data: object) -> tuple[FakeBot, Payload] | None:
        """The bot an IDENTIFY/RESUME's token names, or None with the socket closing."""
        if connection.session is not None:
            connection.request_close(4005)
            return None
        if not isinstance(data, dict):
            connection.request_close(4002)
            return None
        token = data.get("token")
        bot = self._world.bots.get(token) if isinstance(token, str) else None
        if bot is None:
            connection.request_close(4004)
            return None
        return bot, data

    def _identify(self, connection: Connection, data: object) -> None:
        found = self._bot_of(connection, data)
        if found is None:
            return
        bot, identify = found
        intents = identify.get("intents")
        if type(intents) is not int or not 0 <= intents <= ALL_INTENTS:
            connection.request_close(4013)
            return
        if intents & PRIVILEGED_INTENTS & ~bot.privileged_intents:
            connection.request_close(4014)
            return
        shard = identify.get("shard", [0, 1])
        if not (
            isinstance(shard, list)
            and len(shard) == 2
            and all(type(n) is int for n in shard)
            and 0 <= shard[0] < shard[1]
        ):
            connection.request_close(4010)
            return
        session = Session(uuid.uuid4().hex, bot, intents, (shard[0], shard[1]), self._replay)
        self._world.add_session(session)
        bot.identifies += 1
        connection.attach(session, 0)
        guilds = [
            g
            for g in self._world.guilds.values()
            if bot.user.id in g.members and session.sees_guild(g.id)
        ]
        ready: Payload = {
            "v": 10,
            "user": self_user_payload(bot.user),
            "user_settings": {},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self._world.gateway_url,
            "application": {"id": str(bot.user.id), "flags": app_flags(bot.privileged_intents)},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["loopback"],
            "auth": {},
            "_trace": _TRACE,
        }
        if "shard" in identify:
            ready["shard"] = shard
        session.dispatch("READY", ready)
        if session.wants(GUILDS):
            for guild in guilds:
                session.dispatch("GUILD_CREATE", self._world.guild_create(guild, bot))
        self._world.notify()

    def _resume(self, connection: Connection, data: object) -> None:
        found = self._bot_of(connection, data)
        if found is None:
            return
        bot, resume = found
        session = self._world.sessions.get(str(resume.get("session_id")))
        seq = resume.get("seq") or 0
        if session is None or session.bot is not bot or session.invalid or type(seq) is not int:
            connection.send_control(frame(INVALID_SESSION, False))
            return
        if seq > session.seq:
            connection.request_close(4007)
            return
        if not session.can_replay_from(seq):  # too much was missed: start over
            session.invalid = True
            connection.send_control(frame(INVALID_SESSION, False))
            return
        previous = session.connection
        if previous is not None:  # a client resuming elsewhere leaves the old socket behind
            previous.detach()
            previous.request_close(4000)
        connection.attach(session, seq)
        bot.resumes += 1
        session.dispatch("RESUMED", {"_trace": _TRACE})
        self._world.notify()

    def _members_chunk(self, session: Session, data: object) -> None:
        """GUILD_MEMBERS_CHUNK for op 8, in one chunk (discord.py chunks guilds with the
        GUILD_MEMBERS intent before on_ready, and waits for this)."""
        if not isinstance(data, dict) or not str(data.get("guild_id")).isdigit():
            return
        guild = self._world.guilds.get(int(data["guild_id"]))
        if guild is None or session.bot.user.id not in guild.members:
            return
        query = str(data.get("query") or "").lower()
        requested = data.get("user_ids") or []
        user_ids = {int(i) for i in requested if str(i).isdigit()}
        users = self._world.users
        members = [
            member_payload(users[user_id], joined)
            for user_id, joined in guild.members.items()
            if (not user_ids or user_id in user_ids)
            and users[user_id].username.lower().startswith(query)
        ]
        limit = data.get("limit")
        if type(limit) is int and limit > 0:
            members = members[:limit]
        chunk: Payload = {
            "guild_id": str(guild.id),
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [str(i) for i in user_ids - set(guild.members)],
        }
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        session.dispatch("GUILD_MEMBERS_CHUNK", chunk)
