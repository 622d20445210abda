"""The fake Discord's REST API v10 (and v9): the routes a bot uses to log in and to talk.

Every call under /api/v{9,10} passes one middleware: unknown routes get 404/405, a missing or
unknown `Authorization: Bot <token>` 401, a scripted rate limit 429; then the route runs and the
call is recorded. Errors are Discord's bodies (`{"message", "code"}`, 50035 with `errors`).
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import BodyPartReader, web

from clawbus_fakes._discord_wire import (
    API_VERSIONS,
    DM,
    EMPTY_MESSAGE,
    INVALID_JSON,
    INVALID_RECIPIENT,
    MAX_CONTENT,
    MAX_EMBEDS,
    METHOD_NOT_ALLOWED,
    MISSING_ACCESS,
    NOT_AUTHOR,
    NOT_FOUND,
    TOO_LARGE,
    UNAUTHORIZED,
    UNKNOWN_CHANNEL,
    UNKNOWN_MESSAGE,
    UNKNOWN_USER,
    DiscordError,
    FakeBot,
    FakeChannel,
    FileData,
    Payload,
    RestCall,
    SentMessage,
    application_payload,
    channel_payload,
    error_body,
    form_error,
    max_length_error,
    self_user_payload,
    snowflake,
    typed,
    user_payload,
)
from clawbus_fakes._discord_world import StoredMessage, World
from clawbus_fakes._wire import encode_json

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

API_PREFIXES: Final = tuple(f"/api/v{v}" for v in API_VERSIONS)
_NO_AUTH_ROUTES: Final = frozenset({"GET /gateway"})
_MAX_RECORDED_CALLS: Final = 10_000
_MAX_NONCES: Final = 1_000
_FILES_FIELD: Final = re.compile(r"files\[(\d+)\]")
# Per-request state: the caller (set before any authenticated route runs) and its JSON body.
_BOT: Final = web.RequestKey("clawbus_fake_bot", FakeBot)
_BODY: Final = web.RequestKey("clawbus_fake_body", dict)


@dataclass
class RateLimit:
    """A scripted 429 for a bot's next `calls` calls (to `route` only, if set)."""

    calls: int
    retry_after: float
    route: str | None
    global_: bool


class RestApi:
    def __init__(self, world: World, *, max_body: int) -> None:
        self.calls: deque[RestCall] = deque(maxlen=_MAX_RECORDED_CALLS)
        self.sent: list[tuple[str, SentMessage]] = []  # (token, message)
        self.edits: list[tuple[str, SentMessage]] = []
        self.typing: list[tuple[str, int]] = []  # (token, channel id)
        self.rate_limits: dict[str, list[RateLimit]] = {}
        self._world = world
        self._max_body = max_body
        self._nonces: OrderedDict[tuple[str, int, str], int] = OrderedDict()

    def add_routes(self, app: web.Application) -> None:
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/users/@me", self._get_me),
            ("POST", "/users/@me/channels", self._create_dm),
            ("GET", "/users/{user_id}", self._get_user),
            ("GET", "/oauth2/applications/@me", self._get_application),
            ("GET", "/gateway", self._get_gateway),
            ("GET", "/gateway/bot", self._get_gateway_bot),
            ("GET", "/channels/{channel_id}", self._get_channel),
            ("GET", "/channels/{channel_id}/messages", self._get_messages),
            ("POST", "/channels/{channel_id}/messages", self._post_message),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self._get_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._edit_message),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self._delete_message),
            ("POST", "/channels/{channel_id}/typing", self._trigger_typing),
        ]
        for prefix in API_PREFIXES:
            for method, path, handler in routes:
                app.router.add_route(method, prefix + path, handler)
        app.router.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self._file)

    # -- plumbing

    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIXES):
            return await handler(request)
        route = f"{request.method} {_route_path(request)}"
        token = _bot_token(request.headers.get("Authorization"))
        bot = self._world.bots.get(token) if token is not None else None
        response: web.StreamResponse
        try:
            response = self._refusal(request, bot, route) or await _run(request, bot, handler)
        except DiscordError as exc:
            response = _json(exc.body, exc.status)
        except web.HTTPRequestEntityTooLarge:
            response = _json(TOO_LARGE, 413)
        call = RestCall(
            request.method, request.path, route, token, response.status, request.get(_BODY)
        )
        self.calls.append(call)
        self._world.notify()
        return response

    def _refusal(
        self, request: web.Request, bot: FakeBot | None, route: str
    ) -> web.Response | None:
        """What Discord answers before looking at the call: 404/405, 401 or a scripted 429."""
        missing = request.match_info.http_exception
        if missing is not None:
            body = NOT_FOUND if missing.status == 404 else METHOD_NOT_ALLOWED
            return _json(body, missing.status)
        if bot is None:
            return None if route in _NO_AUTH_ROUTES else _json(UNAUTHORIZED, 401)
        plans = self.rate_limits.get(bot.token, [])
        for plan in plans:
            if plan.route is None or plan.route == route:
                plan.calls -= 1
                if plan.calls == 0:
                    plans.remove(plan)
                return _rate_limited(plan)
        return None

    def _channel(self, request: web.Request) -> FakeChannel:
        channel_id = snowflake(request.match_info["channel_id"], "channel_id")
        channel = self._world.channels.get(channel_id)
        if channel is None:
            raise DiscordError(404, UNKNOWN_CHANNEL)
        if not self._world.can_see(request[_BOT], channel):
            raise DiscordError(403, MISSING_ACCESS)
        return channel

    def _message(self, request: web.Request, channel: FakeChannel) -> StoredMessage:
        message_id = snowflake(request.match_info["message_id"], "message_id")
        stored = self._world.message(message_id)
        if stored is None or stored.channel is not channel:
            raise DiscordError(404, UNKNOWN_MESSAGE)
        return stored

    async def _json_body(self, request: web.Request) -> Payload:
        body = _json_object(await request.read())  # read() enforces client_max_size
        request[_BODY] = body
        return body

    async def _message_body(self, request: web.Request) -> tuple[Payload, list[FileData]]:
        """A message's JSON, or a multipart body's payload_json and files[n] parts."""
        if request.content_type != "multipart/form-data":
            return await self._json_body(request), []
        if request.content_length is not None and request.content_length > self._max_body:
            raise DiscordError(413, TOO_LARGE)
        body: Payload = {}
        uploads: dict[int, FileData] = {}
        budget = self._max_body
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise DiscordError(400, error_body(0, "400: Bad Request"))
            data = bytearray()
            while chunk := await part.read_chunk(64 * 1024):
                budget -= len(chunk)
                if budget < 0:
                    raise DiscordError(413, TOO_LARGE)
                data += chunk
            field = _FILES_FIELD.fullmatch(part.name or "")
            if part.name == "payload_json":
                body = _json_object(bytes(data))
            elif field is not None:
                name = part.filename or f"file{field[1]}"
                uploads[int(field[1])] = FileData(
                    name, bytes(data), part.headers.get("Content-Type")
                )
        request[_BODY] = body
        for described in body.get("attachments") or []:  # names and descriptions by index
            if isinstance(described, dict) and str(described.get("id")).isdigit():
                index = int(described["id"])
                if index in uploads:
                    file = uploads[index]
                    uploads[index] = FileData(
                        described.get("filename") or file.filename,
                        file.data,
                        file.content_type,
                        described.get("description"),
                    )
        return body, [typed(uploads[i]) for i in sorted(uploads)]

    # -- users, application, gateway

    async def _get_me(self, request: web.Request) -> web.Response:
        return _json(self_user_payload(request[_BOT].user))

    async def _get_user(self, request: web.Request) -> web.Response:
        user = self._world.users.get(snowflake(request.match_info["user_id"], "user_id"))
        if user is None:
            raise DiscordError(404, UNKNOWN_USER)
        return _json(user_payload(user))

    async def _get_application(self, request: web.Request) -> web.Response:
        bot: FakeBot = request[_BOT]
        guilds = sum(1 for g in self._world.guilds.values() if bot.user.id in g.members)
        return _json(application_payload(bot, guilds))

    async def _get_gateway(self, request: web.Request) -> web.Response:
        return _json({"url": self._world.gateway_url})

    async def _get_gateway_bot(self, request: web.Request) -> web.Response:
        bot: FakeBot = request[_BOT]
        limit = {
            "total": 1000,
            "remaining": max(0, 1000 - bot.identifies),
            "reset_after": 86_400_000,
            "max_concurrency": 1,
        }
        return _json({"url": self._world.gateway_url, "shards": 1, "session_start_limit": limit})

    # -- channels

    async def _create_dm(self, request: web.Request) -> web.Response:
        bot: FakeBot = request[_BOT]
        body = await self._json_body(request)
        user = self._world.users.get(snowflake(body.get("recipient_id"), "recipient_id"))
        if user is None or user is bot.user:
            raise DiscordError(400, INVALID_RECIPIENT)
        return _json(channel_payload(self._world.dm_channel(bot.user, user), [user]))

    async def _get_channel(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        me = request[_BOT].user.id
        others = [self._world.users[i] for i in channel.recipients if i != me]
        return _json(channel_payload(channel, others))

    async def _trigger_typing(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        self.typing.append((request[_BOT].token, channel.id))
        return web.Response(status=204)

    # -- messages

    async def _get_messages(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        limit = snowflake(request.query.get("limit", "50"), "limit")
        if not 1 <= limit <= 100:
            error = form_error("limit", "NUMBER_TYPE_MAX", "int value should be <= 100.")
            raise DiscordError(400, error)
        before = request.query.get("before")
        newest = self._world.channel_messages(
            channel, snowflake(before, "before") if before is not None else math.inf
        )
        return _json([m.payload for m in itertools.islice(newest, limit)])

    async def _get_message(self, request: web.Request) -> web.Response:
        return _json(self._message(request, self._channel(request)).payload)

    async def _post_message(self, request: web.Request) -> web.Response:
        bot: FakeBot = request[_BOT]
        channel = self._channel(request)
        body, files = await self._message_body(request)
        content, embeds, flags = _content(body), _embeds(body), _flags(body)
        nonce = body.get("nonce")
        nonce = str(nonce) if isinstance(nonce, str | int) and not isinstance(nonce, bool) else None
        nonce_key = (bot.token, channel.id, nonce or "")
        if nonce is not None and body.get("enforce_nonce") is True:
            earlier = self._world.message(self._nonces.get(nonce_key, 0))
            if earlier is not None:  # Discord's dedupe: the same message, not a second one
                return _json(earlier.payload)
        if not (content or "").strip() and not (
            embeds or files or body.get("sticker_ids") or body.get("poll")
        ):
            raise DiscordError(400, EMPTY_MESSAGE)
        reference, referenced = self._world.reference(channel, body.get("message_reference"))
        allowed = body.get("allowed_mentions")
        stored = self._world.create_message(
            bot.user,
            channel,
            content or "",
            mention_ids=self._world.bot_mentions(bot, content or "", allowed, referenced),
            files=files,
            embeds=embeds,
            flags=flags,
            tts=body.get("tts") is True,
            nonce=nonce,
            reference=reference,
            referenced=referenced,
        )
        if nonce is not None:
            self._nonces[nonce_key] = stored.id
            while len(self._nonces) > _MAX_NONCES:
                self._nonces.popitem(last=False)
        sent = SentMessage(
            id=stored.id,
            channel_id=channel.id,
            content=content,
            message_reference=body.get("message_reference"),
            flags=flags,
            allowed_mentions=allowed if isinstance(allowed, dict) else None,
            embeds=embeds,
            files=files,
            tts=body.get("tts") is True,
            nonce=nonce,
            body=body,
        )
        self.sent.append((bot.token, sent))
        return _json(stored.payload)

    async def _edit_message(self, request: web.Request) -> web.Response:
        bot: FakeBot = request[_BOT]
        channel = self._channel(request)
        stored = self._message(request, channel)
        body = await self._json_body(request)
        if stored.author is not bot.user:
            raise DiscordError(403, NOT_AUTHOR)
        content = _content(body)
        embeds = _embeds(body) if "embeds" in body else None
        flags = _flags(body) if "flags" in body else None
        self._world.update_message(stored, content=content, embeds=embeds, flags=flags)
        allowed = body.get("allowed_mentions")
        edit = SentMessage(
            id=stored.id,
            channel_id=channel.id,
            content=content,
            message_reference=None,
            flags=stored.payload["flags"],
            allowed_mentions=allowed if isinstance(allowed, dict) else None,
            embeds=stored.payload["embeds"],
            files=[],
            tts=False,
            nonce=None,
            body=body,
        )
        self.edits.append((bot.token, edit))
        return _json(stored.payload)

    async def _delete_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        stored = self._message(request, channel)
        if stored.author is not request[_BOT].user:
            if channel.type == DM:
                raise DiscordError(403, error_body(50003, "Cannot execute action on a DM channel"))
            raise DiscordError(403, error_body(50013, "Missing Permissions"))
        self._world.delete_message(stored)
        return web.Response(status=204)

    async def _file(self, request: web.Request) -> web.Response:
        """An attachment's bytes: the CDN URL that messages' attachments point at."""
        attachment_id = request.match_info["attachment_id"]
        file = self._world.files.get(int(attachment_id)) if attachment_id.isdigit() else None
        if file is None:
            raise web.HTTPNotFound(text="This content is no longer available.")
        content_type = file.content_type or "application/octet-stream"
        return web.Response(body=file.data, content_type=content_type)


async def _run(request: web.Request, bot: FakeBot | None, handler: Handler) -> web.StreamResponse:
    if bot is not None:
        request[_BOT] = bot
    return await handler(request)


def _json(data: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=encode_json(data).encode(),
        status=status,
        headers=headers,
        content_type="application/json",
    )


def _json_object(raw: bytes) -> Payload:
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise DiscordError(400, INVALID_JSON) from None
    if not isinstance(body, dict):
        message = "Only dictionaries may be used in a DictType"
        raise DiscordError(400, form_error("", "DICT_TYPE_CONVERT", message))
    return body


def _bot_token(header: str | None) -> str | None:
    if header is None or not header.startswith("Bot "):
        return None
    return header.removeprefix("Bot ").strip()


def _route_path(request: web.Request) -> str:
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else request.path
    for prefix in API_PREFIXES:
        if path.startswith(prefix + "/"):
            return path.removeprefix(prefix)
    return path


def _rate_limited(limit: RateLimit) -> web.Response:
    """429 as Discord sends it. discord.py retries only when `Via` is there (without it the
    429 is taken for Cloudflare's ban page and raised)."""
    headers = {
        "Retry-After": str(math.ceil(limit.retry_after)),
        "X-RateLimit-Scope": "global" if limit.global_ else "user",
        "Via": "1.1 google",
    }
    if limit.global_:
        headers["X-RateLimit-Global"] = "true"
    else:
        headers.update(
            {
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + limit.retry_after:.3f}",
                "X-RateLimit-Reset-After": f"{limit.retry_after:.3f}",
                "X-RateLimit-Bucket": "clawbusfakebucket",
            }
        )
    body = {
        "message": "You are being rate limited.",
        "retry_after": limit.retry_after,
        "global": limit.global_,
    }
    return _json(body, 429, headers)


def _content(body: Payload) -> str | None:
    content = body.get("content")
    if content is None:
        return None
    if not isinstance(content, str):
        raise DiscordError(
            400, form_error("content", "BASE_TYPE_STRING", "Must be a valid string.")
        )
    if len(content) > MAX_CONTENT:
        raise DiscordError(400, max_length_error("content", MAX_CONTENT))
    return content


def _embeds(body: Payload) -> list[Payload]:
    embeds = body.get("embeds") or []
    if not isinstance(embeds, list) or not all(isinstance(e, dict) for e in embeds):
        raise DiscordError(400, form_error("embeds", "BASE_TYPE_ARRAY", "Must be an array."))
    if len(embeds) > MAX_EMBEDS:
        raise DiscordError(400, max_length_error("embeds", MAX_EMBEDS))
    return embeds


def _flags(body: Payload) -> int:
    flags = body.get("flags") or 0
    if type(flags) is not int or flags < 0:
        raise DiscordError(400, form_error("flags", "NUMBER_TYPE_COERCE", "Must be an integer."))
    return flags
