"""Discord's wire vocabulary for the fake server: the world it models and the JSON it speaks.

Payload builders are pure functions of the model objects; the server owns state and IO.
Shapes follow Discord API v10 as discord.py 2.7 parses it (required keys included, the rest as
Discord sends them for a bot without special features).
"""

from __future__ import annotations

import datetime as dt
import mimetypes
import re
import time
from dataclasses import dataclass, field
from typing import Any, Final

Payload = dict[str, Any]

API_VERSIONS: Final = ("9", "10")
DISCORD_EPOCH_MS: Final = 1_420_070_400_000
MAX_CONTENT: Final = 2000  # characters (code points) per message
MAX_EMBEDS: Final = 10
MAX_GATEWAY_SEND: Final = 4096  # bytes per client payload; more closes with DECODE_ERROR

# Gateway opcodes.
DISPATCH: Final = 0
HEARTBEAT: Final = 1
IDENTIFY: Final = 2
PRESENCE_UPDATE: Final = 3
VOICE_STATE_UPDATE: Final = 4
RESUME: Final = 6
RECONNECT: Final = 7
REQUEST_GUILD_MEMBERS: Final = 8
INVALID_SESSION: Final = 9
HELLO: Final = 10
HEARTBEAT_ACK: Final = 11
REQUEST_SOUNDBOARD_SOUNDS: Final = 31

# Gateway close codes and Discord's reasons for them.
CLOSE_REASONS: Final = {
    4000: "Unknown error.",
    4001: "Unknown opcode.",
    4002: "Decode error.",
    4003: "Not authenticated.",
    4004: "Authentication failed.",
    4005: "Already authenticated.",
    4007: "Invalid seq.",
    4008: "Rate limited.",
    4009: "Session timed out.",
    4010: "Invalid shard.",
    4012: "Invalid API version.",
    4013: "Invalid intent(s).",
    4014: "Disallowed intent(s).",
}

# Gateway intents (bits of IDENTIFY's `intents`).
GUILDS: Final = 1 << 0
GUILD_MEMBERS: Final = 1 << 1
GUILD_PRESENCES: Final = 1 << 8
GUILD_MESSAGES: Final = 1 << 9
DIRECT_MESSAGES: Final = 1 << 12
MESSAGE_CONTENT: Final = 1 << 15
PRIVILEGED_INTENTS: Final = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT
ALL_INTENTS: Final = (1 << 26) - 1
# Application flags telling a client which privileged intents the app may ask for.
_INTENT_APP_FLAGS: Final = {
    GUILD_PRESENCES: 1 << 12,
    GUILD_MEMBERS: 1 << 14,
    MESSAGE_CONTENT: 1 << 18,
}

# Channel types.
GUILD_TEXT: Final = 0
DM: Final = 1
PUBLIC_THREAD: Final = 11
PRIVATE_THREAD: Final = 12
THREAD_TYPES: Final = frozenset({10, PUBLIC_THREAD, PRIVATE_THREAD})

# Message types.
DEFAULT_MESSAGE: Final = 0
REPLY_MESSAGE: Final = 19

# @everyone may view, send (also in threads), embed, attach, react and read history.
EVERYONE_PERMISSIONS: Final = str(
    (1 << 6) | (1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 38)
)

USER_MENTION_RE: Final = re.compile(r"<@!?(\d+)>")


# --------------------------------------------------------------------------- the modelled world


@dataclass(eq=False)
class FakeUser:
    """A Discord account: a person or a bot's user."""

    id: int
    username: str
    global_name: str | None = None
    bot: bool = False

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"


@dataclass(eq=False)
class FakeBot:
    """A bot application: its token, its user, and the privileged intents it may ask for."""

    token: str
    user: FakeUser
    privileged_intents: int = PRIVILEGED_INTENTS
    identifies: int = 0  # IDENTIFYs accepted for this token
    resumes: int = 0  # RESUMEs accepted for this token


@dataclass(eq=False)
class FakeChannel:
    """A guild text channel, a thread (`parent_id` set) or a DM channel (`recipients` set)."""

    id: int
    type: int
    name: str | None = None
    guild_id: int | None = None
    parent_id: int | None = None
    position: int = 0
    topic: str | None = None
    owner_id: int | None = None  # threads
    recipients: tuple[int, ...] = ()  # DM: the two user ids
    created_at: str = ""
    last_message_id: int | None = None

    @property
    def is_thread(self) -> bool:
        return self.type in THREAD_TYPES


@dataclass(eq=False)
class FakeGuild:
    """A guild with its channels (threads included) and members (user id -> joined_at)."""

    id: int
    name: str
    owner_id: int
    channels: list[FakeChannel] = field(default_factory=list)
    members: dict[int, str] = field(default_factory=dict)

    def channel(self, name: str) -> FakeChannel:
        """The channel or thread called `name`."""
        for channel in self.channels:
            if channel.name == name:
                return channel
        raise KeyError(f"guild {self.name!r} has no channel {name!r}")


@dataclass(frozen=True)
class FileData:
    """A file: an attachment a user posts, or one a bot uploaded."""

    filename: str
    data: bytes
    content_type: str | None = None
    description: str | None = None


def typed(file: FileData) -> FileData:
    """The file with a content type: Discord names an upload's type from its file name."""
    if file.content_type not in (None, "application/octet-stream"):
        return file
    guessed, _ = mimetypes.guess_type(file.filename)
    return FileData(file.filename, file.data, guessed, file.description)


@dataclass(frozen=True)
class SentMessage:
    """A message a bot posted, with the parameters it posted it with (`body` is them all)."""

    id: int
    channel_id: int
    content: str | None
    message_reference: Payload | None
    flags: int
    allowed_mentions: Payload | None
    embeds: list[Payload]
    files: list[FileData]
    tts: bool
    nonce: str | None
    body: Payload


@dataclass(frozen=True)
class RestCall:
    """A REST call as answered: `route` is e.g. "POST /channels/{channel_id}/messages"."""

    method: str
    path: str
    route: str
    token: str | None
    status: int
    json: Any  # the JSON body (a multipart call's payload_json), None without one


# --------------------------------------------------------------------------- ids and times


class Snowflakes:
    """Discord ids: milliseconds since 2015 in the top bits, so discord.py's created_at works."""

    def __init__(self) -> None:
        self._last_ms = 0
        self._increment = 0

    def next(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        if ms <= self._last_ms:
            ms = self._last_ms
            self._increment += 1
            if self._increment >= 4096:
                ms, self._increment = ms + 1, 0
        else:
            self._increment = 0
        self._last_ms = ms
        return (ms << 22) | (1 << 17) | self._increment


def timestamp(snowflake: int | None = None) -> str:
    """ISO 8601 as Discord writes it; a snowflake's own time when one is given."""
    if snowflake is None:
        moment = dt.datetime.now(dt.UTC)
    else:
        ms = (snowflake >> 22) + DISCORD_EPOCH_MS
        moment = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return moment.isoformat(timespec="microseconds")


def app_flags(privileged_intents: int) -> int:
    return sum(flag for intent, flag in _INTENT_APP_FLAGS.items() if privileged_intents & intent)


# --------------------------------------------------------------------------- error bodies


class DiscordError(Exception):
    """A REST error, answered with Discord's status and body for it."""

    def __init__(self, status: int, body: Payload) -> None:
        super().__init__(body.get("message"))
        self.status = status
        self.body = body


def error_body(code: int, message: str) -> Payload:
    return {"message": message, "code": code}


def form_error(path: str, code: str, message: str) -> Payload:
    """Discord's 50035 "Invalid Form Body", naming the field (dotted for nesting; "" the body)."""
    errors: Payload = {"_errors": [{"code": code, "message": message}]}
    for key in reversed(path.split(".") if path else []):
        errors = {key: errors}
    return {"code": 50035, "errors": errors, "message": "Invalid Form Body"}


UNAUTHORIZED: Final = error_body(0, "401: Unauthorized")
NOT_FOUND: Final = error_body(0, "404: Not Found")
METHOD_NOT_ALLOWED: Final = error_body(0, "405: Method Not Allowed")
UNKNOWN_CHANNEL: Final = error_body(10003, "Unknown Channel")
UNKNOWN_MESSAGE: Final = error_body(10008, "Unknown Message")
UNKNOWN_USER: Final = error_body(10013, "Unknown User")
MISSING_ACCESS: Final = error_body(50001, "Missing Access")
NOT_AUTHOR: Final = error_body(50005, "Cannot edit a message authored by another user")
EMPTY_MESSAGE: Final = error_body(50006, "Cannot send an empty message")
INVALID_RECIPIENT: Final = error_body(50033, "Invalid Recipient(s)")
INVALID_JSON: Final = error_body(50109, "The request body contains invalid JSON.")
TOO_LARGE: Final = error_body(40005, "Request entity too large")


def max_length_error(path: str, limit: int) -> Payload:
    return form_error(path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")


def snowflake(value: object, path: str) -> int:
    """An id from a path or body field; anything else is Discord's NUMBER_TYPE_COERCE error."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    message = f'Value "{value}" is not snowflake.'
    raise DiscordError(400, form_error(path, "NUMBER_TYPE_COERCE", message))


# --------------------------------------------------------------------------- payloads


def user_payload(user: FakeUser) -> Payload:
    return {
        "id": str(user.id),
        "username": user.username,
        "discriminator": "0",
        "global_name": user.global_name,
        "avatar": None,
        "avatar_decoration_data": None,
        "banner": None,
        "accent_color": None,
        "public_flags": 0,
        "bot": user.bot,
    }


def self_user_payload(user: FakeUser) -> Payload:
    """`GET /users/@me` and READY's `user`: the account's own view of itself."""
    return {
        **user_payload(user),
        "verified": True,
        "mfa_enabled": False,
        "locale": "en-US",
        "email": None,
        "flags": 0,
        "premium_type": 0,
    }


def member_payload(user: FakeUser | None, joined_at: str) -> Payload:
    """A guild member; without `user` as MESSAGE_CREATE's `member` and `mentions[].member`."""
    member: Payload = {
        "nick": None,
        "avatar": None,
        "banner": None,
        "roles": [],
        "joined_at": joined_at,
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "flags": 0,
        "pending": False,
        "communication_disabled_until": None,
    }
    if user is not None:
        member["user"] = user_payload(user)
    return member


def application_payload(bot: FakeBot, guild_count: int) -> Payload:
    """`GET /oauth2/applications/@me`, which discord.py's login reads."""
    return {
        "id": str(bot.user.id),
        "name": bot.user.username,
        "icon": None,
        "description": "",
        "summary": "",
        "type": None,
        "bot_public": True,
        "bot_require_code_grant": False,
        "verify_key": "0" * 64,
        "flags": app_flags(bot.privileged_intents),
        "owner": user_payload(bot.user),
        "team": None,
        "bot": user_payload(bot.user),
        "redirect_uris": [],
        "interactions_endpoint_url": None,
        "approximate_guild_count": guild_count,
        "tags": [],
        "integration_types_config": {"0": {}},
    }


def channel_payload(channel: FakeChannel, others: list[FakeUser] | None = None) -> Payload:
    """A channel; a DM lists the recipients other than the viewer (`others`)."""
    if channel.type == DM:
        return {
            "id": str(channel.id),
            "type": DM,
            "last_message_id": _opt_id(channel.last_message_id),
            "recipients": [user_payload(u) for u in others or []],
            "flags": 0,
        }
    payload: Payload = {
        "id": str(channel.id),
        "type": channel.type,
        "guild_id": str(channel.guild_id),
        "name": channel.name,
        "parent_id": _opt_id(channel.parent_id),
        "last_message_id": _opt_id(channel.last_message_id),
        "rate_limit_per_user": 0,
        "flags": 0,
    }
    if channel.is_thread:
        payload.update(
            owner_id=str(channel.owner_id),
            message_count=0,
            member_count=1,
            total_message_sent=0,
            thread_metadata={
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": channel.created_at,
                "locked": False,
                "create_timestamp": channel.created_at,
            },
        )
        return payload
    payload.update(
        position=channel.position,
        permission_overwrites=[],
        nsfw=False,
        topic=channel.topic,
        default_auto_archive_duration=1440,
    )
    return payload


def role_everyone(guild_id: int) -> Payload:
    return {
        "id": str(guild_id),
        "name": "@everyone",
        "permissions": EVERYONE_PERMISSIONS,
        "position": 0,
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "managed": False,
        "mentionable": False,
        "icon": None,
        "unicode_emoji": None,
        "flags": 0,
    }


def guild_create_payload(guild: FakeGuild, members: list[Payload]) -> Payload:
    """GUILD_CREATE for a bot: the guild with its channels, active threads and `members`."""
    text = [c for c in guild.channels if not c.is_thread]
    return {
        "id": str(guild.id),
        "name": guild.name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "owner_id": str(guild.owner_id),
        "region": "deprecated",
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "premium_progress_bar_enabled": False,
        "preferred_locale": "en-US",
        "system_channel_id": str(text[0].id) if text else None,
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "safety_alerts_channel_id": None,
        "vanity_url_code": None,
        "max_members": 500_000,
        "max_video_channel_users": 25,
        "application_id": None,
        "widget_enabled": False,
        "features": [],
        "roles": [role_everyone(guild.id)],
        "emojis": [],
        "stickers": [],
        "joined_at": timestamp(),
        "large": False,
        "lazy": True,
        "unavailable": False,
        "member_count": len(guild.members),
        "members": members,
        "channels": [channel_payload(c) for c in text],
        "threads": [channel_payload(c) for c in guild.channels if c.is_thread],
        "voice_states": [],
        "presences": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
    }


def attachment_payload(attachment_id: int, file: FileData, url: str) -> Payload:
    return {
        "id": str(attachment_id),
        "filename": file.filename,
        "size": len(file.data),
        "url": url,
        "proxy_url": url,
        "content_type": file.content_type,
        "description": file.description,
        "flags": 0,
    }


def mentioned_ids(content: str) -> list[int]:
    """User ids mentioned in `content` (`<@id>` or `<@!id>`), first mention first, once each."""
    return list(dict.fromkeys(int(m) for m in USER_MENTION_RE.findall(content)))


def _opt_id(value: int | None) -> str | None:
    return None if value is None else str(value)
