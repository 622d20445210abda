"""Scripted fake Discord: REST API v10 and the Gateway WebSocket, on loopback, for discord.py.

    async with FakeDiscord() as fake:
        bot = fake.add_bot("token-1", username="clawbot")
        alice = fake.add_user(username="alice")
        guild = fake.add_guild(bot, name="lab", channels=["general"])
        thread = fake.add_thread(guild, guild.channel("general"), "help")
        with pointed_at(fake):  # discord.py's REST base and first gateway, for the block
            client = discord.Client(intents=intents)
            ...  # client.start("token-1") in a task; wait for on_ready
            await fake.dm(bot, alice, "hi", attachments=[FileData("a.txt", b"...")])
            await fake.guild_message(bot, guild, "general", alice, "hello", mention_bot=True)
            [reply] = await fake.wait_sent(bot, 1)

discord.py has no per-client base URL: `Route.BASE` and `DiscordWebSocket.DEFAULT_GATEWAY` are
class attributes, which `pointed_at` sets and restores. The gateway speaks `encoding=json` with
`compress=zlib-stream` (discord.py's default), `zstd-stream` (what discord.py asks for when the
`zstandard` module is installed; served when it is importable here too) or no compression.

What it models: bots (tokens) with their users and allowed privileged intents, people, guilds
with text channels, threads and members, DM channels. A message is dispatched as
MESSAGE_CREATE to every connected bot that can see its channel, a bot's own messages included,
as Discord does; without the MESSAGE_CONTENT intent a guild message that does not mention the
bot arrives with empty content, embeds and attachments. Sessions resume (missed dispatches are
replayed) until invalidated. REST errors carry Discord's codes and bodies (50035 with `errors`,
50006, 10003, 401, 429 with `retry_after` and the X-RateLimit headers).

Bounds: REST bodies (`max_body`), client gateway payloads (4096 bytes, as Discord), dispatches
not yet written to a connection (`max_pending`: past it the connection is closed with 4000 and
the client resumes), the per-session replay buffer (`replay`), stored messages and their files
(`max_messages`) and the recorded REST calls.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence

from aiohttp import web

from clawbus_fakes._discord_gateway import Gateway
from clawbus_fakes._discord_rest import Handler, RateLimit, RestApi
from clawbus_fakes._discord_session import frame
from clawbus_fakes._discord_wire import (
    GUILD_MEMBERS,
    GUILD_MESSAGES,
    GUILD_TEXT,
    GUILDS,
    MESSAGE_CONTENT,
    PRIVATE_THREAD,
    PRIVILEGED_INTENTS,
    PUBLIC_THREAD,
    RECONNECT,
    FakeBot,
    FakeChannel,
    FakeGuild,
    FakeUser,
    FileData,
    Payload,
    RestCall,
    SentMessage,
    channel_payload,
    mentioned_ids,
    timestamp,
)
from clawbus_fakes._discord_world import BotRef, StoredMessage, World
from clawbus_fakes._serve import Served, http_url, serve

__all__ = [
    "GUILDS",
    "GUILD_MEMBERS",
    "GUILD_MESSAGES",
    "MESSAGE_CONTENT",
    "PRIVILEGED_INTENTS",
    "BotRef",
    "FakeBot",
    "FakeChannel",
    "FakeDiscord",
    "FakeGuild",
    "FakeUser",
    "FileData",
    "RestCall",
    "SentMessage",
    "pointed_at",
]


class FakeDiscord(Served):
    """Async context manager serving Discord's REST API and Gateway on `host` (free port if 0).

    Scripting methods take a bot as its `FakeBot` or its token. Users' messages return the
    message as REST shapes it (a dict with "id"), to reply to or edit later.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        heartbeat_interval_ms: int = 41_250,
        max_pending: int = 1_000,
        replay: int = 2_000,
        max_body: int = 25 * 1024 * 1024,
        max_messages: int = 10_000,
        close_timeout: float = 2.0,
    ) -> None:
        if not 1 <= max_pending <= replay:
            raise ValueError("need 1 <= max_pending <= replay")
        self.host = host
        self.port = port
        self._close_timeout = close_timeout
        self._max_body = max_body
        self._world = World(max_messages=max_messages)
        self._rest = RestApi(self._world, max_body=max_body)
        self._gateway = Gateway(
            self._world,
            heartbeat_interval_ms=heartbeat_interval_ms,
            max_pending=max_pending,
            replay=replay,
            close_timeout=close_timeout,
        )
        self._runner: web.AppRunner | None = None

    # -- addresses

    @property
    def url(self) -> str:
        """http://host:port; attachments' URLs are under it."""
        if self._runner is None:
            raise RuntimeError("FakeDiscord is not started")
        return self._world.url

    @property
    def api_base(self) -> str:
        """What discord.py's `Route.BASE` must be to reach this fake."""
        return f"{self.url}/api/v10"

    @property
    def gateway_url(self) -> str:
        """The gateway, as `GET /gateway/bot` and READY's `resume_gateway_url` give it."""
        return "ws" + self.url.removeprefix("http") + "/gateway"

    # -- lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            return
        self._gateway.stopping = False
        rest = self._rest

        @web.middleware  # a bound method cannot carry the new-style middleware mark
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await rest.middleware(request, handler)

        app = web.Application(client_max_size=self._max_body, middlewares=[middleware])
        rest.add_routes(app)
        app.router.add_get("/gateway", self._gateway.handle)
        self._runner, self.port = await serve(app, self.host, self.port)
        self._world.url = http_url(self.host, self.port)

    async def stop(self) -> None:
        """Refuse new gateway handshakes, close every connection (1001: a client still running
        will try to resume, and fail), wait a bounded while for their handlers, stop serving."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._gateway.stopping = True
        for connection in list(self._gateway.connections):
            connection.request_close(1001, "Going away")
        with contextlib.suppress(TimeoutError):
            await self._world.wait(
                lambda: not self._gateway.connections, self._close_timeout + 1.0, "close"
            )
        await runner.cleanup()

    # -- scripting: the world

    def add_user(
        self,
        user_id: int | None = None,
        username: str = "user",
        *,
        global_name: str | None = None,
        bot: bool = False,
    ) -> FakeUser:
        user = FakeUser(user_id or self._world.ids.next(), username, global_name, bot)
        if user.id in self._world.users:
            raise ValueError(f"user {user.id} exists")
        self._world.users[user.id] = user
        return user

    def add_bot(
        self,
        token: str,
        user_id: int | None = None,
        username: str = "clawbot",
        *,
        privileged_intents: int = PRIVILEGED_INTENTS,
    ) -> FakeBot:
        """A bot application with token `token`. It may IDENTIFY with the privileged intents
        in `privileged_intents`; asking for others closes the gateway with 4014."""
        if not token or token in self._world.bots:
            raise ValueError("a bot token must be non-empty and unique")
        bot = FakeBot(token, self.add_user(user_id, username, bot=True), privileged_intents)
        self._world.bots[token] = bot
        return bot

    def add_guild(
        self,
        bot: BotRef,
        guild_id: int | None = None,
        name: str = "guild",
        channels: Iterable[str] = ("general",),
        *,
        members: Iterable[FakeUser] = (),
    ) -> FakeGuild:
        """A guild owned by a new user, with `bot` and `members` in it and a text channel per
        name in `channels`. A bot already connected gets its GUILD_CREATE."""
        joining = self._world.bot(bot)
        owner = self.add_user(username=f"{name}-owner")
        guild = FakeGuild(guild_id or self._world.ids.next(), name, owner.id)
        if guild.id in self._world.guilds:
            raise ValueError(f"guild {guild.id} exists")
        self._world.guilds[guild.id] = guild
        for user in (owner, *members):
            guild.members[user.id] = timestamp()
        for channel_name in channels:
            self.add_channel(guild, channel_name)
        self._world.join(guild, joining)
        return guild

    def join_guild(self, guild: FakeGuild, member: FakeUser | FakeBot) -> None:
        """Add a member: a bot gets GUILD_CREATE, bots with GUILD_MEMBERS GUILD_MEMBER_ADD."""
        self._world.join(guild, member)

    def add_channel(
        self, guild: FakeGuild, name: str, *, type: int = GUILD_TEXT, topic: str | None = None
    ) -> FakeChannel:
        """A guild channel (text unless `type` says); connected bots get CHANNEL_CREATE."""
        position = sum(1 for c in guild.channels if not c.is_thread)
        channel = FakeChannel(
            self._world.ids.next(), type, name, guild.id, position=position, topic=topic
        )
        channel.created_at = timestamp(channel.id)
        self._world.add_guild_channel(guild, channel, "CHANNEL_CREATE", channel_payload(channel))
        return channel

    def add_thread(
        self,
        guild: FakeGuild,
        parent: FakeChannel,
        name: str,
        *,
        owner: FakeUser | None = None,
        private: bool = False,
    ) -> FakeChannel:
        """An active thread under `parent`; connected bots get THREAD_CREATE."""
        if parent.guild_id != guild.id or parent.is_thread:
            raise ValueError("a thread's parent is a channel of the same guild")
        thread = FakeChannel(
            self._world.ids.next(),
            PRIVATE_THREAD if private else PUBLIC_THREAD,
            name,
            guild.id,
            parent_id=parent.id,
            owner_id=owner.id if owner else guild.owner_id,
        )
        thread.created_at = timestamp(thread.id)
        event = {**channel_payload(thread), "newly_created": True}
        self._world.add_guild_channel(guild, thread, "THREAD_CREATE", event)
        return thread

    # -- scripting: people talk

    async def dm(
        self,
        bot: BotRef,
        user: FakeUser,
        content: str = "",
        *,
        attachments: Sequence[FileData] = (),
    ) -> Payload:
        """`user` sends `bot` a direct message."""
        world = self._world
        channel = world.dm_channel(world.bot(bot).user, user)
        mentions = world.known_mentions(content)
        stored = world.create_message(
            user, channel, content, files=attachments, mention_ids=mentions
        )
        return dict(stored.payload)

    async def guild_message(
        self,
        bot: BotRef,
        guild: FakeGuild,
        channel: FakeChannel | str,
        user: FakeUser,
        content: str = "",
        *,
        mention_bot: bool = False,
        attachments: Sequence[FileData] = (),
        reply_to: Payload | int | None = None,
    ) -> Payload:
        """`user` posts in a guild channel or thread (joining the guild if need be).
        `mention_bot` puts `<@bot>` in front unless the content mentions it already;
        `reply_to` (a message or its id) makes it a reply that pings the replied-to author."""
        world = self._world
        target = guild.channel(channel) if isinstance(channel, str) else channel
        if target.guild_id != guild.id:
            raise ValueError(f"channel {target.id} is not in guild {guild.id}")
        world.join(guild, user)  # no-op for a member
        mentioned = world.bot(bot).user
        if mention_bot and mentioned.id not in mentioned_ids(content):
            content = f"{mentioned.mention} {content}" if content else mentioned.mention
        mention_ids = world.known_mentions(content)
        reference, referenced = None, None
        if reply_to is not None:
            replied = self._stored(reply_to)
            if replied.channel is not target:
                raise ValueError(f"reply_to: message {replied.id} is not in that channel")
            reference, referenced = world.reference(target, {"message_id": replied.id})
            if replied.author.id not in mention_ids:
                mention_ids.append(replied.author.id)
        stored = world.create_message(
            user,
            target,
            content,
            files=attachments,
            mention_ids=mention_ids,
            reference=reference,
            referenced=referenced,
        )
        return dict(stored.payload)

    async def thread_message(
        self,
        bot: BotRef,
        guild: FakeGuild,
        thread: FakeChannel,
        user: FakeUser,
        content: str = "",
        *,
        mention_bot: bool = False,
        attachments: Sequence[FileData] = (),
        reply_to: Payload | int | None = None,
    ) -> Payload:
        """`guild_message` in a thread."""
        if not thread.is_thread:
            raise ValueError(f"channel {thread.id} is not a thread")
        return await self.guild_message(
            bot,
            guild,
            thread,
            user,
            content,
            mention_bot=mention_bot,
            attachments=attachments,
            reply_to=reply_to,
        )

    async def edit_message(self, message: Payload | int, content: str) -> Payload:
        """Its author edits a message: MESSAGE_UPDATE with the whole message, as Discord."""
        stored = self._stored(message)
        self._world.update_message(stored, content=content)
        return dict(stored.payload)

    # -- scripting: the service misbehaves

    def rate_limit(
        self,
        bot: BotRef,
        calls: int = 1,
        retry_after: float = 0.1,
        *,
        route: str | None = None,
        global_: bool = False,
    ) -> None:
        """Answer the bot's next `calls` REST calls (to `route` only if given, e.g.
        "POST /channels/{channel_id}/messages") with 429 and `retry_after` seconds."""
        if calls < 1 or retry_after < 0:
            raise ValueError("rate_limit needs calls >= 1 and retry_after >= 0")
        plans = self._rest.rate_limits.setdefault(self._world.bot(bot).token, [])
        plans.append(RateLimit(calls, retry_after, route, global_))

    async def drop_connection(
        self, bot: BotRef, *, code: int = 4000, invalidate: bool = False
    ) -> int:
        """Close the bot's live gateway connections with `code` (4000 lets the client resume);
        `invalidate` ends their sessions too, so a RESUME gets INVALID_SESSION and the client
        IDENTIFYs anew. Returns how many were closed, once their handlers are done."""
        dropped = self._gateway.connections_of(self._world.bot(bot))
        for connection in dropped:
            if invalidate and connection.session is not None:
                connection.session.invalid = True
            connection.request_close(code)
        await self._world.wait(
            lambda: not any(c in self._gateway.connections for c in dropped),
            self._close_timeout + 1.0,
            "close of the dropped connections",
        )
        return len(dropped)

    def reconnect(self, bot: BotRef) -> None:
        """Send op 7 RECONNECT on the bot's live connections (the client resumes)."""
        for connection in self._gateway.connections_of(self._world.bot(bot)):
            connection.send_control(frame(RECONNECT))

    # -- what happened

    @property
    def requests(self) -> list[RestCall]:
        """REST calls as answered, oldest first (the last 10 000)."""
        return list(self._rest.calls)

    def sent(self, bot: BotRef, channel_id: int | None = None) -> list[SentMessage]:
        """Messages the bot posted (in `channel_id` only, if given), in order."""
        token = self._world.bot(bot).token
        return [
            m
            for t, m in self._rest.sent
            if t == token and (channel_id is None or m.channel_id == channel_id)
        ]

    def edits(self, bot: BotRef) -> list[SentMessage]:
        """The bot's message edits (PATCH), in order; `body` is what it sent."""
        token = self._world.bot(bot).token
        return [m for t, m in self._rest.edits if t == token]

    def typing(self, bot: BotRef) -> list[int]:
        """Channel ids of the bot's typing indicators (POST .../typing), in order."""
        token = self._world.bot(bot).token
        return [channel_id for t, channel_id in self._rest.typing if t == token]

    def connections(self, bot: BotRef) -> int:
        """The bot's live, authenticated gateway connections."""
        return sum(1 for c in self._gateway.connections_of(self._world.bot(bot)) if not c.closing)

    async def wait_sent(
        self, bot: BotRef, n: int, timeout_s: float = 10.0, *, channel_id: int | None = None
    ) -> list[SentMessage]:
        """Wait until the bot has posted at least `n` messages; returns them all."""
        await self._world.wait(
            lambda: len(self.sent(bot, channel_id)) >= n, timeout_s, f"{n} sent message(s)"
        )
        return self.sent(bot, channel_id)

    async def wait_connections(self, bot: BotRef, n: int, timeout_s: float = 10.0) -> None:
        """Wait until the bot has exactly `n` live gateway connections."""
        await self._world.wait(
            lambda: self.connections(bot) == n, timeout_s, f"{n} live connection(s)"
        )

    def _stored(self, message: Payload | int) -> StoredMessage:
        message_id = message if isinstance(message, int) else int(message["id"])
        stored = self._world.message(message_id)
        if stored is None:
            raise KeyError(f"no message {message_id} (never posted, deleted or evicted)")
        return stored


@contextlib.contextmanager
def pointed_at(fake: FakeDiscord) -> Iterator[None]:
    """Point discord.py at `fake` for the block: its REST base (`Route.BASE`) and the gateway
    `Client.connect` starts from (`DiscordWebSocket.DEFAULT_GATEWAY`). Both are class
    attributes, so this holds for every client in the process; they are restored after."""
    import yarl
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    saved = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    Route.BASE = fake.api_base
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    try:
        yield
    finally:
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved
