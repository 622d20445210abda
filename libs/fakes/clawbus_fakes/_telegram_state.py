"""The fake Telegram's state: bots, their chats, messages, files and what they did; the
request parameters; the value objects tests see. Internal to `clawbus_fakes.telegram`."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import mimetypes
import re
import struct
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from clawbus_fakes._wire import encode_json

MAX_MESSAGE_LENGTH: Final = 4096
MAX_CAPTION_LENGTH: Final = 1024
MAX_DOWNLOAD_BYTES: Final = 20 * 1024 * 1024  # getFile refuses bigger files
MAX_BODY: Final = 51 * 1024 * 1024  # Telegram takes uploads up to 50 MB
RECORD_LIMIT: Final = 10_000  # per list of recorded calls, messages, actions
MESSAGE_MEMORY: Final = 10_000  # messages per bot kept for replies and edits
TOKEN_RE: Final = re.compile(r"(?P<bot_id>\d{1,20}):[A-Za-z0-9_-]{1,100}")
SECRET_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,256}")
COMMAND_RE: Final = re.compile(r"[a-z0-9_]{1,32}")

CONFLICT_OTHER_POLL: Final = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
CONFLICT_WEBHOOK_ACTIVE: Final = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
CONFLICT_SET_WEBHOOK: Final = "Conflict: terminated by setWebhook request"
NOT_MODIFIED: Final = (
    "message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)

UPDATE_TYPES: Final = frozenset({
    "message", "edited_message", "channel_post", "edited_channel_post", "business_connection",
    "business_message", "edited_business_message", "deleted_business_messages",
    "message_reaction", "message_reaction_count", "inline_query", "chosen_inline_result",
    "callback_query", "shipping_query", "pre_checkout_query", "purchased_paid_media", "poll",
    "poll_answer", "my_chat_member", "chat_member", "chat_join_request", "chat_boost",
    "removed_chat_boost",
})  # fmt: skip
# What a bot gets until it asks otherwise (and after it asks for an empty list).
DEFAULT_ALLOWED: Final = UPDATE_TYPES - {
    "chat_member",
    "message_reaction",
    "message_reaction_count",
}
MESSAGE_UPDATES: Final = frozenset({
    "message", "edited_message", "channel_post", "edited_channel_post", "business_message",
    "edited_business_message",
})  # fmt: skip
CHAT_ACTIONS: Final = frozenset({
    "typing", "upload_photo", "record_video", "upload_video", "record_voice", "upload_voice",
    "upload_document", "choose_sticker", "find_location", "record_video_note",
    "upload_video_note",
})  # fmt: skip
PARSE_MODES: Final = frozenset({"markdownv2", "markdown", "html"})

# How form values (always strings) are read back into the JSON types a method expects.
_JSON_PARAMS: Final = frozenset({
    "reply_parameters", "link_preview_options", "reply_markup", "entities", "caption_entities",
    "allowed_updates", "commands", "scope", "media",
})  # fmt: skip
_INT_PARAMS: Final = frozenset({
    "chat_id", "message_id", "message_thread_id", "reply_to_message_id", "offset", "limit",
    "timeout", "max_connections", "from_chat_id", "duration", "width", "height",
})  # fmt: skip
_BOOL_PARAMS: Final = frozenset({
    "disable_web_page_preview", "disable_notification", "protect_content",
    "allow_sending_without_reply", "drop_pending_updates", "has_spoiler",
    "show_caption_above_media", "disable_content_type_detection", "allow_paid_broadcast",
})  # fmt: skip


# --------------------------------------------------------------------------- value objects


@dataclass(frozen=True)
class FakeUser:
    """A Telegram user as updates carry it in `from`."""

    id: int
    first_name: str
    username: str | None = None
    last_name: str | None = None
    language_code: str | None = None
    is_bot: bool = False

    def to_dict(self) -> dict[str, Any]:
        user: dict[str, Any] = {"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name}
        for key in ("last_name", "username", "language_code"):
            if getattr(self, key) is not None:
                user[key] = getattr(self, key)
        return user


@dataclass(frozen=True)
class FakeChat:
    """A chat; `FakeChat.private(user)` is the private chat with a user (same id)."""

    id: int
    type: Literal["private", "group", "supergroup", "channel"]
    title: str | None = None
    username: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    is_forum: bool = False

    @classmethod
    def private(cls, user: FakeUser) -> FakeChat:
        return cls(user.id, "private", None, user.username, user.first_name, user.last_name)

    def to_dict(self) -> dict[str, Any]:
        chat: dict[str, Any] = {"id": self.id, "type": self.type}
        for key in ("title", "username", "first_name", "last_name"):
            if getattr(self, key) is not None:
                chat[key] = getattr(self, key)
        if self.is_forum:
            chat["is_forum"] = True
        return chat


ALICE: Final = FakeUser(1001, "Alice", username="alice", language_code="en")
TEST_GROUP: Final = FakeChat(-1001234567890, "supergroup", title="Test Group")


@dataclass(frozen=True)
class StoredFile:
    """A file the fake serves through getFile and `/file/bot<token>/<file_path>`."""

    file_id: str
    file_unique_id: str
    file_path: str
    data: bytes
    file_size: int  # as reported; may exceed len(data) to script "file is too big"
    file_name: str | None = None
    mime_type: str | None = None
    source_url: str | None = None  # sent by URL: the fake does not fetch it


@dataclass(frozen=True)
class SentMessage:
    """A message the bot sent (or, in `edits`, edited), with every parameter it passed.

    `text` is the raw text (a caption for media) before entity parsing; `message` is the Message
    the fake answered with; `params` are the request parameters read back into JSON types.
    """

    method: str
    chat_id: int
    message_id: int
    text: str | None
    parse_mode: str | None
    reply_to_message_id: int | None
    message_thread_id: int | None
    link_preview_disabled: bool  # link_preview_options.is_disabled or disable_web_page_preview
    params: dict[str, Any]
    message: dict[str, Any]
    file: bytes | None = None  # sendPhoto/sendDocument: the uploaded (or referenced) content


@dataclass(frozen=True)
class ChatAction:
    chat_id: int
    action: str
    message_thread_id: int | None


@dataclass(frozen=True)
class RecordedCall:
    """One Bot API request as received and answered."""

    token: str
    method: str  # canonical spelling ("sendMessage") when known, else as requested
    params: dict[str, Any]
    files: dict[str, bytes]
    http_method: str
    content_type: str
    status: int


# --------------------------------------------------------------------------- internals


class ApiError(Exception):
    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.code,
            "description": self.description,
        }
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def bad_request(description: str) -> ApiError:
    return ApiError(400, f"Bad Request: {description}")


def token_error(token: str) -> ApiError:
    """What Telegram answers a token it does not know: 401, or 404 if it is not even one."""
    if TOKEN_RE.fullmatch(token):
        return ApiError(401, "Unauthorized")
    return ApiError(404, "Not Found")


def not_found() -> ApiError:
    return ApiError(404, "Not Found")


@dataclass(frozen=True)
class Described:
    """A result Telegram answers with a `description` beside it (setWebhook, deleteWebhook)."""

    result: Any
    description: str


@dataclass(frozen=True)
class Upload:
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class Params:
    """A request's parameters as received (strings from forms, JSON types from JSON bodies)."""

    raw: dict[str, Any]
    files: dict[str, Upload]

    def text(self, name: str) -> str | None:
        value = self.raw.get(name)
        if value is None or isinstance(value, str):
            return value
        return encode_json(value)

    def integer(self, name: str) -> int | None:
        """Like the Bot API: an unreadable integer is as good as none."""
        value = self.raw.get(name)
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,19}\s*", value):
            return int(value)
        return None

    def number(self, name: str) -> float | None:
        value = self.raw.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return float(value)
        return None

    def flag(self, name: str) -> bool:
        return as_bool(self.raw.get(name))

    def json(self, name: str) -> Any:
        value = self.raw.get(name)
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise bad_request(f"can't parse {name.replace('_', ' ')} JSON object") from None
        return value

    def decoded(self) -> dict[str, Any]:
        """Every parameter in its JSON type, for the record."""
        out: dict[str, Any] = {}
        for name, value in self.raw.items():
            if name in _JSON_PARAMS and isinstance(value, str):
                try:
                    out[name] = json.loads(value)
                except ValueError:
                    out[name] = value
            elif name in _INT_PARAMS and self.integer(name) is not None:
                out[name] = self.integer(name)
            elif name in _BOOL_PARAMS:
                out[name] = as_bool(value)
            else:
                out[name] = value
        return out


def as_bool(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return bool(value)


class Poll:
    """A held long poll; `end()` answers it with an error instead of updates."""

    def __init__(self) -> None:
        self.wakeup = asyncio.Event()
        self.error: ApiError | None = None

    def end(self, error: ApiError) -> None:
        self.error = error
        self.wakeup.set()


@dataclass
class Webhook:
    url: str
    secret_token: str | None
    max_connections: int
    ip_address: str | None
    has_custom_certificate: bool
    last_error_date: int | None = None
    last_error_message: str | None = None


@dataclass
class ScriptedError:
    error: ApiError
    calls: int


@dataclass
class BotState:
    token: str
    user: dict[str, Any]
    queue: deque[dict[str, Any]] = field(default_factory=deque)
    allowed: frozenset[str] = DEFAULT_ALLOWED
    poller: Poll | None = None
    webhook: Webhook | None = None
    chats: dict[int, dict[str, Any]] = field(default_factory=dict)
    messages: OrderedDict[tuple[int, int], dict[str, Any]] = field(default_factory=OrderedDict)
    files: dict[str, StoredFile] = field(default_factory=dict)
    sent: deque[SentMessage] = field(default_factory=lambda: deque(maxlen=RECORD_LIMIT))
    edits: deque[SentMessage] = field(default_factory=lambda: deque(maxlen=RECORD_LIMIT))
    actions: deque[ChatAction] = field(default_factory=lambda: deque(maxlen=RECORD_LIMIT))
    commands: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    scripted: dict[str, deque[ScriptedError]] = field(default_factory=dict)
    last_update_id: int = 0
    last_message_id: int = 0
    last_file_number: int = 0
    poll_count: int = 0
    conflicts: int = 0
    dropped_updates: int = 0

    @property
    def id(self) -> int:
        return int(self.user["id"])

    def next_message_id(self) -> int:
        self.last_message_id += 1
        return self.last_message_id

    def remember(self, message: dict[str, Any]) -> None:
        key = (int(message["chat"]["id"]), int(message["message_id"]))
        self.messages[key] = message
        self.messages.move_to_end(key)
        while len(self.messages) > MESSAGE_MEMORY:
            self.messages.popitem(last=False)
        self.chats.setdefault(key[0], message["chat"])

    def confirm(self, offset: int) -> None:
        if offset > 0:
            while self.queue and self.queue[0]["update_id"] < offset:
                self.queue.popleft()
        elif offset < 0:
            while len(self.queue) > -offset:
                self.queue.popleft()

    def store_file(
        self,
        data: bytes,
        kind: Literal["photos", "documents"],
        *,
        file_name: str | None = None,
        mime_type: str | None = None,
        file_size: int | None = None,
        source_url: str | None = None,
    ) -> StoredFile:
        """Keep a file for this bot (file ids belong to one bot, as on Telegram)."""
        self.last_file_number += 1
        number = self.last_file_number
        digest = hashlib.blake2b(f"{self.token}/{number}".encode(), digest_size=24).digest()
        encoded = base64.urlsafe_b64encode(digest).decode().rstrip("=")
        suffix = ".jpg" if kind == "photos" else ""
        if file_name and "." in file_name:
            suffix = "." + file_name.rsplit(".", 1)[1].lower()
        if mime_type is None and file_name:
            mime_type = mimetypes.guess_type(file_name)[0] or "application/octet-stream"
        stored = StoredFile(
            file_id=("AgACAgIAAxkBAAI" if kind == "photos" else "BQACAgIAAxkBAAI") + encoded,
            file_unique_id="AQAD" + encoded[:12],
            file_path=f"{kind}/file_{number}{suffix}",
            data=bytes(data),
            file_size=len(data) if file_size is None else file_size,
            file_name=file_name,
            mime_type=mime_type,
            source_url=source_url,
        )
        self.files[stored.file_id] = stored
        return stored

    def take_scripted(self, method: str) -> ApiError | None:
        queue = self.scripted.get(method.lower())
        if not queue:
            return None
        scripted = queue[0]
        scripted.calls -= 1
        if scripted.calls <= 0:
            queue.popleft()
        error = scripted.error  # a fresh exception per answer
        return ApiError(error.code, error.description, error.parameters)


def now() -> int:
    return int(time.time())


def message_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The message in an update (or the message itself)."""
    if "update_id" in obj:
        for kind in MESSAGE_UPDATES:
            if kind in obj:
                return dict(obj[kind])
        raise ValueError("the update carries no message")
    return dict(obj)


def without_reply(message: Mapping[str, Any]) -> dict[str, Any]:
    """A message as nested in `reply_to_message` (Telegram nests one level only)."""
    return {k: v for k, v in message.items() if k != "reply_to_message"}


def photo_size(stored: StoredFile) -> dict[str, Any]:
    """The PhotoSize of a stored photo: a PNG's size from its header, else 640x480."""
    width, height = 640, 480
    if stored.data[:8] == b"\x89PNG\r\n\x1a\n" and len(stored.data) >= 24:
        width, height = struct.unpack(">II", stored.data[16:24])
    return {
        "file_id": stored.file_id,
        "file_unique_id": stored.file_unique_id,
        "file_size": stored.file_size,
        "width": width,
        "height": height,
    }


def document_of(stored: StoredFile) -> dict[str, Any]:
    document: dict[str, Any] = {
        "file_id": stored.file_id,
        "file_unique_id": stored.file_unique_id,
        "file_size": stored.file_size,
    }
    if stored.file_name:
        document["file_name"] = stored.file_name
    if stored.mime_type:
        document["mime_type"] = stored.mime_type
    return document
