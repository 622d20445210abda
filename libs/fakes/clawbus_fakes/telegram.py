"""Scripted fake Telegram Bot API server speaking the real wire protocol.

`async with FakeTelegramServer() as fake:` serves on loopback; register a bot with
`fake.add_bot(token, "my_bot")` and point python-telegram-bot at it with
`Bot(token, base_url=fake.base_url, base_file_url=fake.base_file_url)` (PTB appends the token:
`{fake.url}/bot<token>/<method>` and `{fake.url}/file/bot<token>/<file_path>`).

What it answers like Telegram does (tdlib/telegram-bot-api is the reference):
- `/bot<token>/<method>` by GET or POST with a query string, a JSON body, a form-encoded body
  (what PTB sends: every value a string, non-strings JSON-encoded) or a multipart body (uploads);
  method names are case-insensitive. A malformed token answers 404 "Not Found", a well-formed
  unknown or revoked one 401 "Unauthorized", an unimplemented method 404 "Not Found: method not
  found". Every answer is `{"ok": true, "result": ...}` or `{"ok": false, "error_code": N,
  "description": ...}` with the HTTP status N.
- getUpdates: `offset` confirms (forgets) earlier updates, a negative one keeps only the last
  -offset; `limit` is clamped to 1..100; `timeout` holds the request until an update arrives
  (clamped to `max_long_poll_s`, 50 s like Telegram). A second long poll for the same bot ends the
  held one with 409 "Conflict: terminated by other getUpdates request; ...", as Telegram does
  (the older request loses); while a webhook is set getUpdates answers 409 "Conflict: can't use
  getUpdates method while webhook is active; ...". `allowed_updates` persists per bot and filters
  updates as they are pushed, like Telegram filters them as they happen.
- sendMessage and editMessageText parse MarkdownV2, Markdown and HTML like Telegram (see
  `_telegram_markup`) and check the length of the parsed text: 1..4096 characters.
- Sending needs a chat the bot knows: one that appeared in a pushed update or was added with
  `add_chat`; any other chat answers 400 "Bad Request: chat not found".

Scripting (plain methods, on the server's event loop): `add_bot`, `revoke_bot`, `add_chat`;
`push_update` and the builders `private_message`, `group_message` (`mention=True`),
`reply_message`, `edit_message`, `photo_message`, `document_message`, `store_file`, each
returning the update it queued; `script_error` / `rate_limit` for the next calls of a method.
Records: `sent`, `edits`, `chat_actions`, `calls`, `commands`, `webhook_url`, `pending_updates`,
`poll_count`, `active_pollers`, `conflicts`. Waits: `wait_sent`, `wait_chat_actions`,
`wait_polling`, `wait_confirmed`, `wait_for`. Webhook delivery: `webhook_post`.

Deviations: setWebhook accepts http:// URLs on any port (Telegram insists on HTTPS on 443, 80,
88 or 8443) and is not rate-limited; webhook delivery happens only when a test calls
`webhook_post`; 409 conflicts are not delayed (Telegram spaces them 3 s apart); group messages
reach the bot whatever its privacy mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import mimetypes
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

import aiohttp
from aiohttp import web

from clawbus_fakes import _telegram_markup as markup
from clawbus_fakes._serve import Served, http_url, serve
from clawbus_fakes._telegram_api import BotApi, Handler, commands_key, read_params
from clawbus_fakes._telegram_state import (
    ALICE,
    MAX_BODY,
    MAX_DOWNLOAD_BYTES,
    MESSAGE_UPDATES,
    RECORD_LIMIT,
    TEST_GROUP,
    TOKEN_RE,
    UPDATE_TYPES,
    ApiError,
    BotState,
    ChatAction,
    Described,
    FakeChat,
    FakeUser,
    Params,
    RecordedCall,
    ScriptedError,
    SentMessage,
    StoredFile,
    document_of,
    message_of,
    not_found,
    now,
    photo_size,
    token_error,
    without_reply,
)
from clawbus_fakes._wire import encode_json

__all__ = [
    "ALICE",
    "TEST_GROUP",
    "ChatAction",
    "FakeChat",
    "FakeTelegramServer",
    "FakeUser",
    "RecordedCall",
    "SentMessage",
    "StoredFile",
]


class _Unset:
    pass


_UNSET: Final = _Unset()


def _json_response(body: object, status: int = 200) -> web.Response:
    return web.Response(
        body=encode_json(body).encode(), status=status, content_type="application/json"
    )


def _caption_fields(caption: str | None) -> dict[str, Any]:
    """A pushed media message's caption, with the entities Telegram marks in it."""
    if not caption:
        return {}
    fields: dict[str, Any] = {"caption": caption}
    entities = markup.find_entities(caption)
    if entities:
        fields["caption_entities"] = entities
    return fields


class FakeTelegramServer(Served):
    """Async context manager serving the Bot API for any number of bots on `host`.

    Scripting methods are plain (synchronous) and must be called on the event loop the server
    runs on; waits (`wait_*`) are coroutines with a timeout.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_queued_updates: int = 10_000,
        max_long_poll_s: float = 50.0,
    ) -> None:
        self.host = host
        self.port = port
        self.max_queued_updates = max_queued_updates
        self._bots: dict[str, BotState] = {}
        self._calls: deque[RecordedCall] = deque(maxlen=RECORD_LIMIT)
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._api = BotApi(self._notify, max_long_poll_s)

    @property
    def url(self) -> str:
        if self._runner is None:
            raise RuntimeError("FakeTelegramServer is not started")
        return http_url(self.host, self.port)

    @property
    def base_url(self) -> str:
        """PTB's `Bot(base_url=...)`: it appends the token."""
        return f"{self.url}/bot"

    @property
    def base_file_url(self) -> str:
        """PTB's `Bot(base_file_url=...)`: it appends the token."""
        return f"{self.url}/file/bot"

    # -- lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            return
        self._api.closing = False
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("GET", "/bot{token}/{method}", self._handle_api)
        app.router.add_route("POST", "/bot{token}/{method}", self._handle_api)
        app.router.add_route("GET", "/file/bot{token}/{file_path:.+}", self._handle_file)
        app.router.add_route("*", "/{tail:.*}", self._handle_unknown)
        # handler_cancellation: a poller that hangs up stops counting as an active poller.
        self._runner, self.port = await serve(app, self.host, self.port, handler_cancellation=True)

    async def stop(self) -> None:
        """Stop serving; held long polls are answered (with no updates) at once."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._api.closing = True
        for bot in self._bots.values():
            if bot.poller is not None:
                bot.poller.wakeup.set()
        await runner.cleanup()

    # -- bots and chats

    def add_bot(
        self,
        token: str,
        username: str,
        *,
        first_name: str | None = None,
        can_join_groups: bool = True,
        can_read_all_group_messages: bool = False,
    ) -> dict[str, Any]:
        """Register a bot; its id is the token's number, as on Telegram. Returns its getMe."""
        match = TOKEN_RE.fullmatch(token)
        if match is None:
            raise ValueError("a bot token looks like '123456:ABC-DEF_ghi'")
        if token in self._bots:
            raise ValueError("this bot is already registered")
        user = {
            "id": int(match["bot_id"]),
            "is_bot": True,
            "first_name": first_name or username,
            "username": username,
            "can_join_groups": can_join_groups,
            "can_read_all_group_messages": can_read_all_group_messages,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }
        self._bots[token] = BotState(token, user)
        return dict(user)

    def revoke_bot(self, token: str) -> None:
        """Forget a bot: its token answers 401 from now on, a held long poll included."""
        bot = self._bot(token)
        del self._bots[token]
        if bot.poller is not None:
            bot.poller.end(token_error(token))
        self._notify()

    def add_chat(self, token: str, chat: FakeChat | FakeUser) -> dict[str, Any]:
        """Make a chat known to the bot (a user: the private chat with them)."""
        if isinstance(chat, FakeUser):
            chat = FakeChat.private(chat)
        bot = self._bot(token)
        bot.chats[chat.id] = chat.to_dict()
        return dict(bot.chats[chat.id])

    # -- updates

    def push_update(self, token: str, update: Mapping[str, Any]) -> dict[str, Any]:
        """Queue an update for getUpdates (or `webhook_post`); returns it with its update_id.

        An update of a type the bot's `allowed_updates` leaves out is dropped, as Telegram never
        generates it; past `max_queued_updates` the oldest pending update is dropped.
        """
        bot = self._bot(token)
        update = copy.deepcopy(dict(update))
        kinds = [key for key in update if key != "update_id"]
        if len(kinds) != 1 or kinds[0] not in UPDATE_TYPES:
            raise ValueError(f"an update carries exactly one of {sorted(UPDATE_TYPES)}")
        update_id = update.get("update_id", bot.last_update_id + 1)
        if not isinstance(update_id, int) or update_id <= bot.last_update_id:
            raise ValueError(f"update_id must be an int above {bot.last_update_id}")
        bot.last_update_id = update_id
        update = {"update_id": update_id, **update}
        kind = kinds[0]
        if kind in MESSAGE_UPDATES:
            bot.remember(update[kind])
        if kind not in bot.allowed:
            return update
        if len(bot.queue) >= self.max_queued_updates:
            bot.queue.popleft()
            bot.dropped_updates += 1
        bot.queue.append(update)
        if bot.poller is not None:
            bot.poller.wakeup.set()
        self._notify()
        return copy.deepcopy(update)

    def private_message(
        self,
        token: str,
        text: str,
        *,
        user: FakeUser = ALICE,
        entities: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """A text from `user` in their private chat with the bot; returns the update."""
        return self._push_text(token, text, FakeChat.private(user), user, entities=entities)

    def group_message(
        self,
        token: str,
        text: str,
        *,
        user: FakeUser = ALICE,
        chat: FakeChat = TEST_GROUP,
        mention: bool = False,
        message_thread_id: int | None = None,
    ) -> dict[str, Any]:
        """A text in a group; `mention` puts "@<bot username> " in front unless already there.

        Mentions, bot commands and URLs get their entities, as Telegram marks them.
        """
        username = "@" + str(self._bot(token).user["username"])
        if mention and username.lower() not in text.lower():
            text = f"{username} {text}"
        extra: dict[str, Any] = (
            {"message_thread_id": message_thread_id} if message_thread_id is not None else {}
        )
        if extra and chat.is_forum:
            extra["is_topic_message"] = True
        return self._push_text(token, text, chat, user, **extra)

    def reply_message(
        self, token: str, to: Mapping[str, Any], text: str, *, user: FakeUser = ALICE
    ) -> dict[str, Any]:
        """A text replying to `to` (a message, or an update carrying one) in its chat."""
        target = message_of(to)
        chat = dict(target["chat"])
        fields: dict[str, Any] = {"reply_to_message": without_reply(target)}
        if "message_thread_id" in target:
            fields["message_thread_id"] = target["message_thread_id"]
        message = self._new_message(token, chat, user, text=text, **fields)
        return self.push_update(token, {"message": message})

    def edit_message(self, token: str, message: Mapping[str, Any], text: str) -> dict[str, Any]:
        """The user edited `message` (or the message in an update) to `text`."""
        edited = message_of(message)
        edited.update(text=text, edit_date=now())
        entities = markup.find_entities(text)
        edited.pop("entities", None)
        if entities:
            edited["entities"] = entities
        return self.push_update(token, {"edited_message": edited})

    def photo_message(
        self,
        token: str,
        data: bytes,
        *,
        caption: str | None = None,
        user: FakeUser = ALICE,
        chat: FakeChat | None = None,
    ) -> dict[str, Any]:
        """A photo (stored, so getFile and the download serve `data`); in `user`'s private chat
        unless `chat` is given."""
        stored = self.store_file(token, data, kind="photos")
        fields: dict[str, Any] = {"photo": [photo_size(stored)]}
        fields.update(_caption_fields(caption))
        chat_dict = (chat or FakeChat.private(user)).to_dict()
        return self.push_update(
            token, {"message": self._new_message(token, chat_dict, user, **fields)}
        )

    def document_message(
        self,
        token: str,
        data: bytes,
        *,
        file_name: str = "document.bin",
        mime_type: str | None = None,
        caption: str | None = None,
        user: FakeUser = ALICE,
        chat: FakeChat | None = None,
        file_size: int | None = None,
    ) -> dict[str, Any]:
        """A document (stored and served like a photo); `file_size` may claim more than
        `len(data)`, e.g. to script getFile's "file is too big"."""
        stored = self.store_file(
            token, data, kind="documents", file_name=file_name, mime_type=mime_type,
            file_size=file_size,
        )  # fmt: skip
        fields: dict[str, Any] = {"document": document_of(stored)}
        fields.update(_caption_fields(caption))
        chat_dict = (chat or FakeChat.private(user)).to_dict()
        return self.push_update(
            token, {"message": self._new_message(token, chat_dict, user, **fields)}
        )

    def store_file(
        self,
        token: str,
        data: bytes,
        *,
        kind: Literal["photos", "documents"] = "documents",
        file_name: str | None = None,
        mime_type: str | None = None,
        file_size: int | None = None,
        source_url: str | None = None,
    ) -> StoredFile:
        """Keep a file for the bot, as Telegram keeps what users send; `file_size` may claim
        more than `len(data)`, e.g. to script getFile's "file is too big"."""
        return self._bot(token).store_file(
            data,
            kind,
            file_name=file_name,
            mime_type=mime_type,
            file_size=file_size,
            source_url=source_url,
        )

    def _new_message(
        self, token: str, chat: dict[str, Any], user: FakeUser, **fields: Any
    ) -> dict[str, Any]:
        return {
            "message_id": self._bot(token).next_message_id(),
            "from": user.to_dict(),
            "chat": chat,
            "date": now(),
            **fields,
        }

    def _push_text(
        self,
        token: str,
        text: str,
        chat: FakeChat,
        user: FakeUser,
        *,
        entities: list[dict[str, Any]] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        found = markup.find_entities(text) if entities is None else entities
        if found:
            fields["entities"] = found
        message = self._new_message(token, chat.to_dict(), user, text=text, **fields)
        return self.push_update(token, {"message": message})

    # -- scripting failures

    def script_error(
        self,
        token: str,
        method: str,
        error_code: int,
        description: str,
        *,
        calls: int = 1,
        parameters: dict[str, Any] | None = None,
    ) -> None:
        """Answer the next `calls` requests to `method` with this error instead."""
        if calls < 1:
            raise ValueError("calls must be >= 1")
        error = ApiError(error_code, description, parameters)
        self._bot(token).scripted.setdefault(method.lower(), deque()).append(
            ScriptedError(error, calls)
        )

    def rate_limit(self, token: str, method: str, retry_after: int, *, calls: int = 1) -> None:
        """Flood control for the next `calls` requests to `method`: 429 "Too Many Requests:
        retry after N" with `parameters.retry_after` (PTB raises telegram.error.RetryAfter)."""
        self.script_error(
            token,
            method,
            429,
            f"Too Many Requests: retry after {retry_after}",
            calls=calls,
            parameters={"retry_after": retry_after},
        )

    # -- what the bot did

    def sent(self, token: str, chat_id: int | None = None) -> list[SentMessage]:
        """Messages the bot sent (sendMessage, sendPhoto, sendDocument), in order."""
        return [m for m in self._bot(token).sent if chat_id is None or m.chat_id == chat_id]

    def edits(self, token: str, chat_id: int | None = None) -> list[SentMessage]:
        """editMessageText calls that changed a message, in order."""
        return [m for m in self._bot(token).edits if chat_id is None or m.chat_id == chat_id]

    def chat_actions(self, token: str, chat_id: int | None = None) -> list[ChatAction]:
        return [a for a in self._bot(token).actions if chat_id is None or a.chat_id == chat_id]

    def calls(self, token: str | None = None, method: str | None = None) -> list[RecordedCall]:
        """Requests received (up to the last 10,000), optionally for one token / method."""
        return [
            call
            for call in self._calls
            if (token is None or call.token == token)
            and (method is None or call.method.lower() == method.lower())
        ]

    def commands(
        self, token: str, scope: Mapping[str, Any] | None = None, language_code: str = ""
    ) -> list[dict[str, str]]:
        return list(self._bot(token).commands.get(commands_key(scope, language_code), []))

    def webhook_url(self, token: str) -> str | None:
        hook = self._bot(token).webhook
        return None if hook is None else hook.url

    def pending_updates(self, token: str) -> int:
        """Updates not yet confirmed by a getUpdates offset (or delivered to the webhook)."""
        return len(self._bot(token).queue)

    def dropped_updates(self, token: str) -> int:
        return self._bot(token).dropped_updates

    def poll_count(self, token: str) -> int:
        """getUpdates requests received for the bot."""
        return self._bot(token).poll_count

    def active_pollers(self, token: str) -> int:
        """Long polls held right now: 0 or 1, as a newer one ends the older with 409."""
        return 0 if self._bot(token).poller is None else 1

    def conflicts(self, token: str) -> int:
        """Long polls ended by another one (409 "terminated by other getUpdates request")."""
        return self._bot(token).conflicts

    # -- waiting

    async def wait_for(
        self, predicate: Callable[[], object], timeout_s: float = 5.0, what: str = "a condition"
    ) -> None:
        """Return once `predicate()` is true, re-checking whenever the fake's state changes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"FakeTelegramServer: no {what} within {timeout_s} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_sent(
        self, token: str, n: int, timeout_s: float = 5.0, *, chat_id: int | None = None
    ) -> list[SentMessage]:
        """Wait until the bot has sent at least `n` messages (to `chat_id`); return them all."""
        await self.wait_for(
            lambda: len(self.sent(token, chat_id)) >= n, timeout_s, f"{n} sent message(s)"
        )
        return self.sent(token, chat_id)

    async def wait_chat_actions(
        self, token: str, n: int, timeout_s: float = 5.0, *, chat_id: int | None = None
    ) -> list[ChatAction]:
        await self.wait_for(
            lambda: len(self.chat_actions(token, chat_id)) >= n, timeout_s, f"{n} chat action(s)"
        )
        return self.chat_actions(token, chat_id)

    async def wait_polling(self, token: str, timeout_s: float = 5.0) -> None:
        """Wait until a long poll for the bot is held (a poller is parked, waiting)."""
        await self.wait_for(lambda: self.active_pollers(token) > 0, timeout_s, "held long poll")

    async def wait_confirmed(self, token: str, timeout_s: float = 5.0) -> None:
        """Wait until every queued update has been confirmed (or delivered to the webhook)."""
        await self.wait_for(lambda: self.pending_updates(token) == 0, timeout_s, "confirmation")

    # -- webhook delivery

    async def webhook_post(
        self,
        token: str,
        update: Mapping[str, Any] | None = None,
        *,
        secret_token: str | _Unset | None = _UNSET,
        timeout_s: float = 10.0,
    ) -> int:
        """POST an update to the bot's webhook as Telegram does; return the HTTP status.

        With no `update` the oldest pending one is posted and, on a 2xx answer, confirmed.
        The `X-Telegram-Bot-Api-Secret-Token` header carries the secret set with setWebhook,
        or `secret_token` when given (None: no header), to test a receiver's check. A non-2xx
        answer or a connection failure shows in getWebhookInfo's last_error_* like on Telegram.
        """
        bot = self._bot(token)
        hook = bot.webhook
        if hook is None:
            raise RuntimeError("no webhook is set for this bot")
        if update is None:
            if not bot.queue:
                raise RuntimeError("no pending update to deliver")
            body = bot.queue[0]
        else:
            body = dict(update)
        headers = {"Content-Type": "application/json"}
        secret = hook.secret_token if isinstance(secret_token, _Unset) else secret_token
        if secret:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        client_timeout = aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with (
                aiohttp.ClientSession(timeout=client_timeout) as session,
                session.post(hook.url, data=encode_json(body).encode(), headers=headers) as resp,
            ):
                await resp.read()
                status, reason = resp.status, resp.reason
        except (aiohttp.ClientError, TimeoutError) as exc:
            hook.last_error_date, hook.last_error_message = now(), f"Connection failed: {exc}"
            raise
        if 200 <= status < 300:
            if update is None and bot.queue and bot.queue[0] is body:
                bot.queue.popleft()
        else:
            hook.last_error_date = now()
            hook.last_error_message = f"Wrong response from the webhook: {status} {reason}"
        self._notify()
        return status

    # -- plumbing

    def _bot(self, token: str) -> BotState:
        bot = self._bots.get(token)
        if bot is None:
            raise KeyError(f"no bot with token {token!r}; add_bot() it first")
        return bot

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _handle_unknown(self, request: web.Request) -> web.Response:
        return _json_response(not_found().body(), 404)

    async def _handle_api(self, request: web.Request) -> web.Response:
        token, name = request.match_info["token"], request.match_info["method"]
        known = self._api.methods.get(name.lower())
        name = name if known is None else known[0]
        params = Params({}, {})
        try:
            bot, handler = self._resolve(token, known)
            params = await read_params(request)
            result = await self._call(bot, name, handler, params)
        except ApiError as error:
            response = _json_response(error.body(), error.code)
        else:
            body = {"ok": True, "result": result}
            if isinstance(result, Described):
                body.update(result=result.result, description=result.description)
            response = _json_response(body)
        self._calls.append(
            RecordedCall(
                token=token,
                method=name,
                params=params.decoded(),
                files={k: v.data for k, v in params.files.items()},
                http_method=request.method,
                content_type=request.content_type,
                status=response.status,
            )
        )
        self._notify()
        return response

    def _resolve(self, token: str, known: tuple[str, Handler] | None) -> tuple[BotState, Handler]:
        """The bot and method a request names, or the error Telegram answers instead."""
        bot = self._bots.get(token)
        if bot is None:
            raise token_error(token)
        if known is None:
            raise ApiError(404, "Not Found: method not found")
        return bot, known[1]

    @staticmethod
    async def _call(bot: BotState, name: str, handler: Handler, params: Params) -> Any:
        scripted = bot.take_scripted(name)
        if scripted is not None:
            raise scripted
        return await handler(bot, params)

    async def _handle_file(self, request: web.Request) -> web.Response:
        token, path = request.match_info["token"], request.match_info["file_path"]
        bot = self._bots.get(token)
        if bot is None:
            error = token_error(token)
            return _json_response(error.body(), error.code)
        stored = next((f for f in bot.files.values() if f.file_path == path), None)
        if stored is None or stored.file_size > MAX_DOWNLOAD_BYTES:
            return _json_response(not_found().body(), 404)
        content_type = stored.mime_type or mimetypes.guess_type(path)[0]
        return web.Response(
            body=stored.data, content_type=content_type or "application/octet-stream"
        )
