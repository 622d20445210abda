"""Telegram through python-telegram-bot: long polling, replies as safe HTML, typing.

Polling is done here rather than by PTB's `Updater`, which confirms updates to Telegram as
soon as it has fetched them: a replica that died with updates in its queue would lose them.
Here an update is confirmed (the next getUpdates' `offset`, persisted on the channel) only
after the bridge has stored its run, so a standby that takes over asks again for anything
not stored, and the runs' idempotency keys make a second reading harmless.

Webhook mode (`config.mode: "webhook"` with `config.webhookUrl`, the public URL of the
gateway's `/v1/webhooks/{channel id}`): the lease holder registers the webhook with a secret
token derived from the bot token, and takes the updates Telegram posts there (the gateway
hands them over the bus) only if they carry that token. Polling mode deletes the webhook
first, as Telegram allows one or the other.

Private chats are direct messages; in groups the bot answers when mentioned (`@botname`),
replied to, or addressed with a /command. Photos and documents are downloaded, stored as
media and named in the text the agent gets (a text document's content is included).
Replies go out as HTML rendered from the agent's Markdown (plain text if Telegram refuses
the markup), with link previews off; the first chunk replies to the message it answers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from typing import Any

from clawbus_core.store import channels as store
from clawbus_core.store import media
from clawbus_protocol.errors import InvalidRequest, Unauthorized
from telegram import Bot, LinkPreviewOptions, Message, ReplyParameters, Update
from telegram.constants import ChatAction, ChatType, MessageEntityType, ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)

from clawbus_bridge.adapters.base import (
    ChannelContext,
    ChannelFailure,
    Inbound,
    MediaRef,
    SendFailure,
    bot_token,
)
from clawbus_bridge.format import TELEGRAM_LIMIT, telegram_html

log = logging.getLogger(__name__)

_ALLOWED_UPDATES = ("message", "edited_message")
_TEXT_MIME_PREFIXES = ("text/", "application/json", "application/xml")
_MAX_DOCUMENT_TEXT = 20_000
_SEND_RETRIES = 3


def _seconds(retry_after: int | dt.timedelta) -> float:
    return retry_after.total_seconds() if isinstance(retry_after, dt.timedelta) else retry_after


class TelegramAdapter:
    limit = TELEGRAM_LIMIT
    reports_refusals = False  # in webhook mode too: Telegram resends what it sees refused

    def __init__(self, ctx: ChannelContext) -> None:
        token = bot_token(ctx.credentials)
        self.ctx = ctx
        self.bot = Bot(
            token,
            base_url=ctx.settings.telegram_api_base,
            base_file_url=ctx.settings.telegram_file_base,
        )
        self.username = ""
        self.bot_id = 0
        self.token = token
        self.webhook_url = ctx.channel.settings.get("webhookUrl")
        if ctx.channel.settings.get("mode") == "webhook" and not isinstance(self.webhook_url, str):
            raise ChannelFailure("webhook mode needs `webhookUrl` in the config", permanent=True)
        self.webhook = ctx.channel.settings.get("mode") == "webhook"

    @property
    def secret_token(self) -> str:
        """What Telegram sends back in X-Telegram-Bot-Api-Secret-Token: derived from the bot
        token, so every replica knows it and nothing more is stored."""
        mac = hmac.new(self.token.encode(), b"clawbus-telegram-webhook", hashlib.sha256)
        return mac.hexdigest()[:48]

    # --- receiving ----------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self.bot.initialize()
        except InvalidToken:
            raise ChannelFailure(
                "Telegram refused the bot token (401 Unauthorized): check the channel's "
                "credentials",
                permanent=True,
            ) from None
        except (NetworkError, TelegramError) as exc:
            raise ChannelFailure(f"cannot reach Telegram: {exc}") from exc
        self.username = self.bot.username or ""
        self.bot_id = self.bot.id
        if self.webhook:
            await self._set_webhook()
            await self.ctx.connected(f"@{self.username}")
            await asyncio.Event().wait()  # updates arrive through `handle`
        await self._call(self.bot.delete_webhook(), "deleting the webhook")
        await self.ctx.connected(f"@{self.username}")
        offset = self.ctx.channel.poll_offset
        while True:
            updates = await self._poll(offset)
            for update in updates:
                inbound = await self._inbound(update)
                if inbound is not None:
                    await self.ctx.receive(inbound)
                offset = max(offset, update.update_id + 1)
            if updates:
                await store.advance_offset(self.ctx.pool, self.ctx.channel.id, offset)

    async def _call(self, call: Any, what: str) -> Any:
        try:
            return await call
        except InvalidToken:
            raise ChannelFailure(
                "Telegram refused the bot token (401 Unauthorized)", permanent=True
            ) from None
        except RetryAfter as exc:
            raise ChannelFailure(
                "Telegram asks to slow down", retry_after_s=_seconds(exc.retry_after)
            ) from None
        except (NetworkError, TelegramError) as exc:
            raise ChannelFailure(f"{what} failed: {exc}") from exc

    async def _set_webhook(self) -> None:
        await self._call(
            self.bot.set_webhook(
                str(self.webhook_url),
                secret_token=self.secret_token,
                allowed_updates=list(_ALLOWED_UPDATES),
            ),
            "setting the webhook",
        )

    async def handle(self, headers: Mapping[str, str], body: bytes) -> None:
        """An update Telegram posted to the webhook; refused without the secret token."""
        given = headers.get("x-telegram-bot-api-secret-token", "")
        if not self.webhook or not hmac.compare_digest(given, self.secret_token):
            raise Unauthorized("the Telegram secret token is missing or wrong")
        try:
            data = json.loads(body)
            update = Update.de_json(data, self.bot)
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidRequest(f"not a Telegram update: {exc}") from None
        if update is None:
            raise InvalidRequest("not a Telegram update")
        inbound = await self._inbound(update)
        if inbound is not None:
            await self.ctx.receive(inbound)

    async def _poll(self, offset: int) -> tuple[Update, ...]:
        try:
            return await self.bot.get_updates(
                offset=offset or None,
                timeout=self.ctx.settings.bridge_poll_timeout_s,
                allowed_updates=list(_ALLOWED_UPDATES),
            )
        except InvalidToken:
            raise ChannelFailure(
                "Telegram refused the bot token (401 Unauthorized)", permanent=True
            ) from None
        except Conflict as exc:
            raise ChannelFailure(
                f"Telegram reports a conflict: {exc.message} (another program polls this bot, "
                "or a webhook is set)"
            ) from None
        except RetryAfter as exc:
            raise ChannelFailure(
                "Telegram asks to slow down", retry_after_s=_seconds(exc.retry_after)
            ) from None
        except (NetworkError, TelegramError) as exc:
            raise ChannelFailure(f"polling Telegram failed: {exc}") from exc

    def _addressed(self, message: Message, text: str) -> tuple[bool, str]:
        """(whether a group message is for the bot, its text without the mention)."""
        mention = f"@{self.username}".lower()
        addressed = False
        entities = message.entities or message.caption_entities or ()
        for entity in entities:
            part = text[entity.offset : entity.offset + entity.length]
            mentioned = entity.type == MessageEntityType.MENTION and part.lower() == mention
            commanded = entity.type == MessageEntityType.BOT_COMMAND and (
                "@" not in part or part.lower().endswith(mention)
            )
            addressed = addressed or mentioned or commanded
        replied = message.reply_to_message
        if replied is not None and replied.from_user is not None:
            addressed = addressed or replied.from_user.id == self.bot_id
        if addressed and self.username:
            text = " ".join(w for w in text.split(" ") if w.lower() != mention).strip()
        return addressed, text

    async def _inbound(self, update: Update) -> Inbound | None:
        message = update.message or update.edited_message
        if message is None or message.from_user is None or message.from_user.is_bot:
            return None
        chat = message.chat
        if chat.type not in (ChatType.PRIVATE, ChatType.GROUP, ChatType.SUPERGROUP):
            return None
        text = message.text or message.caption or ""
        media = await self._media(message)
        if not text and not media:
            return None  # stickers, joins, polls...: nothing for the agent
        direct = chat.type == ChatType.PRIVATE
        addressed, text = (True, text) if direct else self._addressed(message, text)
        user = message.from_user
        thread = message.message_thread_id if message.is_topic_message else None
        return Inbound(
            platform_id=f"update:{update.update_id}",
            chat_id=str(chat.id),
            chat_kind="direct" if direct else "group",
            sender_id=str(user.id),
            sender_name=user.full_name or user.username,
            text=text,
            message_id=str(message.message_id),
            thread_id=str(thread) if thread is not None else None,
            addressed=addressed,
            edited=update.edited_message is not None,
            media=tuple(media),
        )

    async def _media(self, message: Message) -> list[MediaRef]:
        found: list[tuple[str, str, str | None, str | None, int | None]] = []
        if message.photo:
            largest = message.photo[-1]
            found.append(("photo", largest.file_id, None, "image/jpeg", largest.file_size))
        if message.document is not None:
            doc = message.document
            found.append(("document", doc.file_id, doc.file_name, doc.mime_type, doc.file_size))
        refs = []
        for kind, file_id, name, mime, size in found:
            if size is not None and size > media.MAX_MEDIA_BYTES:
                log.info("channel %s: skipping a %d-byte %s", self.ctx.channel.name, size, kind)
                continue
            try:
                file = await self.bot.get_file(file_id)
                content = bytes(await file.download_as_bytearray())
            except TelegramError as exc:
                raise ChannelFailure(f"downloading a {kind} from Telegram failed: {exc}") from exc
            media_id = await media.store_media(
                self.ctx.pool,
                self.ctx.channel.tenant_id,
                channel_id=self.ctx.channel.id,
                kind=kind,
                content=content,
                file_name=name,
                mime_type=mime,
            )
            text = None
            if mime is not None and mime.startswith(_TEXT_MIME_PREFIXES):
                text = content.decode("utf-8", errors="replace")[:_MAX_DOCUMENT_TEXT]
            refs.append(MediaRef(media_id, kind, name, mime, len(content), text))
        return refs

    # --- sending ------------------------------------------------------------------------------

    async def send(self, target: dict[str, Any], text: str, *, reply: bool, nonce: str) -> str:
        del nonce  # Telegram has no idempotency key: the outbox's records stand in for one
        rendered = telegram_html(text)
        # Telegram counts the limit after parsing the markup; a chunk whose markup pushes
        # it past the limit goes as plain text.
        html = rendered if len(rendered) <= self.limit else None
        reply_to = target.get("reply_to") if reply else None
        kwargs: dict[str, Any] = {
            "chat_id": int(target["chat_id"]),
            "link_preview_options": LinkPreviewOptions(is_disabled=True),
        }
        if target.get("thread_id"):
            kwargs["message_thread_id"] = int(target["thread_id"])
        if reply_to:
            kwargs["reply_parameters"] = ReplyParameters(
                message_id=int(reply_to), allow_sending_without_reply=True
            )
        for attempt in range(_SEND_RETRIES):
            try:
                if html is not None:
                    try:
                        sent = await self.bot.send_message(
                            text=html, parse_mode=ParseMode.HTML, **kwargs
                        )
                    except BadRequest as exc:
                        if "parse" not in exc.message.lower():
                            raise
                        log.info("channel %s: markup refused, sending plain text", target)
                        html = None
                        sent = await self.bot.send_message(text=text, **kwargs)
                else:
                    sent = await self.bot.send_message(text=text, **kwargs)
                return str(sent.message_id)
            except RetryAfter as exc:
                if attempt == _SEND_RETRIES - 1:
                    raise SendFailure("Telegram keeps asking to slow down") from None
                await asyncio.sleep(_seconds(exc.retry_after))
            except (Forbidden, ChatMigrated, InvalidToken) as exc:
                raise SendFailure(f"Telegram refused the message: {exc}", permanent=True) from exc
            except BadRequest as exc:
                raise SendFailure(f"Telegram refused the message: {exc}", permanent=True) from exc
            except (NetworkError, TelegramError) as exc:
                raise SendFailure(f"sending to Telegram failed: {exc}") from exc
        raise SendFailure("sending to Telegram failed")

    async def typing(self, target: dict[str, Any]) -> None:
        thread = target.get("thread_id")
        try:
            await self.bot.send_chat_action(
                int(target["chat_id"]),
                ChatAction.TYPING,
                message_thread_id=int(thread) if thread else None,
            )
        except TelegramError as exc:  # a missing typing indicator is no failure
            log.debug("typing indicator failed: %s", exc)

    async def aclose(self) -> None:
        try:
            await self.bot.shutdown()
        except TelegramError:
            log.debug("closing the Telegram client failed", exc_info=True)
