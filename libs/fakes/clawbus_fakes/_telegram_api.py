"""The Bot API methods the fake Telegram implements, over the state in `_telegram_state`.

`BotApi.methods` maps each method's lower-cased name (Telegram's are case-insensitive) to its
canonical spelling and handler; a handler answers a result or raises `ApiError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from aiohttp import web

from clawbus_fakes import _telegram_markup as markup
from clawbus_fakes._telegram_state import (
    CHAT_ACTIONS,
    COMMAND_RE,
    CONFLICT_OTHER_POLL,
    CONFLICT_SET_WEBHOOK,
    CONFLICT_WEBHOOK_ACTIVE,
    DEFAULT_ALLOWED,
    MAX_CAPTION_LENGTH,
    MAX_DOWNLOAD_BYTES,
    MAX_MESSAGE_LENGTH,
    NOT_MODIFIED,
    PARSE_MODES,
    SECRET_RE,
    UPDATE_TYPES,
    ApiError,
    BotState,
    ChatAction,
    Described,
    Params,
    Poll,
    SentMessage,
    StoredFile,
    Upload,
    Webhook,
    as_bool,
    bad_request,
    document_of,
    now,
    photo_size,
    without_reply,
)
from clawbus_fakes._wire import encode_json

Handler = Callable[[BotState, Params], Awaitable[Any]]


class BotApi:
    """The methods, with what they need of the server: a change signal and the long-poll cap."""

    def __init__(self, notify: Callable[[], None], max_long_poll_s: float) -> None:
        self._notify = notify
        self.max_long_poll_s = max_long_poll_s
        self.closing = False  # held long polls answer at once, and new ones are not held
        self.methods: dict[str, tuple[str, Handler]] = {
            name.lower(): (name, handler)
            for name, handler in (
                ("getMe", self._get_me),
                ("getUpdates", self._get_updates),
                ("setWebhook", self._set_webhook),
                ("deleteWebhook", self._delete_webhook),
                ("getWebhookInfo", self._get_webhook_info),
                ("sendMessage", self._send_message),
                ("editMessageText", self._edit_message_text),
                ("deleteMessage", self._delete_message),
                ("sendChatAction", self._send_chat_action),
                ("sendPhoto", self._send_photo),
                ("sendDocument", self._send_document),
                ("getFile", self._get_file),
                ("setMyCommands", self._set_my_commands),
                ("getMyCommands", self._get_my_commands),
                ("deleteMyCommands", self._delete_my_commands),
                ("close", self._close),
                ("logOut", self._close),
            )
        }

    # -- bot and updates

    async def _get_me(self, bot: BotState, params: Params) -> Any:
        return bot.user

    async def _get_updates(self, bot: BotState, params: Params) -> Any:
        bot.poll_count += 1
        if bot.webhook is not None:
            raise ApiError(409, CONFLICT_WEBHOOK_ACTIVE)
        offset = params.integer("offset") or 0
        limit = params.integer("limit")
        limit = 100 if limit is None else min(max(limit, 1), 100)
        timeout = min(max(params.number("timeout") or 0.0, 0.0), self.max_long_poll_s)
        _set_allowed(bot, params)
        bot.confirm(offset)
        if bot.queue or timeout == 0 or self.closing:
            return list(itertools.islice(bot.queue, limit))
        if bot.poller is not None:
            bot.poller.end(ApiError(409, CONFLICT_OTHER_POLL))
            bot.conflicts += 1
        poll = bot.poller = Poll()
        self._notify()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(poll.wakeup.wait(), timeout)
        finally:
            if bot.poller is poll:
                bot.poller = None
                self._notify()
        if poll.error is not None:
            raise poll.error
        return list(itertools.islice(bot.queue, limit))

    async def _set_webhook(self, bot: BotState, params: Params) -> Any:
        url = params.text("url") or ""
        if not url:
            return await self._delete_webhook(bot, params)
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https"):
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        if not parts.hostname:
            raise bad_request("invalid webhook URL specified")
        secret = params.text("secret_token")
        if secret is not None and secret != "" and not SECRET_RE.fullmatch(secret):
            raise bad_request("secret token contains unallowed characters")
        _set_allowed(bot, params)
        if params.flag("drop_pending_updates"):
            bot.queue.clear()
        if bot.poller is not None:
            bot.poller.end(ApiError(409, CONFLICT_SET_WEBHOOK))
        unchanged = bot.webhook is not None and bot.webhook.url == url
        bot.webhook = Webhook(
            url=url,
            secret_token=secret or None,
            max_connections=min(max(params.integer("max_connections") or 40, 1), 100),
            ip_address=params.text("ip_address"),
            has_custom_certificate="certificate" in params.files,
        )
        self._notify()
        return Described(True, "Webhook is already set" if unchanged else "Webhook was set")

    async def _delete_webhook(self, bot: BotState, params: Params) -> Any:
        if params.flag("drop_pending_updates"):
            bot.queue.clear()
        had_webhook, bot.webhook = bot.webhook is not None, None
        self._notify()
        return Described(
            True, "Webhook was deleted" if had_webhook else "Webhook is already deleted"
        )

    async def _get_webhook_info(self, bot: BotState, params: Params) -> Any:
        info: dict[str, Any] = {
            "url": "",
            "has_custom_certificate": False,
            "pending_update_count": len(bot.queue),
        }
        hook = bot.webhook
        if hook is not None:
            info.update(
                url=hook.url,
                has_custom_certificate=hook.has_custom_certificate,
                max_connections=hook.max_connections,
            )
            if hook.ip_address:
                info["ip_address"] = hook.ip_address
            if hook.last_error_date is not None:
                info["last_error_date"] = hook.last_error_date
                info["last_error_message"] = hook.last_error_message
            if bot.allowed != DEFAULT_ALLOWED:
                info["allowed_updates"] = sorted(bot.allowed)
        return info

    # -- messages

    async def _send_message(self, bot: BotState, params: Params) -> Any:
        chat = _chat(bot, params)
        raw = params.text("text") or ""
        text, entities = _formatted(params, raw, "text")
        message = _bot_message(bot, chat, params, text=text)
        if entities:
            message["entities"] = entities
        disabled = _link_preview(params, message)
        bot.remember(message)
        bot.sent.append(_sent_record("sendMessage", params, message, raw=raw, preview_off=disabled))
        self._notify()
        return message

    async def _edit_message_text(self, bot: BotState, params: Params) -> Any:
        if params.text("inline_message_id"):
            raise bad_request("MESSAGE_ID_INVALID")  # the fake has no inline messages
        chat = _chat(bot, params)
        message_id = params.integer("message_id")
        if message_id is None:
            raise bad_request("message identifier is not specified")
        stored = bot.messages.get((int(chat["id"]), message_id))
        if stored is None:
            raise bad_request("message to edit not found")
        if stored.get("from", {}).get("id") != bot.id:
            raise bad_request("message can't be edited")
        if "text" not in stored:
            raise bad_request("there is no text in the message to edit")
        raw = params.text("text") or ""
        text, entities = _formatted(params, raw, "text")
        markup_json = params.json("reply_markup")
        if (
            text == stored["text"]
            and entities == stored.get("entities", [])
            and markup_json in (None, stored.get("reply_markup"))
        ):
            raise bad_request(NOT_MODIFIED)
        message = {**stored, "text": text, "edit_date": now()}
        message.pop("entities", None)
        if entities:
            message["entities"] = entities
        if isinstance(markup_json, dict) and "inline_keyboard" in markup_json:
            message["reply_markup"] = markup_json
        disabled = _link_preview(params, message)
        bot.remember(message)
        bot.edits.append(
            _sent_record("editMessageText", params, message, raw=raw, preview_off=disabled)
        )
        self._notify()
        return message

    async def _delete_message(self, bot: BotState, params: Params) -> Any:
        chat = _chat(bot, params)
        message_id = params.integer("message_id")
        if message_id is None:
            raise bad_request("message identifier is not specified")
        if bot.messages.pop((int(chat["id"]), message_id), None) is None:
            raise bad_request("message to delete not found")
        return True

    async def _send_chat_action(self, bot: BotState, params: Params) -> Any:
        chat = _chat(bot, params)
        action = (params.text("action") or "").lower()
        if action not in CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        bot.actions.append(ChatAction(int(chat["id"]), action, params.integer("message_thread_id")))
        self._notify()
        return True

    async def _send_photo(self, bot: BotState, params: Params) -> Any:
        chat = _chat(bot, params)
        stored = _input_file(bot, params, "photo", "photos")
        raw = params.text("caption")
        fields: dict[str, Any] = {"photo": [photo_size(stored)]}
        fields.update(_media_caption(params, raw))
        message = _bot_message(bot, chat, params, **fields)
        bot.remember(message)
        bot.sent.append(_sent_record("sendPhoto", params, message, raw=raw, file=stored.data))
        self._notify()
        return message

    async def _send_document(self, bot: BotState, params: Params) -> Any:
        chat = _chat(bot, params)
        stored = _input_file(bot, params, "document", "documents")
        raw = params.text("caption")
        fields: dict[str, Any] = {"document": document_of(stored)}
        fields.update(_media_caption(params, raw))
        message = _bot_message(bot, chat, params, **fields)
        bot.remember(message)
        bot.sent.append(_sent_record("sendDocument", params, message, raw=raw, file=stored.data))
        self._notify()
        return message

    async def _get_file(self, bot: BotState, params: Params) -> Any:
        stored = bot.files.get(params.text("file_id") or "")
        if stored is None:
            raise bad_request("invalid file_id")
        if stored.file_size > MAX_DOWNLOAD_BYTES:
            raise bad_request("file is too big")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.file_size,
            "file_path": stored.file_path,
        }

    # -- commands and session

    async def _set_my_commands(self, bot: BotState, params: Params) -> Any:
        commands = params.json("commands")
        if not isinstance(commands, list):
            raise bad_request("can't parse commands JSON object")
        if len(commands) > 100:
            raise bad_request("too many commands specified")
        clean: list[dict[str, str]] = []
        for command in commands:
            if not isinstance(command, dict):
                raise bad_request("can't parse BotCommand")
            name, description = command.get("command"), command.get("description")
            if not isinstance(name, str) or not COMMAND_RE.fullmatch(name.lower()):
                raise bad_request("BOT_COMMAND_INVALID")
            if not isinstance(description, str) or not 1 <= len(description) <= 256:
                raise bad_request("command description must be non-empty")
            clean.append({"command": name.lower(), "description": description})
        key = commands_key(_scope(params), params.text("language_code") or "")
        if clean:
            bot.commands[key] = clean
        else:
            bot.commands.pop(key, None)
        self._notify()
        return True

    async def _get_my_commands(self, bot: BotState, params: Params) -> Any:
        key = commands_key(_scope(params), params.text("language_code") or "")
        return bot.commands.get(key, [])

    async def _delete_my_commands(self, bot: BotState, params: Params) -> Any:
        bot.commands.pop(commands_key(_scope(params), params.text("language_code") or ""), None)
        self._notify()
        return True

    async def _close(self, bot: BotState, params: Params) -> Any:
        return True


# --------------------------------------------------------------------------- method helpers


async def read_params(request: web.Request) -> Params:
    """Query string and body merged, as the Bot API reads them."""
    raw: dict[str, Any] = dict(request.query)
    files: dict[str, Upload] = {}
    if request.method != "POST" or not request.can_read_body:
        return Params(raw, files)
    try:
        if request.content_type == "application/json":
            try:
                body = json.loads(await request.read() or b"{}")
            except ValueError:
                raise bad_request("can't parse JSON object") from None
            if not isinstance(body, dict):
                raise bad_request("can't parse JSON object")
            raw.update(body)
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            for name, value in (await request.post()).items():
                if isinstance(value, web.FileField):
                    files[name] = Upload(value.filename, value.content_type, value.file.read())
                elif isinstance(value, bytes | bytearray):
                    raw[name] = bytes(value).decode(errors="replace")
                else:
                    raw[name] = value
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "Request Entity Too Large") from None
    return Params(raw, files)


def _set_allowed(bot: BotState, params: Params) -> None:
    """Update the persistent allowed_updates if the request names it (an empty list: default)."""
    if params.raw.get("allowed_updates") in (None, ""):
        return
    with contextlib.suppress(ApiError):
        wanted = params.json("allowed_updates")
        if isinstance(wanted, list) and all(isinstance(w, str) for w in wanted):
            known = frozenset(w.lower() for w in wanted) & UPDATE_TYPES
            bot.allowed = known or DEFAULT_ALLOWED


def _chat(bot: BotState, params: Params) -> dict[str, Any]:
    value = params.raw.get("chat_id")
    if value is None or value == "":
        raise bad_request("chat_id is empty")
    chat_id = params.integer("chat_id")
    chat: dict[str, Any] | None = None
    if chat_id is not None:
        chat = bot.chats.get(chat_id)
    elif isinstance(value, str) and value.startswith("@"):
        wanted = value[1:].lower()
        chat = next(
            (
                c
                for c in bot.chats.values()
                if c["type"] != "private" and str(c.get("username", "")).lower() == wanted
            ),
            None,
        )
    if chat is None:
        raise bad_request("chat not found")
    return chat


def _formatted(params: Params, raw: str, what: Literal["text", "caption"]) -> tuple[str, list[Any]]:
    """Parse `raw` as `parse_mode` says and check it like Telegram; (text, entities)."""
    if what == "text" and not raw:
        raise bad_request("message text is empty")
    parse_mode = params.text("parse_mode") or None
    if parse_mode is not None and parse_mode.lower() not in PARSE_MODES:
        raise bad_request("unsupported parse_mode")
    try:
        text, entities = markup.parse(raw, parse_mode)
    except markup.MarkupError as exc:
        raise bad_request(f"can't parse entities: {exc}") from None
    if parse_mode is None:
        explicit = params.json("entities" if what == "text" else "caption_entities")
        if explicit is not None:
            if not isinstance(explicit, list) or not all(
                isinstance(e, dict) and isinstance(e.get("offset"), int)
                and isinstance(e.get("length"), int) for e in explicit
            ):  # fmt: skip
                raise bad_request("can't parse entities JSON object")
            entities = explicit
    taken = [(e["offset"], e["offset"] + e["length"]) for e in entities]
    entities = entities + [
        found
        for found in markup.find_entities(text)
        if not any(start < found["offset"] + found["length"] and found["offset"] < end
                   for start, end in taken)
    ]  # fmt: skip
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    if what == "text" and not text.strip():
        raise bad_request("message text is empty")
    if what == "text" and len(text) > MAX_MESSAGE_LENGTH:
        raise bad_request("message is too long")
    if what == "caption" and len(text) > MAX_CAPTION_LENGTH:
        raise bad_request("message caption is too long")
    return text, entities


def _media_caption(params: Params, raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    text, entities = _formatted(params, raw, "caption")
    fields: dict[str, Any] = {"caption": text}
    if entities:
        fields["caption_entities"] = entities
    return fields


def _bot_message(
    bot: BotState, chat: dict[str, Any], params: Params, **content: Any
) -> dict[str, Any]:
    """A Message the bot sends: id, sender, chat, date, thread and reply target, `content`."""
    message: dict[str, Any] = {
        "message_id": bot.next_message_id(),
        "from": {k: bot.user[k] for k in ("id", "is_bot", "first_name", "username")},
        "chat": chat,
        "date": now(),
    }
    thread = params.integer("message_thread_id")
    if thread is not None:
        message["message_thread_id"] = thread
        if chat.get("is_forum"):
            message["is_topic_message"] = True
    target = _reply_target(bot, chat, params)
    if target is not None:
        message["reply_to_message"] = without_reply(target)
    message.update(content)
    reply_markup = params.json("reply_markup")
    if isinstance(reply_markup, dict) and "inline_keyboard" in reply_markup:
        message["reply_markup"] = reply_markup
    return message


def _reply_target(bot: BotState, chat: dict[str, Any], params: Params) -> dict[str, Any] | None:
    reply = params.json("reply_parameters")
    if reply is not None:
        if not isinstance(reply, dict) or not isinstance(reply.get("message_id"), int):
            raise bad_request("can't parse reply parameters JSON object")
        message_id: int | None = reply["message_id"]
        allow = as_bool(reply.get("allow_sending_without_reply"))
        if reply.get("chat_id") not in (None, chat["id"]):
            chat = _chat(bot, Params({"chat_id": reply["chat_id"]}, {}))
    else:
        message_id = params.integer("reply_to_message_id")
        allow = params.flag("allow_sending_without_reply")
    if not message_id:
        return None
    target = bot.messages.get((int(chat["id"]), message_id))
    if target is None and not allow:
        raise bad_request("message to be replied not found")
    return target


def _link_preview(params: Params, message: dict[str, Any]) -> bool:
    """Whether the sender disabled link previews; notes it on `message` when it has a link."""
    options = params.json("link_preview_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request("can't parse link preview options JSON object")
    disabled = bool(options and as_bool(options.get("is_disabled"))) or params.flag(
        "disable_web_page_preview"
    )
    has_link = any(e.get("type") in ("url", "text_link") for e in message.get("entities", []))
    if has_link and (options or disabled):
        message["link_preview_options"] = options or {"is_disabled": True}
    return disabled


def _sent_record(
    method: str,
    params: Params,
    message: dict[str, Any],
    *,
    raw: str | None,
    preview_off: bool = False,
    file: bytes | None = None,
) -> SentMessage:
    reply = message.get("reply_to_message")
    return SentMessage(
        method=method,
        chat_id=int(message["chat"]["id"]),
        message_id=int(message["message_id"]),
        text=raw,
        parse_mode=params.text("parse_mode") or None,
        reply_to_message_id=None if reply is None else int(reply["message_id"]),
        message_thread_id=params.integer("message_thread_id"),
        link_preview_disabled=preview_off,
        params=params.decoded(),
        message=copy.deepcopy(message),
        file=file,
    )


def _input_file(
    bot: BotState,
    params: Params,
    name: str,
    kind: Literal["photos", "documents"],
) -> StoredFile:
    """The file a send method names: an upload, an attach:// part, a file_id or a URL."""
    value = params.raw.get(name)
    upload = params.files.get(name)
    if isinstance(value, str) and value.startswith("attach://"):
        upload = params.files.get(value.removeprefix("attach://"))
    if upload is not None:
        mime_type = None if kind == "photos" else upload.content_type
        return bot.store_file(upload.data, kind, file_name=upload.filename, mime_type=mime_type)
    if isinstance(value, str) and value:
        if value in bot.files:
            return bot.files[value]
        if value.lower().startswith(("http://", "https://")):
            name_in_url = urlsplit(value).path.rsplit("/", 1)[-1] or None
            return bot.store_file(b"", kind, file_name=name_in_url, source_url=value)
        raise bad_request("wrong file identifier/HTTP URL specified")
    raise bad_request(f"there is no {name} in the request")


def _scope(params: Params) -> Mapping[str, Any] | None:
    scope = params.json("scope")
    if scope is not None and not (isinstance(scope, dict) and isinstance(scope.get("type"), str)):
        raise bad_request("can't parse BotCommandScope JSON object")
    return scope


def commands_key(scope: Mapping[str, Any] | None, language_code: str) -> str:
    scope = scope or {"type": "default"}
    return encode_json({"scope": dict(sorted(scope.items())), "language_code": language_code})
