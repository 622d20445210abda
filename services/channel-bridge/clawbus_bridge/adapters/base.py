"""What a chat app's adapter does, and what it is given.

An adapter connects one bot account (`run`), turning the platform's updates into `Inbound`
messages it hands to the bridge (`ChannelContext.receive`, which returns once the message is
stored: only then may the adapter acknowledge it to the platform), and sends chunks of
replies (`send`) and typing indicators. It raises `ChannelFailure` for what the channel's
status should show; the bridge backs off and reconnects.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from uuid import UUID

from clawbus_core.db import Pool
from clawbus_core.store.channels import Channel

from clawbus_bridge.settings import BridgeSettings

ChatKind = Literal["direct", "group"]


@dataclass(frozen=True)
class MediaRef:
    media_id: UUID
    kind: str  # photo, document, attachment
    file_name: str | None
    mime_type: str | None
    size: int
    text: str | None = None  # a text document's content, as far as it is passed on


@dataclass(frozen=True)
class Inbound:
    """One message from a chat, as every adapter describes it."""

    platform_id: str  # unique per channel: what deduplicates a re-read update
    chat_id: str
    chat_kind: ChatKind
    sender_id: str
    sender_name: str | None
    text: str
    message_id: str | None = None  # the message a reply answers
    thread_id: str | None = None
    # The group a thread belongs to, for its session key (None: `chat_id` is the group).
    group_id: str | None = None
    # For the bot: a DM, a mention, a reply to the bot, or a channel it serves.
    addressed: bool = True
    edited: bool = False
    media: tuple[MediaRef, ...] = ()

    def target(self) -> dict[str, Any]:
        """Where the reply goes (stored with the delivery)."""
        return {"chat_id": self.chat_id, "reply_to": self.message_id, "thread_id": self.thread_id}


class ChannelFailure(Exception):
    """The channel cannot work now: `reason` is shown in its status.

    `permanent` failures (bad credentials) are retried only at the longest backoff, so a
    misconfigured channel does not hammer the platform."""

    def __init__(self, reason: str, *, permanent: bool = False, retry_after_s: float = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.retry_after_s = retry_after_s


def bot_token(credentials: dict[str, Any]) -> str:
    """The bot token of a chat app's credentials (`token`, or GoClaw's `botToken`)."""
    token = credentials.get("token") or credentials.get("botToken")
    if not isinstance(token, str) or not token:
        raise ChannelFailure("credentials have no bot token (`token`)", permanent=True)
    return token


class SendFailure(Exception):
    """A chunk could not be sent. `permanent`: it never will (chat gone, bot blocked)."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


@dataclass
class ChannelContext:
    """What an adapter is given: its channel, credentials, settings and the bridge's hooks."""

    channel: Channel
    credentials: dict[str, Any]
    settings: BridgeSettings
    pool: Pool
    receive: Callable[[Inbound], Awaitable[None]]
    connected: Callable[[str | None], Awaitable[None]]  # the adapter is up, as this account
    extras: dict[str, Any] = field(default_factory=dict)


class Adapter(Protocol):
    limit: int  # characters per message
    # A message that can never become a run (bad text, missing agent): True, the sender gets
    # the error (a webhook caller can fix its request); False, it is logged and skipped (a
    # chat app would deliver it again and again).
    reports_refusals: bool

    async def run(self) -> None:
        """Connect and feed inbound messages until cancelled."""

    async def send(self, target: dict[str, Any], text: str, *, reply: bool, nonce: str) -> str:
        """Send one chunk; the platform's message id."""

    async def typing(self, target: dict[str, Any]) -> None: ...

    async def aclose(self) -> None: ...
