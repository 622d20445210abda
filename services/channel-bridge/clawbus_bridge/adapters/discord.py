"""Discord through discord.py: the gateway connection, DMs, guild channels and threads.

The bot answers every DM (subject to the DM policy), and in guilds when it is mentioned,
replied to, or the message is in one of the channels its settings name (`channels`: ids;
a thread counts as its parent channel). Attachments are downloaded, stored as media and
named in the text the agent gets.

Replies are sent with a nonce derived from the run and chunk and `enforce_nonce`, so Discord
itself drops a chunk a replica sends again after a crash: delivery is exactly once here.
Mentions in replies are disabled (`allowed_mentions` none: an agent cannot ping @everyone)
and link embeds suppressed.

discord.py reads its REST base and gateway URL from class attributes; `discord_api_base` and
`discord_gateway_url` set them for this process (a bridge runs its adapters in one process
with one Discord).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import discord
import yarl
from clawbus_core.store import media
from discord.gateway import DiscordWebSocket
from discord.http import Route

from clawbus_bridge.adapters.base import (
    ChannelContext,
    ChannelFailure,
    Inbound,
    MediaRef,
    SendFailure,
    bot_token,
)
from clawbus_bridge.format import DISCORD_LIMIT

log = logging.getLogger(__name__)

_TEXT_TYPES = ("text/", "application/json", "application/xml")
_MAX_DOCUMENT_TEXT = 20_000


def _point_at(api_base: str, gateway_url: str) -> None:
    Route.BASE = api_base.rstrip("/")
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


class DiscordAdapter:
    limit = DISCORD_LIMIT
    reports_refusals = False

    def __init__(self, ctx: ChannelContext) -> None:
        token = bot_token(ctx.credentials)
        self.ctx = ctx
        self.token = token
        configured = ctx.channel.settings.get("channels") or []
        self.channels = {str(c) for c in configured} if isinstance(configured, list) else set()
        _point_at(ctx.settings.discord_api_base, ctx.settings.discord_gateway_url)
        intents = discord.Intents.none()
        intents.guilds = True
        intents.guild_messages = True
        intents.dm_messages = True
        intents.message_content = True
        self.client = discord.Client(intents=intents, guild_ready_timeout=0.5)
        self.client.event(self.on_ready)
        self.client.event(self.on_message)

    # --- receiving ----------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self.client.login(self.token)
        except discord.LoginFailure:
            raise ChannelFailure(
                "Discord refused the bot token (401 Unauthorized): check the channel's credentials",
                permanent=True,
            ) from None
        except (discord.HTTPException, OSError) as exc:
            raise ChannelFailure(f"cannot reach Discord: {exc}") from exc
        try:
            await self.client.connect(reconnect=True)
        except discord.PrivilegedIntentsRequired:
            raise ChannelFailure(
                "Discord refused the message content intent: enable it for the bot in the "
                "developer portal",
                permanent=True,
            ) from None
        except (discord.ConnectionClosed, discord.GatewayNotFound, OSError) as exc:
            raise ChannelFailure(f"the Discord gateway connection failed: {exc}") from exc
        raise ChannelFailure("the Discord gateway connection closed")

    async def on_ready(self) -> None:
        user = self.client.user
        await self.ctx.connected(f"@{user.name}" if user is not None else None)

    async def on_message(self, message: discord.Message) -> None:
        try:
            inbound = await self._inbound(message)
            if inbound is not None:
                await self.ctx.receive(inbound)
        except Exception:
            # discord.py would only log it; the message is read again after a resume.
            log.exception(
                "channel %s: handling message %s failed", self.ctx.channel.name, message.id
            )

    def _addressed(self, message: discord.Message) -> bool:
        me = self.client.user
        if me is not None and any(u.id == me.id for u in message.mentions):
            return True
        channel = message.channel
        parent = getattr(channel, "parent_id", None)
        if str(channel.id) in self.channels or (
            parent is not None and str(parent) in self.channels
        ):
            return True
        replied = message.reference.resolved if message.reference is not None else None
        return (
            isinstance(replied, discord.Message) and me is not None and replied.author.id == me.id
        )

    def _text(self, message: discord.Message) -> str:
        text = message.content
        me = self.client.user
        if me is not None:
            for form in (f"<@{me.id}>", f"<@!{me.id}>"):
                text = text.replace(form, "")
        return text.strip()

    async def _inbound(self, message: discord.Message) -> Inbound | None:
        me = self.client.user
        if message.author.bot or (me is not None and message.author.id == me.id):
            return None
        channel = message.channel
        direct = isinstance(channel, discord.DMChannel)
        if not direct and not self._addressed(message):
            return None
        media = await self._media(message)
        text = self._text(message)
        if not text and not media:
            return None
        thread = isinstance(channel, discord.Thread)
        return Inbound(
            platform_id=f"message:{message.id}",
            chat_id=str(channel.id),
            chat_kind="direct" if direct else "group",
            sender_id=str(message.author.id),
            sender_name=message.author.display_name,
            text=text,
            message_id=str(message.id),
            thread_id=str(channel.id) if thread else None,
            group_id=str(getattr(channel, "parent_id", None) or channel.id),
            addressed=True,
            media=tuple(media),
        )

    async def _media(self, message: discord.Message) -> list[MediaRef]:
        refs = []
        for attachment in message.attachments:
            if attachment.size > media.MAX_MEDIA_BYTES:
                continue
            try:
                content = await attachment.read()
            except (discord.HTTPException, OSError) as exc:
                raise ChannelFailure(f"downloading an attachment failed: {exc}") from exc
            media_id = await media.store_media(
                self.ctx.pool,
                self.ctx.channel.tenant_id,
                channel_id=self.ctx.channel.id,
                kind="attachment",
                content=content,
                file_name=attachment.filename,
                mime_type=attachment.content_type,
            )
            mime = attachment.content_type
            text = None
            if mime is not None and mime.startswith(_TEXT_TYPES):
                text = content.decode("utf-8", errors="replace")[:_MAX_DOCUMENT_TEXT]
            refs.append(
                MediaRef(media_id, "attachment", attachment.filename, mime, len(content), text)
            )
        return refs

    # --- sending ------------------------------------------------------------------------------

    async def send(self, target: dict[str, Any], text: str, *, reply: bool, nonce: str) -> str:
        channel = self.client.get_partial_messageable(int(target["chat_id"]))
        reference = None
        if reply and target.get("reply_to"):
            reference = discord.MessageReference(
                message_id=int(target["reply_to"]),
                channel_id=channel.id,
                fail_if_not_exists=False,
            )
        try:
            sent = await channel.send(
                content=text,
                reference=reference,  # type: ignore[arg-type]
                allowed_mentions=discord.AllowedMentions.none(),
                suppress_embeds=True,
                nonce=nonce or None,  # type: ignore[arg-type]
            )
        except discord.Forbidden as exc:
            raise SendFailure(f"Discord refused the message: {exc}", permanent=True) from exc
        except discord.NotFound as exc:
            raise SendFailure(f"the Discord channel is gone: {exc}", permanent=True) from exc
        except discord.HTTPException as exc:
            permanent = exc.status is not None and 400 <= exc.status < 500 and exc.status != 429
            raise SendFailure(f"sending to Discord failed: {exc}", permanent=permanent) from exc
        except OSError as exc:
            raise SendFailure(f"sending to Discord failed: {exc}") from exc
        return str(sent.id)

    async def typing(self, target: dict[str, Any]) -> None:
        with contextlib.suppress(discord.HTTPException, OSError):
            await self.client.http.send_typing(int(target["chat_id"]))

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.close()
