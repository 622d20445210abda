"""The fake Discord's state: who exists, who is where, what was said, and who gets told.

Both protocol fronts (REST and Gateway) and the scripting facade work on one `World`. A message
is stored REST-shaped and dispatched to every session of every bot that can see its channel,
shaped per session (guild context added, content withheld without MESSAGE_CONTENT).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from clawbus_fakes._discord_session import Session
from clawbus_fakes._discord_wire import (
    DEFAULT_MESSAGE,
    DM,
    GUILD_MEMBERS,
    GUILDS,
    MESSAGE_CONTENT,
    REPLY_MESSAGE,
    DiscordError,
    FakeBot,
    FakeChannel,
    FakeGuild,
    FakeUser,
    FileData,
    Payload,
    Snowflakes,
    attachment_payload,
    form_error,
    guild_create_payload,
    member_payload,
    mentioned_ids,
    snowflake,
    timestamp,
    typed,
    user_payload,
)

BotRef = FakeBot | str  # a bot or its token

_MAX_SESSIONS_PER_BOT: Final = 8
_NOT_A_DICT: Final = "Only dictionaries may be used in a DictType"


@dataclass(eq=False)
class StoredMessage:
    """A message as the fake keeps it: the REST-shaped payload plus what dispatching needs."""

    payload: Payload
    channel: FakeChannel
    author: FakeUser
    mention_ids: list[int]
    attachment_ids: list[int]

    @property
    def id(self) -> int:
        return int(self.payload["id"])


class World:
    def __init__(self, *, max_messages: int) -> None:
        self.url = ""  # the server's http://host:port, once it listens
        self.ids = Snowflakes()
        self.users: dict[int, FakeUser] = {}
        self.bots: dict[str, FakeBot] = {}
        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}
        self.files: dict[int, FileData] = {}
        self.sessions: dict[str, Session] = {}
        self._dms: dict[frozenset[int], FakeChannel] = {}
        self._messages: OrderedDict[int, StoredMessage] = OrderedDict()
        self._max_messages = max_messages
        self._changed = asyncio.Event()

    @property
    def gateway_url(self) -> str:
        return "ws" + self.url.removeprefix("http") + "/gateway"

    # -- lookups

    def bot(self, ref: BotRef) -> FakeBot:
        if isinstance(ref, FakeBot):
            return ref
        try:
            return self.bots[ref]
        except KeyError:
            raise KeyError(f"no bot has the token {ref!r}") from None

    def known_mentions(self, content: str) -> list[int]:
        return [i for i in mentioned_ids(content) if i in self.users]

    def can_see(self, bot: FakeBot, channel: FakeChannel) -> bool:
        if channel.type == DM:
            return bot.user.id in channel.recipients
        guild = self.guilds.get(channel.guild_id or 0)
        return guild is not None and bot.user.id in guild.members

    def message(self, message_id: int) -> StoredMessage | None:
        return self._messages.get(message_id)

    def channel_messages(self, channel: FakeChannel, before: float) -> list[StoredMessage]:
        """The channel's stored messages older than `before` (an id), newest first."""
        return [
            m
            for message_id, m in reversed(self._messages.items())
            if m.channel is channel and message_id < before
        ]

    def dm_channel(self, a: FakeUser, b: FakeUser) -> FakeChannel:
        key = frozenset((a.id, b.id))
        channel = self._dms.get(key)
        if channel is None:
            channel = FakeChannel(self.ids.next(), DM, recipients=(a.id, b.id))
            channel.created_at = timestamp(channel.id)
            self._dms[key] = self.channels[channel.id] = channel
        return channel

    def sessions_of(self, bot: FakeBot) -> list[Session]:
        return [s for s in self.sessions.values() if s.bot is bot and not s.invalid]

    def add_session(self, session: Session) -> None:
        """Keep a new session; forget the bot's invalid and oldest disconnected ones."""
        self.sessions[session.id] = session
        mine = [s for s in self.sessions.values() if s.bot is session.bot]
        idle = [s for s in mine if s.connection is None]
        excess = max(0, len(mine) - _MAX_SESSIONS_PER_BOT)
        for stale in [s for s in idle if s.invalid] + idle[:excess]:
            self.sessions.pop(stale.id, None)

    # -- guilds

    def bots_in(self, guild: FakeGuild) -> list[FakeBot]:
        return [b for b in self.bots.values() if b.user.id in guild.members]

    def guild_create(self, guild: FakeGuild, bot: FakeBot) -> Payload:
        # Discord lists the bot's own member; others come from chunking or presences.
        me = member_payload(bot.user, guild.members[bot.user.id])
        return guild_create_payload(guild, [me])

    def join(self, guild: FakeGuild, member: FakeUser | FakeBot) -> None:
        """Add a member; a bot gets GUILD_CREATE, bots with GUILD_MEMBERS GUILD_MEMBER_ADD."""
        user = member.user if isinstance(member, FakeBot) else member
        if user.id in guild.members:
            return
        joined = guild.members[user.id] = timestamp()
        if isinstance(member, FakeBot):
            for session in self.sessions_of(member):
                if session.wants(GUILDS) and session.sees_guild(guild.id):
                    session.dispatch("GUILD_CREATE", self.guild_create(guild, member))
        added = {**member_payload(user, joined), "guild_id": str(guild.id)}
        for bot in self.bots_in(guild):
            if bot.user is user:
                continue
            for session in self.sessions_of(bot):
                if session.wants(GUILD_MEMBERS) and session.sees_guild(guild.id):
                    session.dispatch("GUILD_MEMBER_ADD", added)

    def add_guild_channel(
        self, guild: FakeGuild, channel: FakeChannel, event: str, data: Payload
    ) -> None:
        guild.channels.append(channel)
        self.channels[channel.id] = channel
        for bot in self.bots_in(guild):
            for session in self.sessions_of(bot):
                if session.wants(GUILDS) and session.sees_guild(guild.id):
                    session.dispatch(event, data)

    # -- messages

    def create_message(
        self,
        author: FakeUser,
        channel: FakeChannel,
        content: str,
        *,
        mention_ids: list[int],
        files: Sequence[FileData] = (),
        embeds: Sequence[Payload] = (),
        flags: int = 0,
        tts: bool = False,
        nonce: str | None = None,
        reference: Payload | None = None,
        referenced: StoredMessage | None = None,
    ) -> StoredMessage:
        """Store a message, its files served under /attachments, and dispatch MESSAGE_CREATE."""
        message_id = self.ids.next()
        attachments, attachment_ids = [], []
        for given in files:
            attachment_id = self.ids.next()
            self.files[attachment_id] = file = typed(given)
            url = f"{self.url}/attachments/{channel.id}/{attachment_id}/{quote(file.filename)}"
            attachments.append(attachment_payload(attachment_id, file, url))
            attachment_ids.append(attachment_id)
        replying = reference is not None and reference.get("type", 0) == 0
        payload: Payload = {
            "id": str(message_id),
            "type": REPLY_MESSAGE if replying else DEFAULT_MESSAGE,
            "channel_id": str(channel.id),
            "author": user_payload(author),
            "content": content,
            "timestamp": timestamp(message_id),
            "edited_timestamp": None,
            "tts": tts,
            "mention_everyone": False,
            "mentions": [user_payload(self.users[i]) for i in mention_ids],
            "mention_roles": [],
            "attachments": attachments,
            "embeds": list(embeds),
            "pinned": False,
            "flags": flags,
            "components": [],
        }
        if nonce is not None:
            payload["nonce"] = nonce
        if reference is not None:
            payload["message_reference"] = reference
        if replying:
            payload["referenced_message"] = (
                None
                if referenced is None
                else {k: v for k, v in referenced.payload.items() if k != "referenced_message"}
            )
        stored = StoredMessage(payload, channel, author, mention_ids, attachment_ids)
        self._messages[message_id] = stored
        channel.last_message_id = message_id
        while len(self._messages) > self._max_messages:
            self._forget(self._messages.popitem(last=False)[1])
        self._dispatch_message("MESSAGE_CREATE", stored)
        return stored

    def update_message(
        self,
        stored: StoredMessage,
        *,
        content: str | None = None,
        embeds: list[Payload] | None = None,
        flags: int | None = None,
    ) -> None:
        """Edit a message and dispatch MESSAGE_UPDATE (the whole message, as Discord does)."""
        payload = stored.payload
        if content is not None:
            payload["content"] = content
            stored.mention_ids = self.known_mentions(content)
            payload["mentions"] = [user_payload(self.users[i]) for i in stored.mention_ids]
        if embeds is not None:
            payload["embeds"] = embeds
        if flags is not None:
            payload["flags"] = flags
        payload["edited_timestamp"] = timestamp()
        self._dispatch_message("MESSAGE_UPDATE", stored)

    def delete_message(self, stored: StoredMessage) -> None:
        self._messages.pop(stored.id, None)
        self._forget(stored)
        channel = stored.channel
        deleted: Payload = {"id": str(stored.id), "channel_id": str(channel.id)}
        if channel.guild_id is not None:
            deleted["guild_id"] = str(channel.guild_id)
        for session in self._sessions_told(channel):
            session.dispatch("MESSAGE_DELETE", deleted)

    def reference(
        self, channel: FakeChannel, ref: object
    ) -> tuple[Payload | None, StoredMessage | None]:
        """A message_reference as Discord resolves it: (reference, the replied-to message).
        A reply (type 0) must name a message of the same channel; a forward (1) any message."""
        if ref is None:
            return None, None
        if not isinstance(ref, dict):
            raise DiscordError(
                400, form_error("message_reference", "DICT_TYPE_CONVERT", _NOT_A_DICT)
            )
        kind = ref.get("type", 0)
        stored = self.message(snowflake(ref.get("message_id"), "message_reference.message_id"))
        same_channel = stored is not None and stored.channel is channel
        if kind == 0 and not same_channel and ref.get("fail_if_not_exists", True) is False:
            return None, None
        if stored is None or (kind == 0 and not same_channel):
            error = form_error(
                "message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message"
            )
            raise DiscordError(400, error)
        reference: Payload = {
            "type": kind,
            "message_id": str(stored.id),
            "channel_id": str(stored.channel.id),
        }
        if stored.channel.guild_id is not None:
            reference["guild_id"] = str(stored.channel.guild_id)
        return reference, stored if kind == 0 else None

    def bot_mentions(
        self, bot: FakeBot, content: str, allowed: object, referenced: StoredMessage | None
    ) -> list[int]:
        """Whom a bot's message pings: the <@id>s allowed_mentions lets through, and the
        replied-to author unless allowed_mentions leaves replied_user out."""
        ids = self.known_mentions(content)
        replied = True
        if isinstance(allowed, dict):
            parse = allowed.get("parse") or []
            users = {str(u) for u in allowed.get("users") or []}
            if "users" not in parse:
                ids = [i for i in ids if str(i) in users]
            replied = allowed.get("replied_user") is True
        author = referenced.author if referenced is not None else None
        if replied and author is not None and author is not bot.user and author.id not in ids:
            ids.append(author.id)
        return ids

    def _forget(self, stored: StoredMessage) -> None:
        for attachment_id in stored.attachment_ids:
            self.files.pop(attachment_id, None)

    def _sessions_told(self, channel: FakeChannel) -> list[Session]:
        """Sessions that get message events of `channel`: the bots that see it, by intent."""
        return [
            session
            for bot in self.bots.values()
            if self.can_see(bot, channel)
            for session in self.sessions_of(bot)
            if session.wants_messages(channel.guild_id)
        ]

    def _dispatch_message(self, event: str, stored: StoredMessage) -> None:
        for session in self._sessions_told(stored.channel):
            session.dispatch(event, self._message_event(stored, session))

    def _message_event(self, stored: StoredMessage, session: Session) -> Payload:
        """MESSAGE_CREATE/UPDATE's `d` for one session: REST's message plus guild context,
        with content withheld as Discord withholds it without the MESSAGE_CONTENT intent."""
        channel = stored.channel
        data = {**stored.payload, "channel_type": channel.type}
        guild = self.guilds.get(channel.guild_id or 0)
        if guild is not None:
            data["guild_id"] = str(guild.id)
            if stored.author.id in guild.members:
                data["member"] = member_payload(None, guild.members[stored.author.id])
            data["mentions"] = [
                {**m, "member": member_payload(None, guild.members[int(m["id"])])}
                if int(m["id"]) in guild.members
                else m
                for m in stored.payload["mentions"]
            ]
        me = session.bot.user.id
        if not (
            session.wants(MESSAGE_CONTENT)
            or channel.type == DM
            or stored.author.id == me
            or me in stored.mention_ids
        ):
            data.update(content="", embeds=[], attachments=[], components=[])
        return data

    # -- changes, for waiting on them

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not ready():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"FakeDiscord: no {what} after {timeout_s:g}s")
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)
